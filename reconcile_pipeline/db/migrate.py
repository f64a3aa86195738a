"""Apply the versioned schema migrations (Alembic) to the application database."""

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from reconcile_pipeline.db.schema_names import RECONCILE_SCHEMA

logger = logging.getLogger(__name__)
# Alembic announces its context on every connection at INFO; our own line says what matters.
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of the project."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when never migrated."""
    with engine.connect() as conn:
        return MigrationContext.configure(
            conn, opts={"version_table_schema": RECONCILE_SCHEMA}
        ).get_current_revision()


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
