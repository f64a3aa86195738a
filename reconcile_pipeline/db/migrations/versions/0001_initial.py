"""Portal leads table (when absent), the reconciler's bookkeeping and the change-capture trigger.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-21

The portal's `leads` table is created only when it does not exist: real users already have it,
and the reconciler installs on top of it without altering it. Everything of ours goes in the
`reconcile` schema.
"""

from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

PORTAL_LEADS = """
CREATE TABLE IF NOT EXISTS public.leads (
    id                      bigserial PRIMARY KEY,
    airtable_record_id      text UNIQUE,
    first_name              text,
    last_name               text,
    email                   text,
    phone                   text,
    company                 text,
    title                   text,
    icp_score               integer,
    status                  text,
    processing_status       text,
    campaign_id             text,
    campaign_name           text,
    sms_sequence_position   integer,
    sms_sent_count          integer,
    sms_last_sent_at        timestamptz,
    lead_source             text,
    form_id                 text,
    booked                  boolean NOT NULL DEFAULT false,
    booked_at               timestamptz,
    sms_stop                boolean NOT NULL DEFAULT false,
    claimed_by              text,
    claimed_at              timestamptz,
    notes                   text,
    is_active               boolean NOT NULL DEFAULT true,
    client_id               text,
    tags                    jsonb,
    attachments             jsonb,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    -- Local-only columns: the portal's own; the sync never reads or writes them.
    portal_priority         integer,
    last_viewed_at          timestamptz
)
"""

BOOKKEEPING = """
CREATE TABLE reconcile.tracked_columns (
    table_key    text NOT NULL,
    column_name  text NOT NULL,
    PRIMARY KEY (table_key, column_name)
);
COMMENT ON TABLE reconcile.tracked_columns IS
    'Portal-owned columns per synced table; written from the field mapping, read by the trigger.';

CREATE TABLE reconcile.sync_state (
    table_key              text NOT NULL,
    airtable_record_id     text NOT NULL,
    base_values            jsonb NOT NULL DEFAULT '{}'::jsonb,
    portal_change_counter  bigint NOT NULL DEFAULT 0,
    pushed_counter         bigint NOT NULL DEFAULT 0,
    portal_changed_at      timestamptz,
    last_pushed_at         timestamptz,
    last_pushed_values     jsonb,
    echo_pending           boolean NOT NULL DEFAULT false,
    airtable_modified_at   timestamptz,
    airtable_created_at    timestamptz,
    last_pulled_at         timestamptz,
    deleted_at             timestamptz,
    PRIMARY KEY (table_key, airtable_record_id)
);
COMMENT ON COLUMN reconcile.sync_state.base_values IS
    'Per portal-owned field: the last value both sides agreed on (the three-way merge base).';
CREATE INDEX sync_state_dirty_idx ON reconcile.sync_state (table_key)
    WHERE portal_change_counter > pushed_counter;

CREATE TABLE reconcile.airtable_snapshots (
    id                  bigserial PRIMARY KEY,
    table_key           text NOT NULL,
    airtable_record_id  text NOT NULL,
    fields              jsonb NOT NULL,
    created_time        timestamptz,
    modified_time       timestamptz,
    pulled_at           timestamptz NOT NULL DEFAULT now(),
    run_id              text,
    window_start        timestamptz,
    window_end          timestamptz
);
CREATE INDEX airtable_snapshots_record_idx
    ON reconcile.airtable_snapshots (table_key, airtable_record_id, pulled_at DESC);
CREATE INDEX airtable_snapshots_run_idx ON reconcile.airtable_snapshots (run_id);

CREATE TABLE reconcile.conflicts (
    id                  bigserial PRIMARY KEY,
    table_key           text NOT NULL,
    airtable_record_id  text NOT NULL,
    field               text NOT NULL,
    base_value          jsonb,
    airtable_value      jsonb,
    portal_value        jsonb,
    decided_value       jsonb,
    policy              text NOT NULL,
    decision            text NOT NULL,
    recommendation      text,
    status              text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    resolved_value      jsonb,
    resolution          text,
    resolved_at         timestamptz,
    detected_at         timestamptz NOT NULL DEFAULT now(),
    run_id              text,
    window_start        timestamptz,
    window_end          timestamptz
);
CREATE INDEX conflicts_open_idx ON reconcile.conflicts (table_key, status, detected_at);

CREATE TABLE reconcile.change_history (
    id                  bigserial PRIMARY KEY,
    table_key           text NOT NULL,
    airtable_record_id  text NOT NULL,
    field               text NOT NULL,
    old_value           jsonb,
    new_value           jsonb,
    direction           text NOT NULL
        CHECK (direction IN ('airtable_to_postgres', 'postgres_to_airtable')),
    reason              text,
    run_id              text,
    window_start        timestamptz,
    window_end          timestamptz,
    changed_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX change_history_record_idx
    ON reconcile.change_history (table_key, airtable_record_id, changed_at);
CREATE INDEX change_history_run_idx ON reconcile.change_history (run_id);

CREATE TABLE reconcile.quarantine (
    id                  bigserial PRIMARY KEY,
    table_key           text NOT NULL,
    airtable_record_id  text NOT NULL,
    direction           text NOT NULL CHECK (direction IN ('pull', 'push')),
    reason              text NOT NULL,
    raw_payload         jsonb,
    attempts            integer NOT NULL DEFAULT 1,
    first_seen_at       timestamptz NOT NULL DEFAULT now(),
    last_seen_at        timestamptz NOT NULL DEFAULT now(),
    released_at         timestamptz,
    run_id              text
);
-- At most one open quarantine entry per record and direction; released ones are kept as history.
CREATE UNIQUE INDEX quarantine_open_uidx ON reconcile.quarantine
    (table_key, airtable_record_id, direction) WHERE released_at IS NULL;

CREATE TABLE reconcile.push_results (
    id                  bigserial PRIMARY KEY,
    table_key           text NOT NULL,
    airtable_record_id  text NOT NULL,
    outcome             text NOT NULL
        CHECK (outcome IN ('updated', 'skipped', 'conflict', 'failed', 'quarantined')),
    fields_sent         jsonb,
    counter_sent        bigint,
    error               text,
    run_id              text,
    window_start        timestamptz,
    window_end          timestamptz,
    pushed_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_results_run_idx ON reconcile.push_results (run_id);
CREATE INDEX push_results_record_idx
    ON reconcile.push_results (table_key, airtable_record_id, pushed_at);

CREATE TABLE reconcile.runs (
    id                  bigserial PRIMARY KEY,
    table_key           text NOT NULL,
    stage               text NOT NULL,
    run_id              text,
    window_start        timestamptz,
    window_end          timestamptz,
    dry_run             boolean NOT NULL DEFAULT false,
    stats               jsonb NOT NULL DEFAULT '{}'::jsonb,
    started_at          timestamptz NOT NULL,
    finished_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runs_stage_idx ON reconcile.runs (table_key, stage, finished_at DESC);
"""

CAPTURE_TRIGGER = r"""
CREATE FUNCTION reconcile.capture_portal_change() RETURNS trigger
LANGUAGE plpgsql AS $fn$
-- Bumps the per-record portal change counter when a portal-owned column changes, whatever code
-- path wrote it, unless the transaction is tagged as the reconciler's own (SET LOCAL
-- reconcile.origin = 'reconciler'). TG_ARGV[0] is the mapping's table key, TG_ARGV[1] the column
-- holding the Airtable record id. Portal-owned columns come from reconcile.tracked_columns.
DECLARE
    new_row jsonb;
    old_row jsonb;
    record_id text;
    changed boolean;
BEGIN
    IF current_setting('reconcile.origin', true) = 'reconciler' THEN
        RETURN NULL;
    END IF;
    new_row := to_jsonb(NEW);
    record_id := new_row ->> TG_ARGV[1];
    IF record_id IS NULL THEN
        RETURN NULL;  -- not linked to an Airtable record: nothing to push
    END IF;
    IF TG_OP = 'UPDATE' THEN
        old_row := to_jsonb(OLD);
        SELECT coalesce(bool_or(new_row -> t.column_name IS DISTINCT FROM old_row -> t.column_name),
                        false)
          INTO changed
          FROM reconcile.tracked_columns t
         WHERE t.table_key = TG_ARGV[0];
        -- A record id newly linked to this row: its portal values have never been compared.
        changed := changed OR (old_row ->> TG_ARGV[1]) IS DISTINCT FROM record_id;
    ELSE
        SELECT coalesce(bool_or(coalesce(new_row -> t.column_name, 'null'::jsonb) <> 'null'::jsonb),
                        false)
          INTO changed
          FROM reconcile.tracked_columns t
         WHERE t.table_key = TG_ARGV[0];
    END IF;
    IF changed THEN
        INSERT INTO reconcile.sync_state AS s
               (table_key, airtable_record_id, portal_change_counter, portal_changed_at)
        VALUES (TG_ARGV[0], record_id, 1, clock_timestamp())
        ON CONFLICT (table_key, airtable_record_id) DO UPDATE
           SET portal_change_counter = s.portal_change_counter + 1,
               portal_changed_at = excluded.portal_changed_at;
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER reconcile_capture_portal_change
    AFTER INSERT OR UPDATE ON public.leads
    FOR EACH ROW EXECUTE FUNCTION reconcile.capture_portal_change('leads', 'airtable_record_id');
"""

# The demo mapping's portal-owned columns; the engine rewrites this list from the mapping it runs
# with (`engine.mapping_store.register`), so a changed mapping needs no migration.
DEFAULT_TRACKED_COLUMNS = """
INSERT INTO reconcile.tracked_columns (table_key, column_name) VALUES
    ('leads', 'claimed_by'), ('leads', 'claimed_at'), ('leads', 'notes'),
    ('leads', 'processing_status'), ('leads', 'campaign_id')
ON CONFLICT DO NOTHING;
"""


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS reconcile")
    op.execute(PORTAL_LEADS)
    op.execute(BOOKKEEPING)
    op.execute(CAPTURE_TRIGGER)
    op.execute(DEFAULT_TRACKED_COLUMNS)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS reconcile_capture_portal_change ON public.leads")
    op.execute("DROP SCHEMA reconcile CASCADE")
