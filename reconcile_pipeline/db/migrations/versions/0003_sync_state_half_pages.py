"""Sync state pages are written half full, so a pull's rewrite of every row stays on its page.

Revision ID: 0003_sync_state_half_pages
Revises: 0002_capture_trigger_when
Create Date: 2026-11-21

A pull of N modified records rewrites N sync-state rows (Airtable's modified time, the stale
guard's clock). An update is HOT (no index writes, the old version pruned in place) only when
the new row version fits on the page of the old one. 0002's fill factor of 80 leaves room for
about a fifth of a page's rows, so a pull that touches every record of a page sent most of them
to other pages, with index entries for each: measured with the benchmark's 10k-record pull,
about 30% of the updates were HOT at 80 and about 98% at 50, and the statement took about 40%
less time. The price is a table about twice as large (sync state rows are small: roughly
30 MB per 100k records at 50).

Like 0002 it applies to pages written from now on. To re-pack an existing table at once, run
`VACUUM FULL reconcile.sync_state` at a quiet moment (it locks the table while it runs).
"""

from alembic import op

revision = "0003_sync_state_half_pages"
down_revision = "0002_capture_trigger_when"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE reconcile.sync_state SET (fillfactor = 50)")


def downgrade() -> None:
    op.execute("ALTER TABLE reconcile.sync_state SET (fillfactor = 80)")
