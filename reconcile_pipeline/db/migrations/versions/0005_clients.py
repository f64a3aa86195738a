"""Many clients in one database: every row of the bookkeeping is keyed by client and table.

Revision ID: 0005_clients
Revises: 0004_trust
Create Date: 2026-11-30

With two bases sharing one database, the bookkeeping keyed by table alone mixed them (base A's
delete sweep soft-deleted base B's leads). Every bookkeeping table gains `client` (the project
file's client key: one Airtable base) and every key, unique index and lookup index leads with it.

Existing rows are carried over to the *legacy client*: the client of the single-base deployment
being upgraded. `reconcile db upgrade` names it (the project file's first client); run through
Alembic directly, set it with `-x legacy_client=<key>`. A database with no bookkeeping rows needs
none.

The capture function now takes (client, table key, key column); each client's trigger on a
table carries its client, and on a table several clients share, a WHEN condition on the client
column picks that client's rows (config/install.py writes them). Existing triggers are rewritten
here for the legacy client, so no edit is missed between this migration and the install.
"""

from alembic import context, op
from sqlalchemy import text

revision = "0005_clients"
down_revision = "0004_trust"
branch_labels = None
depends_on = None

BOOKKEEPING = (
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
)

KEYS = r"""
ALTER TABLE reconcile.tracked_columns DROP CONSTRAINT tracked_columns_pkey;
ALTER TABLE reconcile.tracked_columns ADD PRIMARY KEY (client, table_key, column_name);
ALTER TABLE reconcile.sync_state DROP CONSTRAINT sync_state_pkey;
ALTER TABLE reconcile.sync_state ADD PRIMARY KEY (client, table_key, airtable_record_id);
ALTER TABLE reconcile.high_water_marks DROP CONSTRAINT high_water_marks_pkey;
ALTER TABLE reconcile.high_water_marks ADD PRIMARY KEY (client, table_key);

DROP INDEX reconcile.sync_state_dirty_idx;
CREATE INDEX sync_state_dirty_idx ON reconcile.sync_state (client, table_key)
    WHERE portal_change_counter > pushed_counter;
DROP INDEX reconcile.sync_state_owned_write_idx;
CREATE INDEX sync_state_owned_write_idx ON reconcile.sync_state (client, table_key)
    WHERE owned_write_counter > owned_reverted_counter;
DROP INDEX reconcile.airtable_snapshots_record_idx;
CREATE INDEX airtable_snapshots_record_idx
    ON reconcile.airtable_snapshots (client, table_key, airtable_record_id, pulled_at DESC);
DROP INDEX reconcile.conflicts_open_idx;
CREATE INDEX conflicts_open_idx ON reconcile.conflicts (client, table_key, status, detected_at);
DROP INDEX reconcile.change_history_record_idx;
CREATE INDEX change_history_record_idx
    ON reconcile.change_history (client, table_key, airtable_record_id, changed_at);
DROP INDEX reconcile.quarantine_open_uidx;
CREATE UNIQUE INDEX quarantine_open_uidx ON reconcile.quarantine
    (client, table_key, airtable_record_id, direction, field) WHERE released_at IS NULL;
DROP INDEX reconcile.push_results_record_idx;
CREATE INDEX push_results_record_idx
    ON reconcile.push_results (client, table_key, airtable_record_id, pushed_at);
DROP INDEX reconcile.runs_stage_idx;
CREATE INDEX runs_stage_idx ON reconcile.runs (client, table_key, stage, finished_at DESC);
DROP INDEX reconcile.pull_coverage_committed_idx;
CREATE INDEX pull_coverage_committed_idx
    ON reconcile.pull_coverage (client, table_key, pull_end) WHERE committed_at IS NOT NULL;
"""

KEYS_0004 = """
CREATE INDEX sync_state_dirty_idx ON reconcile.sync_state (table_key)
    WHERE portal_change_counter > pushed_counter;
CREATE INDEX sync_state_owned_write_idx ON reconcile.sync_state (table_key)
    WHERE owned_write_counter > owned_reverted_counter;
CREATE INDEX airtable_snapshots_record_idx
    ON reconcile.airtable_snapshots (table_key, airtable_record_id, pulled_at DESC);
CREATE INDEX conflicts_open_idx ON reconcile.conflicts (table_key, status, detected_at);
CREATE INDEX change_history_record_idx
    ON reconcile.change_history (table_key, airtable_record_id, changed_at);
CREATE UNIQUE INDEX quarantine_open_uidx ON reconcile.quarantine
    (table_key, airtable_record_id, direction, field) WHERE released_at IS NULL;
CREATE INDEX push_results_record_idx
    ON reconcile.push_results (table_key, airtable_record_id, pushed_at);
CREATE INDEX runs_stage_idx ON reconcile.runs (table_key, stage, finished_at DESC);
CREATE INDEX pull_coverage_committed_idx
    ON reconcile.pull_coverage (table_key, pull_end) WHERE committed_at IS NOT NULL;
"""

CAPTURE_FUNCTION = r"""
CREATE OR REPLACE FUNCTION reconcile.capture_portal_change() RETURNS trigger
LANGUAGE plpgsql AS $fn$
-- Bumps the per-record portal change counter when a portal-owned column changes, and the
-- owned-write counter when the portal writes an Airtable-owned column, whatever code path wrote
-- it, unless the transaction is tagged as the reconciler's own (SET LOCAL reconcile.origin =
-- 'reconciler'). Records the transaction, so an echo can be told from a genuine edit.
-- TG_ARGV[0] is the client, TG_ARGV[1] the table key, TG_ARGV[2] the column holding the
-- Airtable record id. On a table several clients share, each client's trigger has a WHEN
-- condition on the client column: it fires for that client's rows only.
DECLARE
    new_row jsonb;
    old_row jsonb;
    record_id text;
    portal_changed boolean := false;
    owned_changed boolean := false;
    owned_columns text[];
BEGIN
    IF current_setting('reconcile.origin', true) = 'reconciler' THEN
        RETURN NULL;
    END IF;
    new_row := to_jsonb(NEW);
    record_id := new_row ->> TG_ARGV[2];
    IF record_id IS NULL THEN
        RETURN NULL;  -- not linked to an Airtable record: nothing to push
    END IF;
    IF TG_OP = 'UPDATE' THEN
        old_row := to_jsonb(OLD);
        SELECT coalesce(bool_or(t.owner = 'portal' AND
                                new_row -> t.column_name IS DISTINCT FROM old_row -> t.column_name),
                        false),
               array_agg(t.column_name ORDER BY t.column_name) FILTER (WHERE t.owner = 'airtable'
                   AND new_row -> t.column_name IS DISTINCT FROM old_row -> t.column_name)
          INTO portal_changed, owned_columns
          FROM reconcile.tracked_columns t
         WHERE t.client = TG_ARGV[0] AND t.table_key = TG_ARGV[1];
        -- A record id newly linked to this row: its portal values have never been compared.
        portal_changed := portal_changed OR (old_row ->> TG_ARGV[2]) IS DISTINCT FROM record_id;
        owned_changed := owned_columns IS NOT NULL;
    ELSE
        SELECT coalesce(bool_or(t.owner = 'portal' AND
                                coalesce(new_row -> t.column_name, 'null'::jsonb) <> 'null'::jsonb),
                        false)
          INTO portal_changed
          FROM reconcile.tracked_columns t
         WHERE t.client = TG_ARGV[0] AND t.table_key = TG_ARGV[1];
    END IF;
    IF portal_changed OR owned_changed THEN
        INSERT INTO reconcile.sync_state AS s
               (client, table_key, airtable_record_id, portal_change_counter, portal_changed_at,
                portal_changed_xid, owned_write_counter, owned_write_at, owned_write_columns)
        VALUES (TG_ARGV[0], TG_ARGV[1], record_id, portal_changed::int,
                CASE WHEN portal_changed THEN clock_timestamp() END,
                CASE WHEN portal_changed THEN pg_current_xact_id() END,
                owned_changed::int, CASE WHEN owned_changed THEN clock_timestamp() END,
                owned_columns)
        ON CONFLICT (client, table_key, airtable_record_id) DO UPDATE
           SET portal_change_counter = s.portal_change_counter + excluded.portal_change_counter,
               portal_changed_at = coalesce(excluded.portal_changed_at, s.portal_changed_at),
               portal_changed_xid = coalesce(excluded.portal_changed_xid, s.portal_changed_xid),
               owned_write_counter = s.owned_write_counter + excluded.owned_write_counter,
               owned_write_at = coalesce(excluded.owned_write_at, s.owned_write_at),
               owned_write_columns = ARRAY(
                   SELECT DISTINCT c FROM unnest(array_cat(s.owned_write_columns,
                                                           excluded.owned_write_columns)) AS c
                   ORDER BY c);
    END IF;
    RETURN NULL;
END
$fn$;
"""

# Triggers calling the capture function, with their (NUL-separated) arguments.
CAPTURE_TRIGGERS = """
SELECT n.nspname, c.relname, t.tgname, t.tgnargs, t.tgargs
  FROM pg_trigger t
  JOIN pg_class c ON c.oid = t.tgrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT t.tgisinternal AND t.tgfoid = CAST(to_regproc('reconcile.capture_portal_change') AS oid)
"""


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _legacy_client(bind) -> str | None:
    """The client existing rows belong to; None when there are none to carry over."""
    named = context.get_x_argument(as_dictionary=True).get("legacy_client") or (
        context.config.attributes.get("legacy_client")
    )
    if named:
        return named
    # Tracked columns and triggers come with any installation (migration 0001 seeds them; the
    # install rewrites them from the project file): only synced data must not be misattributed.
    has_rows = any(
        bind.execute(text(f"SELECT EXISTS (SELECT 1 FROM reconcile.{table})")).scalar()
        for table in BOOKKEEPING
        if table != "tracked_columns"
    )
    if not has_rows:
        return None
    raise RuntimeError(
        "Migration 0005 keys the bookkeeping by client, and this database holds rows of a "
        "single-base deployment: run `reconcile db upgrade` (it names the project file's first "
        "client), or `alembic -x legacy_client=<client key> upgrade head`."
    )


def upgrade() -> None:
    bind = op.get_bind()
    legacy = _legacy_client(bind) or "default"
    for table in BOOKKEEPING:
        op.execute(
            f"ALTER TABLE reconcile.{table} ADD COLUMN client text NOT NULL "
            f"DEFAULT {_literal(legacy)}"
        )
        op.execute(f"ALTER TABLE reconcile.{table} ALTER COLUMN client DROP DEFAULT")
    op.execute(KEYS)
    op.execute(CAPTURE_FUNCTION)
    # Existing triggers (table key, key column) become the legacy client's (client, table key,
    # key column); a table of one client keeps its trigger's name.
    for schema, table, name, nargs, raw in bind.execute(text(CAPTURE_TRIGGERS)).all():
        arguments = [a.decode("utf-8") for a in bytes(raw).split(b"\x00")[:nargs]]
        if len(arguments) != 2:
            continue
        table_key, key_column = arguments
        relation = f"{_quote(schema)}.{_quote(table)}"
        op.execute(f"DROP TRIGGER {_quote(name)} ON {relation}")
        op.execute(
            f"CREATE TRIGGER {_quote(name)} AFTER INSERT OR UPDATE "
            f"ON {relation} FOR EACH ROW WHEN (current_setting('reconcile.origin', true) "
            "IS DISTINCT FROM 'reconciler') EXECUTE FUNCTION reconcile.capture_portal_change("
            f"{_literal(legacy)}, {_literal(table_key)}, {_literal(key_column)})"
        )


def downgrade() -> None:
    bind = op.get_bind()
    clients = {
        row[0]
        for table in BOOKKEEPING
        for row in bind.execute(text(f"SELECT DISTINCT client FROM reconcile.{table}")).all()
    }
    if len(clients) > 1:
        raise RuntimeError(
            f"the bookkeeping holds {len(clients)} clients ({', '.join(sorted(clients))}): "
            "revision 0004 keys it by table alone and cannot hold them apart"
        )
    for schema, table, name, nargs, raw in bind.execute(text(CAPTURE_TRIGGERS)).all():
        arguments = [a.decode("utf-8") for a in bytes(raw).split(b"\x00")[:nargs]]
        relation = f"{_quote(schema)}.{_quote(table)}"
        op.execute(f"DROP TRIGGER {_quote(name)} ON {relation}")
        if len(arguments) == 3:
            op.execute(
                "CREATE TRIGGER reconcile_capture_portal_change AFTER INSERT OR UPDATE "
                f"ON {relation} FOR EACH ROW WHEN (current_setting('reconcile.origin', true) "
                "IS DISTINCT FROM 'reconciler') EXECUTE FUNCTION reconcile.capture_portal_change("
                f"{_literal(arguments[1])}, {_literal(arguments[2])})"
            )
    op.execute(
        """
        ALTER TABLE reconcile.tracked_columns DROP CONSTRAINT tracked_columns_pkey;
        ALTER TABLE reconcile.tracked_columns ADD PRIMARY KEY (table_key, column_name);
        ALTER TABLE reconcile.sync_state DROP CONSTRAINT sync_state_pkey;
        ALTER TABLE reconcile.sync_state ADD PRIMARY KEY (table_key, airtable_record_id);
        ALTER TABLE reconcile.high_water_marks DROP CONSTRAINT high_water_marks_pkey;
        ALTER TABLE reconcile.high_water_marks ADD PRIMARY KEY (table_key);
        """
    )
    for table in BOOKKEEPING:
        op.execute(f"ALTER TABLE reconcile.{table} DROP COLUMN client CASCADE")
    # The indexes that led with `client` went with it: 0004's again.
    op.execute(KEYS_0004)
    # 0004's function body (two arguments).
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("0004_trust.py")
    spec = importlib.util.spec_from_file_location("reconcile_migration_0004", path)
    assert spec is not None and spec.loader is not None
    trust = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trust)
    body = trust.UPGRADE[trust.UPGRADE.index("CREATE OR REPLACE FUNCTION") :]
    op.execute(body)
