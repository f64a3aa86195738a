"""Versioned schema: migrations install on an empty database and on top of a portal's existing
`leads` table (keeping its rows and columns), and re-applying them changes nothing."""

from sqlalchemy import create_engine, inspect, text

from reconcile_pipeline.db.migrate import current_revision, head_revision, upgrade

RECONCILE_TABLES = {
    "tracked_columns",
    "sync_state",
    "airtable_snapshots",
    "conflicts",
    "change_history",
    "quarantine",
    "push_results",
    "runs",
    "high_water_marks",
    "pull_coverage",
    "airtable_schemas",
    "api_usage",
    "alembic_version",
}


def _schema_fingerprint(engine) -> dict:
    """Tables, columns, indexes and triggers: what a second upgrade must leave identical."""
    with engine.connect() as conn:
        columns = conn.execute(
            text(
                "SELECT table_schema, table_name, column_name, data_type "
                "FROM information_schema.columns "
                "WHERE table_schema IN ('public', 'reconcile') ORDER BY 1, 2, 3"
            )
        ).all()
        indexes = conn.execute(
            text(
                "SELECT schemaname, indexname, indexdef FROM pg_indexes "
                "WHERE schemaname IN ('public', 'reconcile') ORDER BY 1, 2"
            )
        ).all()
        triggers = conn.execute(
            text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1")
        ).all()
        tracked = conn.execute(text("SELECT * FROM reconcile.tracked_columns ORDER BY 1, 2")).all()
    return {"columns": columns, "indexes": indexes, "triggers": triggers, "tracked": tracked}


def test_upgrade_on_an_empty_database_creates_leads_and_bookkeeping(empty_database_url):
    engine = create_engine(empty_database_url)
    assert current_revision(engine) is None

    assert upgrade(engine) == head_revision()

    inspector = inspect(engine)
    assert set(inspector.get_table_names(schema="reconcile")) == RECONCILE_TABLES
    lead_columns = {c["name"] for c in inspector.get_columns("leads", schema="public")}
    assert {
        "airtable_record_id",
        "claimed_by",
        "claimed_at",
        "notes",
        "processing_status",
        "campaign_id",
        "portal_priority",
        "last_viewed_at",
    } <= lead_columns
    # The portal's namespace holds only the portal's table: our version table is in `reconcile`.
    assert inspector.get_table_names(schema="public") == ["leads"]
    engine.dispose()


def test_upgrade_twice_changes_nothing(empty_database_url):
    engine = create_engine(empty_database_url)
    upgrade(engine)
    before = _schema_fingerprint(engine)

    assert upgrade(engine) == head_revision()

    assert _schema_fingerprint(engine) == before
    engine.dispose()


def test_upgrade_installs_on_top_of_an_existing_portal_leads_table(empty_database_url):
    """A real portal's table has its own extra columns and rows; both survive untouched."""
    engine = create_engine(empty_database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE public.leads (id bigserial PRIMARY KEY, "
                "airtable_record_id text UNIQUE, email text, claimed_by text, claimed_at "
                "timestamptz, notes text, processing_status text, campaign_id text, "
                "favourite_colour text)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO public.leads (airtable_record_id, email, claimed_by, "
                "favourite_colour) VALUES ('recAAAAAAAAAAAAAA', 'a@example.com', 'ana', 'teal')"
            )
        )

    upgrade(engine)

    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT airtable_record_id, email, claimed_by, favourite_colour FROM leads")
        ).all()
        trigger = conn.execute(
            text(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'public.leads'::regclass "
                "AND NOT tgisinternal"
            )
        ).scalar_one()
    assert rows == [("recAAAAAAAAAAAAAA", "a@example.com", "ana", "teal")]
    assert trigger == "reconcile_capture_portal_change"
    # Migrations never add the demo portal's campaign link (demo/portal_schema.py does, for
    # the demo project only).
    columns = {c["name"] for c in inspect(engine).get_columns("leads", schema="public")}
    assert "campaign_ref" not in columns
    engine.dispose()


def _upgrade_to(engine, revision: str, legacy_client: str | None = None) -> None:
    from alembic import command

    from reconcile_pipeline.db.migrate import _alembic_config

    config = _alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        if legacy_client is not None:
            config.attributes["legacy_client"] = legacy_client
        command.upgrade(config, revision)


def _single_base_rows(engine) -> None:
    """What a single-base deployment at revision 0004 holds: a captured edit (migration 0001
    watches claimed_by), a mark."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO public.leads (airtable_record_id, claimed_by) "
                "VALUES ('recOld00000000001', 'ann');"
                "INSERT INTO reconcile.high_water_marks (table_key, mark) VALUES ('leads', now())"
            )
        )


def test_0005_carries_a_single_base_deployment_over_to_its_client(empty_database_url):
    engine = create_engine(empty_database_url)
    _upgrade_to(engine, "0004_trust")
    _single_base_rows(engine)

    _upgrade_to(engine, "head", legacy_client="acme")

    with engine.begin() as conn:
        assert conn.execute(
            text("SELECT client, table_key, portal_change_counter FROM reconcile.sync_state")
        ).all() == [("acme", "leads", 1)]
        assert conn.execute(
            text("SELECT client, table_key FROM reconcile.high_water_marks")
        ).all() == [("acme", "leads")]
        # The trigger was rewritten for the client: an edit made right after the upgrade (before
        # any `reconcile db upgrade` reinstalls triggers) is still captured, under the client.
        conn.execute(
            text("UPDATE public.leads SET claimed_by = 'bo' WHERE airtable_record_id = :r"),
            {"r": "recOld00000000001"},
        )
        assert conn.execute(
            text("SELECT client, portal_change_counter FROM reconcile.sync_state")
        ).all() == [("acme", 2)]


def test_0005_refuses_to_guess_the_client_of_existing_rows(empty_database_url):
    import pytest

    engine = create_engine(empty_database_url)
    _upgrade_to(engine, "0004_trust")
    _single_base_rows(engine)

    with pytest.raises(RuntimeError, match="legacy_client"):
        _upgrade_to(engine, "head")
    assert current_revision(engine) == "0004_trust"  # nothing half-applied


def test_0005_downgrades_while_one_client_is_held(empty_database_url):
    from alembic import command

    from reconcile_pipeline.db.migrate import _alembic_config

    engine = create_engine(empty_database_url)
    _upgrade_to(engine, "0004_trust")
    _single_base_rows(engine)
    before = _schema_fingerprint(engine)
    _upgrade_to(engine, "head", legacy_client="acme")
    config = _alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0004_trust")

    after = _schema_fingerprint(engine)
    assert after["columns"] == before["columns"]
    assert after["indexes"] == before["indexes"]
    assert after["triggers"] == before["triggers"]


# ----- the shortcut every command takes: a database at head is left alone, without Alembic --------


def test_the_head_read_from_the_migration_files_is_alembic_s():
    from reconcile_pipeline.db.migrate import shipped_head

    assert shipped_head() == head_revision()


def _versions(tmp_path, monkeypatch, files: dict[str, str]):
    from reconcile_pipeline.db import migrate

    versions = tmp_path / "migrations" / "versions"
    versions.mkdir(parents=True)
    for name, body in files.items():
        (versions / name).write_text(body)
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", tmp_path / "migrations")
    migrate.shipped_head.cache_clear()
    try:
        return migrate.shipped_head()
    finally:
        migrate.shipped_head.cache_clear()


def test_the_files_head_is_none_unless_they_are_one_plain_chain(tmp_path, monkeypatch):
    a = 'revision = "a"\ndown_revision = None\n'
    b = 'revision: str = "b"\ndown_revision: str | None = "a"  # after a\n'
    assert _versions(tmp_path / "chain", monkeypatch, {"a.py": a, "b.py": b}) == "b"
    # Two heads (a branch), a merge (a tuple), a computed value: only Alembic can say.
    c = 'revision = "c"\ndown_revision = "a"\n'
    assert _versions(tmp_path / "branch", monkeypatch, {"a.py": a, "b.py": b, "c.py": c}) is None
    merge = 'revision = "m"\ndown_revision = ("b", "c")\n'
    assert (
        _versions(tmp_path / "merge", monkeypatch, {"a.py": a, "b.py": b, "c.py": c, "m.py": merge})
        is None
    )
    computed = 'revision = "b"\ndown_revision = PREVIOUS\n'
    assert _versions(tmp_path / "computed", monkeypatch, {"a.py": a, "b.py": computed}) is None
    missing_parent = 'revision = "b"\ndown_revision = "z"\n'
    assert _versions(tmp_path / "orphan", monkeypatch, {"a.py": a, "b.py": missing_parent}) is None


def test_a_database_at_head_is_not_handed_to_alembic(database_url, monkeypatch):
    from reconcile_pipeline.db import migrate

    def no_alembic(*args, **kwargs):
        raise AssertionError("Alembic's upgrade ran on a database at head")

    monkeypatch.setattr(migrate, "upgrade", no_alembic)

    assert migrate.upgrade_if_behind(database_url) == head_revision()


def test_a_database_one_revision_behind_is_upgraded(empty_database_url):
    from reconcile_pipeline.db.migrate import upgrade_if_behind

    engine = create_engine(empty_database_url)
    _upgrade_to(engine, "0005_clients", legacy_client="acme")
    assert current_revision(engine) == "0005_clients" != head_revision()

    assert upgrade_if_behind(empty_database_url) == head_revision()

    assert current_revision(engine) == head_revision()
    assert set(inspect(engine).get_table_names(schema="reconcile")) == RECONCILE_TABLES
    engine.dispose()


def test_a_database_never_migrated_is_upgraded(empty_database_url):
    from reconcile_pipeline.db.migrate import upgrade_if_behind

    assert upgrade_if_behind(empty_database_url) == head_revision()

    engine = create_engine(empty_database_url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_a_database_behind_is_still_refused_when_its_rows_client_is_unknown(
    empty_database_url, monkeypatch
):
    """0004 with rows to carry over and no project file to name their client: refused, as
    `upgrade` refuses it, nothing half-applied."""
    import pytest

    from reconcile_pipeline.db import migrate

    engine = create_engine(empty_database_url)
    _upgrade_to(engine, "0004_trust")
    _single_base_rows(engine)
    monkeypatch.setattr(migrate, "legacy_client", lambda: None)

    with pytest.raises(RuntimeError, match="legacy_client"):
        migrate.upgrade_if_behind(empty_database_url)
    assert current_revision(engine) == "0004_trust"
    engine.dispose()


def test_preparing_the_environment_on_a_database_at_head_does_not_load_alembic(
    database_url, tmp_path
):
    """What every `reconcile` command runs first: a database at head costs one query."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "RECONCILE_HOME": str(tmp_path / "home"),
        "PYTHONWARNINGS": "ignore",
    }
    env.pop("DAGSTER_HOME", None)
    env.pop("DAGSTER_POSTGRES_URL", None)
    code = (
        "import sys\n"
        "from reconcile_pipeline.instance import prepare_environment\n"
        "prepare_environment(start_embedded=False)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_reconcile_db_upgrade_runs_alembic_s_upgrade_on_a_database_at_head(
    database_url, tmp_path, monkeypatch
):
    """`reconcile db upgrade` does the full upgrade whatever the version table says."""
    from reconcile_pipeline import cli
    from reconcile_pipeline.db import migrate

    calls = []
    real = migrate.upgrade

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(migrate, "upgrade", counted)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("RECONCILE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    for name in ("DAGSTER_POSTGRES_URL", "DAGSTER_EVENT_BATCH_SIZE", "RECONCILE_CONFIG"):
        monkeypatch.setenv(name, "")  # restored (unset) after the test: the command sets some
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)

    assert cli.main(["db", "upgrade"]) == 0

    assert len(calls) == 1
