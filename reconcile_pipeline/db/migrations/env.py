"""Alembic environment: migrations run on the connection handed over by `db.migrate`."""

from alembic import context
from sqlalchemy import text

from reconcile_pipeline.db.schema_names import RECONCILE_SCHEMA

connection = context.config.attributes["connection"]

# The version table lives in our own schema so it never clashes with the portal's own Alembic.
connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{RECONCILE_SCHEMA}"'))
context.configure(
    connection=connection,
    version_table_schema=RECONCILE_SCHEMA,
)
with context.begin_transaction():
    context.run_migrations()
