"""The capture trigger skips the reconciler's own writes before queueing them; sync state
leaves room on its pages for in-place updates.

Revision ID: 0002_capture_trigger_when
Revises: 0001_initial
Create Date: 2026-11-21

0001's AFTER ROW trigger checked the origin tag inside its PL/pgSQL body, so every row the
reconciler wrote still queued an after-trigger event and ran the function once, only to return.
A `WHEN` condition is evaluated as the row is written and, when false, queues nothing: a
10k-row stage 1 update no longer pays 10k function calls. The body keeps its own check, so the
function stays correct if someone attaches it without the condition.

Every pull rewrites the sync-state row of each record Airtable modified (its modified time, the
stale-snapshot guard's input). With the default fill factor (100) a page has no room for the new
row version, so every such update also writes new entries into both indexes. A fill factor of
80 lets those updates stay on the page (HOT): no index writes and far less bloat. It applies to
pages written from now on.
"""

from alembic import op

revision = "0002_capture_trigger_when"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

RECREATE = """
DROP TRIGGER IF EXISTS reconcile_capture_portal_change ON public.leads;
CREATE TRIGGER reconcile_capture_portal_change
    AFTER INSERT OR UPDATE ON public.leads
    FOR EACH ROW
    WHEN (current_setting('reconcile.origin', true) IS DISTINCT FROM 'reconciler')
    EXECUTE FUNCTION reconcile.capture_portal_change('leads', 'airtable_record_id');
ALTER TABLE reconcile.sync_state SET (fillfactor = 80);
"""

ORIGINAL = """
DROP TRIGGER IF EXISTS reconcile_capture_portal_change ON public.leads;
CREATE TRIGGER reconcile_capture_portal_change
    AFTER INSERT OR UPDATE ON public.leads
    FOR EACH ROW EXECUTE FUNCTION reconcile.capture_portal_change('leads', 'airtable_record_id');
ALTER TABLE reconcile.sync_state RESET (fillfactor);
"""


def upgrade() -> None:
    op.execute(RECREATE)


def downgrade() -> None:
    op.execute(ORIGINAL)
