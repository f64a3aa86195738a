"""The API budget: Airtable schemas cached per client and table, and requests counted per day.

Revision ID: 0006_schema_cache
Revises: 0005_clients
Create Date: 2026-11-30

- `reconcile.airtable_schemas`: the table's schema from Airtable's metadata API, fetched at most
  once a day (or when a run meets a field or option it does not know), so an idle run costs its
  listing alone, not a metadata call as well (Airtable plans cap API calls per month).
- `reconcile.api_usage`: requests sent to Airtable per client, base and UTC day; the
  `airtable_api_budget` check sums the month and projects it.
"""

from alembic import op

revision = "0006_schema_cache"
down_revision = "0005_clients"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE reconcile.airtable_schemas (
            client       text NOT NULL,
            table_key    text NOT NULL,
            schema       jsonb NOT NULL,
            fingerprint  text NOT NULL,
            fetched_at   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (client, table_key)
        );
        COMMENT ON TABLE reconcile.airtable_schemas IS
            'The Airtable table schema a run validated against (re-fetched daily, or when a run '
            'meets an unknown field or option).';
        CREATE TABLE reconcile.api_usage (
            client     text NOT NULL,
            base_id    text NOT NULL,
            day        date NOT NULL,
            requests   bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (client, base_id, day)
        );
        COMMENT ON TABLE reconcile.api_usage IS
            'Requests sent to Airtable per client, base and UTC day (the API budget check).';
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE reconcile.airtable_schemas; DROP TABLE reconcile.api_usage;")
