"""`reconcile`: the operator's command line (embedded database, migrations, status).

A known failure never shows a traceback: one or two lines on stderr saying what is wrong and
what to set, exit 2 for a configuration error (a variable, an argument, the project file), exit 1
for a run that failed (its id and how to see it are printed). `--verbose` shows the traceback
(and the run's event log). Secrets (database passwords, tokens) are never printed.
"""

import argparse
import datetime as dt
import errno
import logging
import os
import shlex
import sys
import traceback
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from reconcile_pipeline import settings
from reconcile_pipeline.db import urls as url_tools
from reconcile_pipeline.instance import EVENT_BATCH_SIZE_ENV, prepare_environment

# Each command imports what it uses (Dagster, SQLAlchemy, pyairtable, Alembic), when it runs.

# airtable.client.TOKEN_ENV, said here so that building the parser does not import pyairtable
# (a test checks that both agree).
TOKEN_ENV = "AIRTABLE_API_KEY"


class UsageError(Exception):
    """A missing or conflicting argument; the message names it (exit 2)."""


@dataclass(frozen=True)
class Failure:
    """A known failure, as the user sees it: one or two lines and the exit code."""

    message: str
    code: int = 2


DATABASE_EXAMPLE = "postgresql://user:password@host:5432/dbname"
ENDPOINT_ENV = "AIRTABLE_ENDPOINT_URL"


def _token_names() -> set[str]:
    """The variables holding secrets to scrub: the Airtable tokens (AIRTABLE_API_KEY and the
    project file's), the console's and the Slack app's."""
    from reconcile_pipeline.config.load import load

    names = {TOKEN_ENV, "RECONCILE_CONSOLE_TOKEN", "RECONCILE_SLACK_TOKEN"}
    try:
        names.update(client.token_env for client in load().config.clients.values())
    except Exception:  # noqa: BLE001 — a bad project file is reported by whoever reads it
        pass
    return names


def scrub(message: str, environment: Mapping[str, str]) -> str:
    """`message` without secrets: a database URL (as set, or as normalised by the CLI) becomes
    its variable's name, a password `***`; every spelling of a token `***`."""
    from sqlalchemy.engine import make_url

    from reconcile_pipeline.airtable.secrets import redact

    for name in (settings.DATABASE_URL_ENV, settings.DAGSTER_POSTGRES_URL_ENV):
        for value in {environment.get(name), os.environ.get(name)} - {None, ""}:
            message = message.replace(value, f"${name}")
            try:
                password = make_url(value).password
            except Exception:  # noqa: BLE001 — not a URL: nothing more to hide in it
                password = None
            if password and len(str(password)) > 2:
                message = message.replace(str(password), "***")
    tokens = {
        value
        for name in _token_names()
        for value in (environment.get(name), os.environ.get(name))
        if value and value.strip()
    }
    return redact(message, tokens)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else type(exc).__name__


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        orig = getattr(exc, "orig", None)  # SQLAlchemy's wrapper around the driver's error
        if isinstance(orig, BaseException) and id(orig) not in seen:
            yield orig
            seen.add(id(orig))
        exc = exc.__cause__ or exc.__context__


def _malformed_url(environment: Mapping[str, str]) -> str | None:
    """The name of the database variable that does not parse as a PostgreSQL URL."""
    for name in (settings.DATABASE_URL_ENV, settings.DAGSTER_POSTGRES_URL_ENV):
        value = environment.get(name)
        if value:
            try:
                url_tools.app_url(value)
            except Exception:  # noqa: BLE001 — exactly what is being asked
                return name
    return None


def _url_problem(value: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        backend = make_url(value.replace("postgres://", "postgresql://", 1)).get_backend_name()
    except Exception:  # noqa: BLE001 — exactly what is being described
        return "it does not parse as a URL"
    return f"it is a '{backend}' URL"


def _database_failure(exc: BaseException, environment: Mapping[str, str]) -> Failure:
    reason = _first_line(exc)
    configured = environment.get(settings.DATABASE_URL_ENV)
    name = settings.DATABASE_URL_ENV
    if "psycopg2" in type(exc).__module__ and environment.get(settings.DAGSTER_POSTGRES_URL_ENV):
        name = settings.DAGSTER_POSTGRES_URL_ENV  # Dagster's storage talks psycopg2
    if configured or name != settings.DATABASE_URL_ENV:
        return Failure(
            f"PostgreSQL could not be reached ({reason}): set {name} to a database that "
            f"answers ({DATABASE_EXAMPLE})"
        )
    return Failure(
        f"the embedded PostgreSQL could not be reached ({reason}): run `reconcile db start`, "
        f"or set {settings.DATABASE_URL_ENV} to your PostgreSQL ({DATABASE_EXAMPLE})"
    )


def explain(exc: BaseException, environment: Mapping[str, str]) -> Failure | None:
    """The known failure `exc` is (or wraps), as one or two lines; None for anything else (a
    bug: its traceback is shown)."""
    for error in _chain(exc):
        failure = _explain_one(error, environment)
        if failure is not None:
            return Failure(scrub(failure.message, environment), failure.code)
    return None


def _explain_one(exc: BaseException, environment: Mapping[str, str]) -> Failure | None:
    import psycopg
    import requests
    from sqlalchemy import exc as sa_exc

    from reconcile_pipeline.airtable.errors import AirtableConfigError, AirtableRequestError
    from reconcile_pipeline.config.load import ConfigError
    from reconcile_pipeline.console import ConsolePortInUse
    from reconcile_pipeline.defs.partitions_start import PartitionsStartError
    from reconcile_pipeline.demo.ui import PortInUse
    from reconcile_pipeline.operations.review import NotSearchable

    if isinstance(
        exc,
        UsageError
        | ConfigError
        | AirtableConfigError
        | PortInUse
        | ConsolePortInUse
        | PartitionsStartError,
    ):
        return Failure(str(exc))
    if isinstance(exc, NotSearchable):
        return Failure(f"history RECORD: {exc}; pass one of those")
    malformed = _malformed_url(environment)
    if malformed and isinstance(
        exc, sa_exc.ArgumentError | sa_exc.NoSuchModuleError | ValueError | psycopg.ProgrammingError
    ):
        example = (
            ", or unset it to use the embedded server"
            if malformed == settings.DATABASE_URL_ENV
            else ""
        )
        return Failure(
            f"{malformed} is not a PostgreSQL URL ({_url_problem(environment[malformed])}): "
            f"set it to {DATABASE_EXAMPLE}{example}"
        )
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return _database_failure(getattr(exc, "orig", None) or exc, environment)
    if isinstance(exc, psycopg.OperationalError) or type(exc).__name__ == "OperationalError":
        return _database_failure(exc, environment)
    if isinstance(exc, RuntimeError) and "embedded PostgreSQL" in str(exc):
        return Failure(_first_line(exc))
    if isinstance(exc, AirtableRequestError | requests.RequestException):
        return _airtable_failure(exc)
    if isinstance(exc, PermissionError) and exc.filename:
        return Failure(
            f"{exc.filename} is not writable ({exc.strerror}): set {settings.RECONCILE_HOME_ENV} "
            "to a folder you can write"
        )
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return Failure(f"a port is in use ({exc.strerror}): pass --port / --emulator-port")
    return None


def _airtable_failure(exc: BaseException) -> Failure:
    from reconcile_pipeline.airtable.errors import translate_error

    error = translate_error(exc) if not hasattr(exc, "status_code") else exc
    status = getattr(error, "status_code", None)
    endpoint = os.environ.get(ENDPOINT_ENV) or "https://api.airtable.com"
    if status is None:
        return Failure(
            f"Airtable at {endpoint} did not answer ({getattr(error, 'error_type', '')}): set "
            f"{ENDPOINT_ENV} to the API's address, or unset it for https://api.airtable.com"
        )
    if status in (401, 403):
        return Failure(
            f"Airtable refused the token ({status}): set {TOKEN_ENV} (or your project's "
            "token_env) to a personal access token with access to the base"
        )
    if status == 404:
        return Failure(
            "Airtable has no such base or table (404): check base_id and airtable_table in the "
            "project file (RECONCILE_CONFIG)"
        )
    return Failure(_first_line(error))


def _hint_for_failed_run(lines: list[str]) -> str | None:
    """What to set, when a failed run's error says it (the endpoint did not answer)."""
    said = " ".join(lines)
    if ENDPOINT_ENV in said:
        return None
    if "no response" in said or "ConnectionError" in said or "Connection refused" in said:
        endpoint = os.environ.get(ENDPOINT_ENV) or "https://api.airtable.com"
        return (
            f"Airtable at {endpoint} did not answer: set {ENDPOINT_ENV} to the API's address, "
            "or unset it for https://api.airtable.com"
        )
    return None


def _cmd_db_start(args: argparse.Namespace) -> int:
    from reconcile_pipeline.db.embedded import EmbeddedPostgres

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
    """`export` lines with the full URLs (passwords included), DAGSTER_HOME and Dagster's event
    batch size, for `eval`."""
    try:
        urls = prepare_environment(start_embedded=False, migrate=False)
    except RuntimeError as exc:  # embedded server not running and no DATABASE_URL
        print(f"reconcile: {exc}", file=sys.stderr)
        return 2
    for name, value in (
        (settings.DATABASE_URL_ENV, urls.app),
        (settings.DAGSTER_POSTGRES_URL_ENV, urls.dagster),
        ("DAGSTER_HOME", os.environ["DAGSTER_HOME"]),
        (EVENT_BATCH_SIZE_ENV, os.environ[EVENT_BATCH_SIZE_ENV]),
    ):
        print(f"export {name}={shlex.quote(value)}")
    return 0


def _cmd_db_stop(args: argparse.Namespace) -> int:
    from reconcile_pipeline.db.embedded import EmbeddedPostgres

    stopped = EmbeddedPostgres().stop()
    print("Embedded PostgreSQL stopped." if stopped else "Embedded PostgreSQL was not running.")
    return 0


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Migrations, then change capture for every table of the project file (DESIGN §3.2): its
    trigger and tracked columns installed, triggers of tables the file dropped removed."""
    from sqlalchemy import create_engine

    from reconcile_pipeline.config.install import install_capture, project_mappings
    from reconcile_pipeline.config.load import ConfigError, load
    from reconcile_pipeline.db.migrate import head_revision

    try:  # read the file before touching the database: a bad file changes nothing
        project = load()
        mappings = project_mappings(project)
    except ConfigError as exc:
        print(f"reconcile: {exc}", file=sys.stderr)
        return 2
    urls = prepare_environment(full_upgrade=True)  # Alembic's upgrade, whatever the table says
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
    """The databases, the schema revision, and per table of the project file its counts."""
    from sqlalchemy import create_engine

    from reconcile_pipeline.config.load import load
    from reconcile_pipeline.db.migrate import current_revision, head_revision
    from reconcile_pipeline.operations.review import table_counts

    urls = prepare_environment(migrate=False)
    engine = create_engine(urls.app)
    try:
        revision = current_revision(engine)
        head = head_revision()
        kind = "embedded" if urls.embedded else "yours"
        print(f"Database: {url_tools.redact(urls.app)} ({kind})")
        print(f"Dagster storage: {url_tools.redact(urls.dagster)}")
        print(f"Schema revision: {revision or 'none'} (head {head})")
        if revision != head:
            print("Counts need the schema at head: run `reconcile db upgrade`.")
            return 0
        project = load()
        for mapping in project.all_mappings():
            counts = table_counts(engine, mapping)
            where = f"{mapping.postgres_schema}.{mapping.postgres_table}"
            rows = "missing" if counts.rows is None else f"{counts.rows} rows"
            print(
                f"{counts.client}/{counts.table_key} ({where}): {rows}   dirty: {counts.dirty}   "
                f"open conflicts: {counts.open_conflicts}   quarantined: {counts.quarantined}"
            )
    finally:
        engine.dispose()
    return 0


def _quiet_dagster_warnings() -> None:
    # The backfill policy is "beta" in 1.13 and says so on every import; users can't act on it.
    warnings.filterwarnings("ignore", message=".*currently in beta.*")
    warnings.filterwarnings("ignore", message=".*currently in preview.*")


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
    lines = list(alert.lines[2:])  # job and run id are already said
    for line in lines:
        print(f"  {line}")
    hint = _hint_for_failed_run(lines)
    if hint:
        print(f"  {hint}")
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
    from reconcile_pipeline.airtable.client import clean_token

    os.environ[TOKEN_ENV] = clean_token(value)


def _cmd_backfill(args: argparse.Namespace) -> int:
    import dagster as dg

    from reconcile_pipeline.defs.partitions_start import export_partitions_start
    from reconcile_pipeline.demo.environment import airtable_target

    _clean_airtable_token_env()
    hours = args.hours + 24 * args.days
    now = args.now or dt.datetime.now(dt.UTC)
    ok = True

    from reconcile_pipeline.config.load import load

    declared = list(load().config.clients)
    if args.client is not None and args.client not in declared:
        raise UsageError(
            f"--client {args.client}: the project file declares no such client (it has: "
            f"{', '.join(declared)})"
        )

    def label(partition: str | None, client: str | None) -> str:
        what = (
            f"Backfill of the last {hours:g} h as one run" if hours > 0 else f"Window {partition}"
        )
        return f"{client}: {what}" if client and len(declared) > 1 else what

    def started(run_id: str, partition: str | None, client: str | None = None) -> None:
        print(f"{label(partition, client)}: run {run_id} started…", flush=True)

    urls = prepare_environment()  # a database that does not answer is said before anything
    # The partitions start at the first recorded run (or where this backfill reaches back to),
    # unless RECONCILE_PARTITIONS_START or the project file sets it; before the definitions load.
    reach = dt.timedelta(hours=hours) if hours > 0 else dt.timedelta(minutes=40)
    export_partitions_start(urls.app, earliest=now - reach)
    with airtable_target(seed_count=0, client_key=args.client):
        # Imported (the definitions load) once the Airtable variables are exported: the
        # resources bind AIRTABLE_ENDPOINT_URL only when it is set at load.
        from reconcile_pipeline.launch import run_reconcile

        with dg.DagsterInstance.get() as instance:
            # Without --hours/--days ("sync now"): one run of the window holding `now`, as the
            # schedule's tick at `now` runs it (its pull starts at the high-water mark).
            for result in run_reconcile(
                instance,
                hours=hours,
                dry_run=args.dry_run,
                now=now,
                log_level=_run_log_level(args),
                on_start=started,
                client=args.client,
            ):
                tags = result.dagster_run.tags
                client = tags.get("reconcile/client")
                ok = report_run(label(tags.get("dagster/partition"), client), result) and ok
    return 0 if ok else 1


def _run_log_level(args: argparse.Namespace) -> str:
    """The runs' Dagster event log on the console: all of it with --verbose; otherwise none
    (the command reports each run's outcome itself, and the event log is in the UI)."""
    return "INFO" if getattr(args, "verbose", False) else "CRITICAL"


def _cmd_ui(args: argparse.Namespace) -> int:
    from reconcile_pipeline.demo.ui import run_ui

    _clean_airtable_token_env()
    return run_ui(
        port=args.port,
        trickle_seconds=args.trickle_seconds,
        emulator_port=args.emulator_port,
        console_port=args.console_port,
    )


def _cmd_console(args: argparse.Namespace) -> int:
    import contextlib

    from reconcile_pipeline.console import console_from_environment, serve
    from reconcile_pipeline.db.embedded import EmbeddedPostgres

    with contextlib.ExitStack() as stack:
        if not settings.configured_database_url():
            stack.enter_context(EmbeddedPostgres().running())  # stopped when the console stops
        return serve(console_from_environment(), host=args.host, port=args.port)


def _cmd_conflicts(args: argparse.Namespace) -> int:
    import json

    from sqlalchemy import create_engine

    from reconcile_pipeline.config.load import load
    from reconcile_pipeline.engine import conflicts
    from reconcile_pipeline.engine.repository import Repository

    if args.action == "resolve" and args.id is None:
        raise UsageError(
            "conflicts resolve needs --id N: the conflict's number, as `reconcile conflicts "
            "list` shows it (#N)"
        )
    if args.action == "resolve" and args.choose == "custom" and args.value is None:
        raise UsageError("--choose custom needs --value with the JSON value, e.g. '\"ana\"'")
    if args.value is not None:
        try:
            json.loads(args.value)
        except ValueError:
            raise UsageError(
                f"--value {args.value!r} is not JSON: quote a text value, e.g. '\"ana\"'"
            ) from None
    urls = prepare_environment()
    engine = create_engine(urls.app)
    repos = [Repository(engine, mapping) for mapping in load().all_mappings()]
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


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def _where(client: str | None, table_key: str | None) -> str:
    return "/".join(part for part in (client, table_key) if part)


def _cmd_quarantine(args: argparse.Namespace) -> int:
    """Held fields: list them, have the next run look at them again, or release them."""
    from sqlalchemy import create_engine

    from reconcile_pipeline.operations import review

    if args.action in ("retry", "release") and not args.id:
        raise UsageError(
            f"quarantine {args.action} needs --id N (repeatable): the hold's number, as "
            "`reconcile quarantine list` shows it (#N)"
        )
    urls = prepare_environment()
    engine = create_engine(urls.app)
    try:
        if args.action == "list":
            holds = review.list_quarantine(
                engine,
                client=args.client,
                table=args.table,
                include_released=args.all,
                limit=args.limit,
                offset=args.offset,
            )
            total = review.count_quarantine(
                engine, client=args.client, table=args.table, include_released=args.all
            )
            for hold in holds:
                state = f"released {_when(hold.released_at)}" if hold.released_at else "open"
                print(
                    f"#{hold.id} {_where(hold.client, hold.table_key)} {hold.record_id} "
                    f"{hold.field} ({hold.direction}, {state}, since {_when(hold.first_seen_at)}, "
                    f"{hold.attempts} attempt{'s' if hold.attempts != 1 else ''}): "
                    f"{hold.reason} — raw {review.shorten(hold.raw_value, 60)}"
                )
            kind = "holds" if args.all else "open holds"
            more = total - args.offset - len(holds)
            print(
                f"{len(holds)} of {total} {kind} shown"
                + (
                    f" (--offset {args.offset + len(holds)} for the next {more})"
                    if more > 0
                    else ""
                )
            )
            return 0
        if args.action == "release":
            released = review.release_quarantine(engine, args.id, client=args.client)
            for hold_id in released:
                print(f"#{hold_id} released (kept as history).")
            return _not_open([i for i in args.id if i not in released])
        outcome = review.retry_quarantine(engine, args.id, client=args.client)
        for (client, table_key), mark in outcome.refetch.items():
            where = _where(client, table_key)
            if mark is None:
                print(f"{where}: the next run pulls the whole table again (no time was known).")
            else:
                print(f"{where}: the next run pulls every record changed since {_when(mark)}.")
        if outcome.repush:
            print(f"The next push re-reads and decides again: {', '.join(outcome.repush)}.")
        if outcome.retried:
            ids = ", ".join(f"#{i}" for i in outcome.retried)
            print(f"{ids} stay held until that run releases them (or counts another attempt).")
        return _not_open(outcome.not_open)
    finally:
        engine.dispose()


def _not_open(ids: list[int]) -> int:
    if not ids:
        return 0
    listed = ", ".join(f"#{i}" for i in ids)
    print(
        f"reconcile: {listed}: no such open hold (see `reconcile quarantine list`)",
        file=sys.stderr,
    )
    return 1


DIRECTIONS = {
    "airtable_to_postgres": "Airtable → PostgreSQL",
    "postgres_to_airtable": "PostgreSQL → Airtable",
}


def _cmd_history(args: argparse.Namespace) -> int:
    """Every change of a record on either side, newest first."""
    from sqlalchemy import create_engine

    from reconcile_pipeline.config.load import load
    from reconcile_pipeline.operations import review

    mappings = load().all_mappings()
    urls = prepare_environment()
    engine = create_engine(urls.app)
    try:
        matches = review.find_records(engine, mappings, args.record, client=args.client)
        if not matches:
            print(f"No synced record has {args.record!r} (searched the portal's tables).")
            return 1
        for match in matches:
            changes = review.record_history(
                engine,
                match.record_id,
                client=args.client or match.client,
                table=args.table or match.table_key,
                limit=args.limit,
                offset=args.offset,
            )
            where = _where(match.client, match.table_key)
            found = f" ({where}, found by {match.matched})" if match.table_key else ""
            noun = "change" if len(changes) == 1 else "changes"
            print(f"{match.record_id}{found}: {len(changes)} {noun} shown, newest first")
            for change in changes:
                window = (
                    f"{_when(change.window_start)} – {_when(change.window_end)}"
                    if change.window_start
                    else "-"
                )
                print(
                    f"  {change.changed_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC  "
                    f"{_where(change.client, change.table_key)}.{change.field}: "
                    f"{review.shorten(change.old_value, 40)} → "
                    f"{review.shorten(change.new_value, 40)}  "
                    f"{DIRECTIONS.get(change.direction, change.direction)}"
                    f"{f' ({change.reason})' if change.reason else ''}  "
                    f"run {change.run_id or '-'}  window {window}"
                )
        return 0
    finally:
        engine.dispose()


def _cmd_demo(args: argparse.Namespace) -> int:
    from reconcile_pipeline.demo.run import run_demo

    _clean_airtable_token_env()
    return run_demo(log_level=_run_log_level(args))


def _cmd_init(args: argparse.Namespace) -> int:
    """Write a starter project file from a live Airtable base and a PostgreSQL table."""
    import contextlib
    from pathlib import Path

    import requests
    from sqlalchemy import create_engine
    from sqlalchemy.exc import InterfaceError, OperationalError

    from reconcile_pipeline.airtable.client import DEFAULT_ENDPOINT, AirtableClient, clean_token
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
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the traceback of a failure and the runs' event log",
    )
    # --verbose is accepted after the command too (`reconcile backfill --verbose`).
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(parent, name: str, **kwargs) -> argparse.ArgumentParser:
        return parent.add_parser(name, parents=[verbose], **kwargs)

    db = command(commands, "db", help="the embedded PostgreSQL and the schema")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    command(
        db_commands,
        "start",
        help="start (or reuse) the embedded server, migrate, print the URLs (passwords hidden)",
    ).set_defaults(func=_cmd_db_start)
    command(
        db_commands,
        "env",
        help="print export lines with the full database URLs (passwords included) and "
        'DAGSTER_HOME: eval "$(reconcile db env)"',
    ).set_defaults(func=_cmd_db_env)
    command(db_commands, "stop", help="stop the embedded server").set_defaults(func=_cmd_db_stop)
    command(
        db_commands,
        "upgrade",
        help="apply schema migrations, then install change capture (trigger and tracked "
        "columns) on every table of the project file (idempotent)",
    ).set_defaults(func=_cmd_db_upgrade)
    command(
        commands, "demo", help="set up the embedded default and run the demo reconcile"
    ).set_defaults(func=_cmd_demo)
    backfill = command(
        commands,
        "backfill",
        help="reconcile the last N hours/days as ONE run (single-run backfill); without "
        "--hours/--days, sync now: one run of the current window, as the schedule's tick",
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
    backfill.add_argument(
        "--client", help="only this client (its key in the project file; default: every client)"
    )
    backfill.set_defaults(func=_cmd_backfill)
    ui = command(
        commands,
        "ui",
        help="the Dagster UI (webserver + daemon) on the embedded default, with a trickle of "
        "live edits; Ctrl-C, SIGTERM or SIGHUP stop everything it started",
    )
    ui.add_argument("--port", type=int, default=3000, help="the UI's port (default: %(default)s)")
    ui.add_argument(
        "--emulator-port",
        type=int,
        default=8765,
        help="the Airtable emulator's port, without a token (default: %(default)s; 0 picks a "
        "free one). Other commands of the same RECONCILE_HOME use this emulator while it runs",
    )
    ui.add_argument(
        "--trickle-seconds",
        type=float,
        default=20.0,
        help="seconds between simulated edits (0 = none)",
    )
    ui.add_argument(
        "--console-port",
        type=int,
        default=3001,
        help="the review console's port (default: %(default)s; 0 picks a free one)",
    )
    ui.set_defaults(func=_cmd_ui)
    console = command(
        commands,
        "console",
        help="the review console: conflicts, quarantine and a record's history in the browser "
        "(read-only unless RECONCILE_CONSOLE_TOKEN is set); Ctrl-C stops it",
    )
    console.add_argument("--port", type=int, default=3001, help="default: %(default)s")
    console.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default: %(default)s, this machine only)",
    )
    console.set_defaults(func=_cmd_console)
    conflict = command(commands, "conflicts", help="the conflict queue: list, resolve, accept-all")
    conflict.add_argument("action", choices=["list", "resolve", "accept-all"])
    conflict.add_argument("--id", type=int, help="conflict id (resolve)")
    conflict.add_argument("--choose", choices=["airtable", "portal", "custom"], default="airtable")
    conflict.add_argument("--value", help="JSON value for --choose custom, e.g. '\"ana\"'")
    conflict.add_argument("--limit", type=int, default=50)
    conflict.set_defaults(func=_cmd_conflicts)
    quarantine = command(
        commands,
        "quarantine",
        help="fields held back (a value one side holds that the mapping cannot take): list; "
        "retry (the next run looks at the record again: a pull hold moves the table's "
        "high-water mark back to the record's last Airtable edit, so the next pull lists it "
        "with everything changed since; a push hold counts as a portal edit, so the next push "
        "re-reads it; the hold stays open until that run releases it or counts another "
        "attempt); release (close the hold, kept as history; the field keeps its last good "
        "value)",
        description="Fields held back in quarantine. retry: the next run looks at the "
        "record again (pull holds: the table's high-water mark moves back to the record's "
        "last Airtable edit, so the next pull lists it, with everything changed since, and "
        "unchanged records are not rewritten; push holds: counted as a portal edit, so the "
        "next push re-reads the record from Airtable); the hold stays open until that run "
        "releases it, or counts another attempt. Use it after fixing the cause (the project "
        "file's mapping, a select option added in Airtable). release: close the hold, kept "
        "as history; PostgreSQL keeps the field's last good value.",
    )
    quarantine.add_argument("action", choices=["list", "retry", "release"])
    quarantine.add_argument(
        "--id", type=int, action="append", help="hold number (#N in the list); repeatable"
    )
    quarantine.add_argument("--table", help="list: only this table (its key in the file)")
    quarantine.add_argument("--client", help="only this client (its key in the file)")
    quarantine.add_argument("--all", action="store_true", help="list: released holds too")
    quarantine.add_argument("--limit", type=int, default=50)
    quarantine.add_argument("--offset", type=int, default=0)
    quarantine.set_defaults(func=_cmd_quarantine)
    history = command(
        commands,
        "history",
        help="every change of a record on either side (field, old → new, direction, run, "
        "window, when), newest first",
    )
    history.add_argument(
        "record",
        metavar="RECORD",
        help="an Airtable record id (rec…), or an e-mail or phone found in a synced table",
    )
    history.add_argument("--table", help="only this table (its key in the file)")
    history.add_argument("--client", help="only this client (its key in the file)")
    history.add_argument("--limit", type=int, default=100)
    history.add_argument("--offset", type=int, default=0)
    history.set_defaults(func=_cmd_history)
    init_command = command(
        commands,
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
    command(commands, "status", help="database, schema revision and sync counts").set_defaults(
        func=_cmd_status
    )
    command(
        commands,
        "doctor",
        help="check everything a run needs (project file, database, schema, capture triggers, "
        "tokens, Airtable base, tables and fields), one line per check; exit 1 on any failure",
    ).set_defaults(func=_cmd_doctor)
    return parser


def _configure_logging(verbose: bool, command: str) -> None:
    """Warnings and errors only, unless --verbose; `reconcile ui` (a service) logs at INFO."""
    level = logging.INFO if verbose or command == "ui" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        # urllib3 warns on every connection retry; the failure that follows says it all.
        logging.getLogger("urllib3").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    """The `reconcile` command: `argv`, else this process's command line (the console script),
    after which the process ends."""
    try:
        return _main(argv)
    finally:
        if argv is None:
            _spare_the_exit()


def _spare_the_exit() -> None:
    """Move every object to the garbage collector's permanent generation, just before the
    process ends: the interpreter's shutdown then does not walk the whole heap (Dagster, pandas,
    pyairtable: ~0.8 s of a `reconcile backfill` on 2 cores). Objects are still released as
    their modules are torn down, files and connections still closed, atexit handlers still run;
    only garbage in reference cycles is left to the operating system. Not for `main(argv)` called
    from a process that goes on (tests)."""
    import gc

    gc.freeze()


def _main(argv: list[str] | None) -> int:
    _quiet_dagster_warnings()
    args = build_parser().parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    _configure_logging(verbose, args.command)
    environment = dict(os.environ)  # as the user set it: the commands normalise some values
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("reconcile: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        failure = explain(exc, environment)
        if failure is None:
            raise  # not a known failure: a bug, whose traceback is wanted
        if verbose:
            shown = "".join(traceback.format_exception(exc))
            print(scrub(shown, environment), file=sys.stderr, end="")
        print(f"reconcile: {failure.message}", file=sys.stderr)
        return failure.code


if __name__ == "__main__":
    sys.exit(main())
