"""The demo portal's own campaigns table, linked from its leads (the demo project's second table).

This is the *demo portal's* schema, not the reconciler's: it is applied only when the active
project file is the shipped demo (by `reconcile demo`, `ui`, `backfill`, `db upgrade` through
`prepare_environment`), never to a database synced with a project file of your own. Idempotent:

- `public.campaigns`, keyed by the Airtable record id, with its soft-delete column;
- `public.leads.campaign_ref`, a lead's campaign as the campaign row's key (a foreign key);
- the capture trigger on `public.campaigns`, as `reconcile db upgrade` installs it for any
  configured table.
"""

from sqlalchemy.engine import Engine

DEMO_PORTAL_SCHEMA = r"""
CREATE TABLE IF NOT EXISTS public.campaigns (
    id                  bigserial PRIMARY KEY,
    airtable_record_id  text UNIQUE,
    name                text,
    channel             text,
    status              text,
    is_active           boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- Local-only: the portal's own; the sync never reads or writes it.
    budget              numeric
);
ALTER TABLE public.leads ADD COLUMN IF NOT EXISTS campaign_ref text
    REFERENCES public.campaigns (airtable_record_id);
DROP TRIGGER IF EXISTS reconcile_capture_portal_change ON public.campaigns;
CREATE TRIGGER reconcile_capture_portal_change
    AFTER INSERT OR UPDATE ON public.campaigns
    FOR EACH ROW
    WHEN (current_setting('reconcile.origin', true) IS DISTINCT FROM 'reconciler')
    EXECUTE FUNCTION reconcile.capture_portal_change('demo', 'campaigns', 'airtable_record_id');
"""


def ensure_demo_portal(engine: Engine) -> None:
    """Create the demo portal's campaigns table and link column when absent (after the
    migrations, which create the demo's leads table)."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "SELECT pg_advisory_xact_lock(hashtext('reconcile_pipeline.demo_portal'))"
        )
        conn.exec_driver_sql(DEMO_PORTAL_SCHEMA)
