"""Apply the versioned schema migrations (Alembic) to the application database.

Alembic is imported only when it has work to do: `upgrade_if_behind` (what every `reconcile`
command runs first) tells a database already at the shipped head from the migration files and
the version table alone, and leaves it alone.
"""

import functools
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ProgrammingError

from reconcile_pipeline.db.schema_names import RECONCILE_SCHEMA

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger(__name__)
# Alembic announces its context on every connection at INFO; our own line says what matters.
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Where Alembic records the revision (env.py: version_table_schema), default table name.
VERSION_TABLE = f'"{RECONCILE_SCHEMA}".alembic_version'


def _alembic_config() -> "Config":
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of the project."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when never migrated."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(
            conn, opts={"version_table_schema": RECONCILE_SCHEMA}
        ).get_current_revision()


# A migration file's own `revision = "..."` / `down_revision = "..." | None` lines (top level).
_REVISION_LINE = re.compile(
    r"""^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(?:(['"])([^'"\n]+)\2|(None))\s*(?:#.*)?$""",
    re.MULTILINE,
)


@functools.cache
def shipped_head() -> str | None:
    """The head revision read from the migration files without Alembic: their literal
    `revision` and `down_revision` lines. None when they are not one plain chain with one head
    (a merge, a branch, a computed value, a line twice): then only Alembic can say."""
    revisions: dict[str, str | None] = {}
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        found: dict[str, list[str | None]] = {"revision": [], "down_revision": []}
        for match in _REVISION_LINE.finditer(path.read_text(encoding="utf-8")):
            found[match.group(1)].append(match.group(3))  # None for `None`
        if len(found["revision"]) != 1 or len(found["down_revision"]) != 1:
            return None
        revision, down = found["revision"][0], found["down_revision"][0]
        if revision is None or revision in revisions:
            return None
        revisions[revision] = down
    heads = set(revisions) - set(revisions.values())
    if len(heads) != 1 or any(
        down is not None and down not in revisions for down in revisions.values()
    ):
        return None
    return heads.pop()


def recorded_revisions(engine: Engine) -> list[str] | None:
    """The revisions the version table holds; None when there is no such table (a database
    never migrated, or one this role cannot read)."""
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())
    except ProgrammingError:
        return None


def upgrade_if_behind(url: str) -> str:
    """`upgrade` unless the database is at the shipped head already (its version table holds
    that revision alone), which is told without importing Alembic; returns the revision.
    Anything else (behind, ahead, never migrated, an unreadable version table) goes through
    `upgrade`, which migrates or refuses as it always does."""
    engine = create_engine(url)
    try:
        head = shipped_head()
        if head is not None and recorded_revisions(engine) == [head]:
            logger.info("Schema at revision %s", head)
            return head
        return upgrade(engine)
    finally:
        engine.dispose()


def legacy_client() -> str | None:
    """The client a single-base deployment's bookkeeping belongs to when migration 0005 keys it
    by client: the project file's first client (None when the file cannot be read; the
    migration then refuses to guess if there are rows to carry over)."""
    from reconcile_pipeline.config.load import ConfigError, load

    try:
        return next(iter(load().config.clients))
    except ConfigError:
        return None


def upgrade(engine_or_url: Engine | str, legacy_client_key: str | None = None) -> str:
    """Bring the database to the head revision; a no-op when it is there already.

    A transaction-level advisory lock serialises concurrent upgrades (two processes starting at
    once) so neither sees a half-applied schema. `legacy_client_key`: see `legacy_client`
    (resolved from the project file when not given).
    """
    from alembic import command

    engine = create_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    config = _alembic_config()
    if current_revision(engine) != head_revision():
        config.attributes["legacy_client"] = legacy_client_key or legacy_client()
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('reconcile_pipeline.migrate'))"))
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    revision = current_revision(engine)
    logger.info("Schema at revision %s", revision)
    assert revision is not None
    return revision
