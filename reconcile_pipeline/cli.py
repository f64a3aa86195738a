"""`reconcile`: the operator's command line (embedded database, migrations, status)."""

import argparse
import datetime as dt
import logging
import os
import shlex
import sys
import warnings

from sqlalchemy import create_engine, text

from reconcile_pipeline import settings
from reconcile_pipeline.airtable.client import TOKEN_ENV, clean_token
from reconcile_pipeline.airtable.errors import AirtableConfigError
from reconcile_pipeline.db import urls as url_tools
from reconcile_pipeline.db.embedded import EmbeddedPostgres
from reconcile_pipeline.db.migrate import current_revision, head_revision
from reconcile_pipeline.instance import prepare_environment


def _cmd_db_start(args: argparse.Namespace) -> int:
    if settings.configured_database_url():
        urls = prepare_environment(start_embedded=False)
        print("DATABASE_URL is set: your PostgreSQL is used (no embedded server); schema migrated.")
    else:
        info = EmbeddedPostgres().start()
        urls = prepare_environment()
        print(f"Embedded PostgreSQL running (pid {info.pid}), data in {info.pgdata}")
    # Redacted: this output lands in terminals, CI logs and bug reports. The full values are
    # printed only on request, by `reconcile db env`.
    print(f"  DATABASE_URL={url_tools.redact(urls.app)}")
    print(f"  DAGSTER_POSTGRES_URL={url_tools.redact(urls.dagster)}")
    print('Passwords are hidden; eval "$(reconcile db env)" exports the full values.')
    return 0


def _cmd_db_env(args: argparse.Namespace) -> int:
    """`export` lines with the full URLs (passwords included) and DAGSTER_HOME, for `eval`."""
    try:
        urls = prepare_environment(start_embedded=False, migrate=False)
    except RuntimeError as exc:  # embedded server not running and no DATABASE_URL
        print(f"reconcile: {exc}", file=sys.stderr)
        return 2
    for name, value in (
        (settings.DATABASE_URL_ENV, urls.app),
        (settings.DAGSTER_POSTGRES_URL_ENV, urls.dagster),
        ("DAGSTER_HOME", os.environ["DAGSTER_HOME"]),
    ):
        print(f"export {name}={shlex.quote(value)}")
    return 0


def _cmd_db_stop(args: argparse.Namespace) -> int:
    stopped = EmbeddedPostgres().stop()
    print("Embedded PostgreSQL stopped." if stopped else "Embedded PostgreSQL was not running.")
    return 0


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Migrations, then change capture for every table of the project file (DESIGN §3.2): its
    trigger and tracked columns installed, triggers of tables the file dropped removed."""
    from reconcile_pipeline.config.install import install_capture, project_mappings
    from reconcile_pipeline.config.load import ConfigError, load

    try:  # read the file before touching the database: a bad file changes nothing
        project = load()
        mappings = project_mappings(project)
    except ConfigError as exc:
        print(f"reconcile: {exc}", file=sys.stderr)
        return 2
    urls = prepare_environment()
    print(f"Schema of {url_tools.redact(urls.app)} at revision {head_revision()}.")
    engine = create_engine(urls.app)
    try:
        report = install_capture(engine, mappings)
    except ConfigError as exc:
        print(f"reconcile: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    print(f"Change capture for the tables of {project.path}:")
    for line in report.lines():
        print(f"  {line}")
    if not report.ok:
        print("reconcile: some tables could not be installed (see above).", file=sys.stderr)
        return 2
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    urls = prepare_environment(migrate=False)
    engine = create_engine(urls.app)
    revision = current_revision(engine)
    print(f"Database: {url_tools.redact(urls.app)} ({'embedded' if urls.embedded else 'yours'})")
    print(f"Dagster storage: {url_tools.redact(urls.dagster)}")
    print(f"Schema revision: {revision or 'none'} (head {head_revision()})")
    if revision is not None:
        with engine.connect() as conn:
            leads = conn.execute(text("SELECT count(*) FROM public.leads")).scalar_one()
            dirty = conn.execute(
                text(
                    "SELECT count(*) FROM reconcile.sync_state "
                    "WHERE portal_change_counter > pushed_counter"
                )
            ).scalar_one()
            conflicts = conn.execute(
                text("SELECT count(*) FROM reconcile.conflicts WHERE status = 'open'")
            ).scalar_one()
            quarantined = conn.execute(
                text("SELECT count(*) FROM reconcile.quarantine WHERE released_at IS NULL")
            ).scalar_one()
        print(
            f"Leads: {leads}   dirty: {dirty}   open conflicts: {conflicts}   "
            f"quarantined: {quarantined}"
        )
    engine.dispose()
    return 0


def _quiet_dagster_warnings() -> None:
    # The backfill policy is "beta" in 1.13 and says so on every import; users can't act on it.
    warnings.filterwarnings("ignore", message=".*currently in beta.*")


def _parse_now(value: str) -> dt.datetime:
    """An ISO date-time for --now; naive means UTC."""
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO date-time (e.g. 2026-03-02T10:45:00Z)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def report_run(label: str, result) -> bool:
    """Print one run's outcome; for a failed run, its error (no traceback) and where to see it.
    Returns whether the run succeeded."""
    from reconcile_pipeline.defs.sensors import run_failure_alert
    from reconcile_pipeline.launch import see_run_hint

    if result.success:
        print(f"{label}: run {result.run_id} succeeded")
        return True
    print(f"{label}: run {result.run_id} FAILED")
    alert = run_failure_alert(
        result.dagster_run, result.get_run_failure_event(), result.get_step_failure_events()
    )
    for line in alert.lines[2:]:  # job and run id are already said
        print(f"  {line}")
    print(f"  {see_run_hint(result.run_id)}")
    return False


def _clean_airtable_token_env() -> None:
    """Trim AIRTABLE_API_KEY in this process's environment (runs and child processes read it
    from there); blank counts as unset. Raises AirtableConfigError for a token that is not one
    word of printable ASCII, naming the variable, never the value."""
    value = os.environ.get(TOKEN_ENV)
    if value is None:
        return
    if not value.strip():
        del os.environ[TOKEN_ENV]
        return
    os.environ[TOKEN_ENV] = clean_token(value)


def _cmd_backfill(args: argparse.Namespace) -> int:
    import dagster as dg

    from reconcile_pipeline.demo.environment import airtable_target
    from reconcile_pipeline.launch import run_reconcile

    _clean_airtable_token_env()
    hours = args.hours + 24 * args.days
    now = args.now or dt.datetime.now(dt.UTC)
    ok = True
    with airtable_target(seed_count=0):
        prepare_environment()
        with dg.DagsterInstance.get() as instance:
            # Without --hours/--days: the schedule's windows at `now`, which are two whenever
            # now and now - 15 min fall in different 20-minute windows; every run is reported.
            for result in run_reconcile(instance, hours=hours, dry_run=args.dry_run, now=now):
                if hours > 0:
                    label = f"Backfill of the last {hours:g} h as one run"
                else:
                    label = f"Window {result.dagster_run.tags.get('dagster/partition')}"
                ok = report_run(label, result) and ok
    return 0 if ok else 1


def _cmd_ui(args: argparse.Namespace) -> int:
    from reconcile_pipeline.demo.ui import run_ui

    _clean_airtable_token_env()
    return run_ui(port=args.port, trickle_seconds=args.trickle_seconds)


def _cmd_conflicts(args: argparse.Namespace) -> int:
    import json

    from reconcile_pipeline.config.load import load
    from reconcile_pipeline.engine import conflicts
    from reconcile_pipeline.engine.repository import Repository

    urls = prepare_environment()
    engine = create_engine(urls.app)
    repos = [Repository(engine, mapping) for mapping in load().mappings()]
    if args.action == "list":
        shown = 0
        for repo in repos:
            rows = conflicts.list_open(repo, limit=args.limit)
            for c in rows:
                print(
                    f"#{c.id} {repo.mapping.name} {c.record_id} {c.field}: "
                    f"airtable={c.airtable_value!r} portal={c.portal_value!r} "
                    f"kept={c.decided_value!r} — {c.recommendation}"
                )
            shown += len(rows)
        print(f"{shown} open conflicts shown")
    elif args.action == "resolve":
        value = json.loads(args.value) if args.value is not None else None
        owner = next((r for r in repos if conflicts.owns(r, args.id)), repos[0])
        chosen = conflicts.resolve(owner, args.id, args.choose, value)
        print(f"Conflict #{args.id} resolved with {chosen!r}; the next run pushes it if needed.")
    else:
        accepted = sum(conflicts.accept_all_recommendations(repo) for repo in repos)
        print(f"{accepted} conflicts accepted as decided.")
    engine.dispose()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from reconcile_pipeline.demo.run import run_demo

    _clean_airtable_token_env()
    return run_demo()


def _cmd_init(args: argparse.Namespace) -> int:
    """Write a starter project file from a live Airtable base and a PostgreSQL table."""
    import contextlib
    from pathlib import Path

    import requests
    from sqlalchemy.exc import InterfaceError, OperationalError

    from reconcile_pipeline.airtable.client import DEFAULT_ENDPOINT, AirtableClient
    from reconcile_pipeline.airtable.errors import translate_error
    from reconcile_pipeline.config import init as starter
    from reconcile_pipeline.config.load import CONFIG_ENV, DEFAULT_FILE, parse
    from reconcile_pipeline.db.config import resolve_database_urls
    from reconcile_pipeline.db.migrate import upgrade
    from reconcile_pipeline.demo.environment import DEMO_BASE_ID
    from reconcile_pipeline.emulator.server import run_emulator

    output = Path(args.output)
    try:
        starter.check_arguments(args.base, args.token_env, args.client)
        schema, table = starter.parse_postgres_table(args.postgres_table)
        if output.exists() and not args.force:
            raise starter.InitError(starter.refuse_overwrite_message(output))
        if not output.parent.is_dir():
            raise starter.InitError(f"--output {output}: directory {output.parent} does not exist.")
        raw = os.environ.get(args.token_env)
        with contextlib.ExitStack() as stack:
            if raw is None or not raw.strip():
                if args.base != DEMO_BASE_ID or args.token_env != TOKEN_ENV:
                    raise starter.InitError(
                        f"No Airtable token: set {args.token_env} to a personal access token "
                        f"(pat…) with the schema.bases:read scope on base {args.base}."
                    )
                # The demo base without a token: the embedded emulator serves its schema.
                emulator = stack.enter_context(run_emulator(rate_limit=5))
                token, endpoint = emulator.token, emulator.url
            else:
                token = clean_token(raw, args.token_env)
                endpoint = os.environ.get("AIRTABLE_ENDPOINT_URL", "").strip() or DEFAULT_ENDPOINT
            client = AirtableClient(
                token,
                args.base,
                args.table or args.base,
                endpoint_url=endpoint,
                max_retries=3,
                backoff_factor=0.5,
            )
            stack.callback(client.close)
            try:
                base_name, tables = starter.read_airtable_base(client.api, args.base)
            except requests.RequestException as exc:
                error = translate_error(exc, secrets=(token, raw or token))
                raise starter.InitError(
                    starter.airtable_failure(error, args.base, args.token_env, endpoint)
                ) from None
        chosen = starter.AirtableTable.from_meta(
            starter.choose_table(tables, args.table, args.base, table)
        )
        try:
            urls = resolve_database_urls()
            engine = create_engine(urls.app)
        except Exception as exc:  # a malformed DATABASE_URL, an embedded server that won't start
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
            configured = settings.configured_database_url()
            if configured:  # a parse error may quote the URL, password and all
                reason = reason.replace(configured, f"${settings.DATABASE_URL_ENV}")
            raise starter.InitError(
                f"PostgreSQL is not usable ({reason}): set DATABASE_URL to your portal's "
                "database (postgresql://user:password@host:5432/dbname)."
            ) from None
        try:
            if urls.embedded:
                upgrade(engine)  # the embedded default: the demo's public.leads
            postgres = starter.read_postgres_table(engine, schema, table)
        except (OperationalError, InterfaceError) as exc:  # could not connect
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise starter.InitError(
                f"PostgreSQL at {url_tools.redact(urls.app)} could not be read ({reason}): "
                "set DATABASE_URL to your portal's database."
            ) from None
        finally:
            engine.dispose()
        plan = starter.plan_starter(
            base_id=args.base,
            base_name=base_name,
            airtable=chosen,
            postgres=postgres,
            token_env=args.token_env,
            client_key=args.client,
            key_column=args.key_column,
        )
        text = starter.render(plan)
        parse(text, str(output))  # what is written loads as written
        starter.write_file(output, text, args.force)
    except starter.InitError as exc:
        print(f"reconcile: {exc}", file=sys.stderr)
        return 2
    for line in starter.coverage_report(plan):
        print(line)
    print(f"Wrote {output}.")
    if output.resolve() != (Path.cwd() / DEFAULT_FILE).resolve():
        print(f"The commands read ./{DEFAULT_FILE}; for this file set {CONFIG_ENV}={output}.")
    return 0


def _doctor_marks() -> tuple[str, str]:
    """✓ and ✗, or words where the terminal's encoding has no such characters."""
    try:
        "✓✗".encode(getattr(sys.stdout, "encoding", None) or "ascii")
    except (LookupError, UnicodeEncodeError):
        return "OK", "FAIL"
    return "✓", "✗"


def _cmd_doctor(args: argparse.Namespace) -> int:
    """Check everything a run needs, one line per check; exit 1 on any failure, 2 when the
    project file stops it early. The same defaults as every command: the embedded PostgreSQL
    without DATABASE_URL, the embedded Airtable emulator without AIRTABLE_API_KEY."""
    import contextlib

    from sqlalchemy.exc import SQLAlchemyError

    from reconcile_pipeline.config import doctor
    from reconcile_pipeline.config.load import ConfigError, load
    from reconcile_pipeline.demo.environment import airtable_target

    marks = _doctor_marks()
    try:
        project = load()
    except ConfigError as exc:
        print(doctor.Check(False, "project file", str(exc)).line(marks))
        return 2
    try:
        urls = prepare_environment(migrate=False)
        database = doctor.Database(urls.app, urls.embedded)
    except Exception as exc:  # a malformed DATABASE_URL, an embedded server that won't start
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        for name in (settings.DATABASE_URL_ENV, settings.DAGSTER_POSTGRES_URL_ENV):
            if os.environ.get(name):  # a parse error may quote the URL, password and all
                message = message.replace(os.environ[name], f"${name}")
        message = message.rstrip(".")
        if settings.configured_database_url():
            error = (
                f"DATABASE_URL is not usable ({message}): set it to a PostgreSQL URL "
                "(postgresql://user:password@host:5432/dbname), or unset it to use the "
                "embedded server"
            )
        else:
            error = (
                f"the embedded PostgreSQL did not start ({message}): set DATABASE_URL to "
                "your PostgreSQL"
            )
        database = doctor.Database(None, error=error)
    for client in project.config.clients.values():
        if not (os.environ.get(client.token_env) or "").strip():
            os.environ.pop(client.token_env, None)  # blank counts as unset, as for every command
    failed = False
    with contextlib.ExitStack() as stack:
        emulator_url = None
        # The demo project without its token: the embedded emulator answers, as for every
        # command. A project of your own without its token is a ✗ line naming the variable.
        if project.is_demo and project.client()[1].token_env not in os.environ:
            emulator_url = stack.enter_context(airtable_target(seed_count=0)).endpoint_url
        try:
            for check in doctor.diagnose(project, database, os.environ, emulator_url):
                print(check.line(marks), flush=True)
                failed = failed or not check.ok
        except SQLAlchemyError as exc:
            lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            first = lines[0] if lines else type(exc).__name__
            print(doctor.Check(False, "database", f"failed during the checks: {first}").line(marks))
            failed = True
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reconcile", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    db = commands.add_parser("db", help="the embedded PostgreSQL and the schema")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser(
        "start",
        help="start (or reuse) the embedded server, migrate, print the URLs (passwords hidden)",
    ).set_defaults(func=_cmd_db_start)
    db_commands.add_parser(
        "env",
        help="print export lines with the full database URLs (passwords included) and "
        'DAGSTER_HOME: eval "$(reconcile db env)"',
    ).set_defaults(func=_cmd_db_env)
    db_commands.add_parser("stop", help="stop the embedded server").set_defaults(func=_cmd_db_stop)
    db_commands.add_parser(
        "upgrade",
        help="apply schema migrations, then install change capture (trigger and tracked "
        "columns) on every table of the project file (idempotent)",
    ).set_defaults(func=_cmd_db_upgrade)
    commands.add_parser(
        "demo", help="set up the embedded default and run the demo reconcile"
    ).set_defaults(func=_cmd_demo)
    backfill = commands.add_parser(
        "backfill",
        help="reconcile the last N hours/days as ONE run (single-run backfill); without "
        "--hours/--days, the schedule's current windows (one run each)",
    )
    backfill.add_argument("--hours", type=float, default=0)
    backfill.add_argument("--days", type=float, default=0)
    backfill.add_argument(
        "--now",
        type=_parse_now,
        default=None,
        help="reconcile as of this UTC time instead of the clock (ISO, e.g. "
        "2026-03-02T10:45:00Z): replays a schedule tick",
    )
    backfill.add_argument("--dry-run", action="store_true", help="plan only; write nothing")
    backfill.set_defaults(func=_cmd_backfill)
    ui = commands.add_parser(
        "ui",
        help="the Dagster UI (webserver + daemon) on the embedded "
        "default, with a trickle of live edits",
    )
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument(
        "--trickle-seconds",
        type=float,
        default=20.0,
        help="seconds between simulated edits (0 = none)",
    )
    ui.set_defaults(func=_cmd_ui)
    conflict = commands.add_parser(
        "conflicts", help="the conflict queue: list, resolve, accept-all"
    )
    conflict.add_argument("action", choices=["list", "resolve", "accept-all"])
    conflict.add_argument("--id", type=int, help="conflict id (resolve)")
    conflict.add_argument("--choose", choices=["airtable", "portal", "custom"], default="airtable")
    conflict.add_argument("--value", help="JSON value for --choose custom, e.g. '\"ana\"'")
    conflict.add_argument("--limit", type=int, default=50)
    conflict.set_defaults(func=_cmd_conflicts)
    init_command = commands.add_parser(
        "init",
        help="write a starter reconcile.yaml from a live Airtable base and a PostgreSQL table",
    )
    init_command.add_argument("--base", required=True, help="the app… id of the Airtable base")
    init_command.add_argument(
        "--table",
        help="Airtable table name or tbl… id (default: the base's only table, or the one named "
        "like the PostgreSQL table)",
    )
    init_command.add_argument(
        "--postgres-table", required=True, metavar="SCHEMA.TABLE", help="e.g. public.leads"
    )
    init_command.add_argument(
        "--key-column",
        help="the text column holding the Airtable record id (default: airtable_record_id)",
    )
    init_command.add_argument(
        "--client", help="the client's key in the file (default: from the base's name)"
    )
    init_command.add_argument(
        "--token-env",
        default=TOKEN_ENV,
        help="the NAME of the variable holding the Airtable token (default: %(default)s)",
    )
    init_command.add_argument("--output", default="reconcile.yaml", help="default: %(default)s")
    init_command.add_argument("--force", action="store_true", help="overwrite an existing file")
    init_command.set_defaults(func=_cmd_init)
    commands.add_parser("status", help="database, schema revision and sync counts").set_defaults(
        func=_cmd_status
    )
    commands.add_parser(
        "doctor",
        help="check everything a run needs (project file, database, schema, capture triggers, "
        "tokens, Airtable base, tables and fields), one line per check; exit 1 on any failure",
    ).set_defaults(func=_cmd_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _quiet_dagster_warnings()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AirtableConfigError as exc:
        # A configuration error: one message saying what to set, no traceback (exit 2).
        print(f"reconcile: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
