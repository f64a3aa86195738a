"""Trust on every failure path: high-water marks, lossless snapshots, field-level quarantine,
transaction-tagged change capture, portal writes to Airtable-owned columns, visible soft deletes.

Revision ID: 0004_trust
Revises: 0003_sync_state_half_pages
Create Date: 2026-11-30

- `reconcile.high_water_marks`: per table, the time up to which pulls have committed without a
  gap (DESIGN §3.6); `reconcile.pull_coverage`: every pull's interval, committed or not, which
  the `pull_continuity` check reads.
- `airtable_snapshots.fields` may be NULL: a record PostgreSQL's jsonb refuses (NUL bytes, lone
  surrogates, NaN) is kept losslessly as ASCII JSON text in `raw_record`.
- `quarantine.field`: a hold is per field (`*` = the whole record), so a record's valid fields
  keep syncing; `raw_value` keeps what Airtable (or the portal) held.
- `tracked_columns.owner`: the trigger watches every mapped column; a portal write to an
  Airtable-owned column is counted apart (`owned_write_counter`) and reverted by the next run.
- `sync_state.portal_changed_xid`: the transaction that last bumped the change counter, so the
  loop check tells an echo (bumped inside one of the reconciler's own transactions) from a
  genuine portal edit that raced the merge; `runs.transaction_ids` lists a stage's transactions.
- `push_results.outcome` gains `deleted` (a by-id read proved the record gone) and `held` (a
  portal value the mapping rejects, never sent).
"""

import importlib.util
from pathlib import Path

from alembic import op

revision = "0004_trust"
down_revision = "0003_sync_state_half_pages"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE reconcile.high_water_marks (
    table_key   text PRIMARY KEY,
    mark        timestamptz NOT NULL,
    run_id      text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE reconcile.high_water_marks IS
    'Per synced table: pulls have committed without a gap up to `mark` (DESIGN 3.6).';

CREATE TABLE reconcile.pull_coverage (
    id            bigserial PRIMARY KEY,
    table_key     text NOT NULL,
    run_id        text,
    pull_start    timestamptz,          -- NULL: a full pull (from the beginning of time)
    pull_end      timestamptz NOT NULL,
    window_start  timestamptz,
    window_end    timestamptz,
    listed_at     timestamptz NOT NULL DEFAULT now(),
    committed_at  timestamptz
);
CREATE INDEX pull_coverage_committed_idx
    ON reconcile.pull_coverage (table_key, pull_end) WHERE committed_at IS NOT NULL;
CREATE INDEX pull_coverage_run_idx ON reconcile.pull_coverage (run_id);

ALTER TABLE reconcile.airtable_snapshots ALTER COLUMN fields DROP NOT NULL;
ALTER TABLE reconcile.airtable_snapshots ADD COLUMN raw_record text;
COMMENT ON COLUMN reconcile.airtable_snapshots.raw_record IS
    'The whole record as ASCII JSON text when jsonb refuses it (NUL, lone surrogate, NaN).';

ALTER TABLE reconcile.quarantine ADD COLUMN field text NOT NULL DEFAULT '*';
ALTER TABLE reconcile.quarantine ADD COLUMN raw_value jsonb;
DROP INDEX reconcile.quarantine_open_uidx;
CREATE UNIQUE INDEX quarantine_open_uidx ON reconcile.quarantine
    (table_key, airtable_record_id, direction, field) WHERE released_at IS NULL;

ALTER TABLE reconcile.tracked_columns ADD COLUMN owner text NOT NULL DEFAULT 'portal'
    CHECK (owner IN ('portal', 'airtable'));

ALTER TABLE reconcile.sync_state ADD COLUMN portal_changed_xid xid8;
ALTER TABLE reconcile.sync_state ADD COLUMN owned_write_counter bigint NOT NULL DEFAULT 0;
ALTER TABLE reconcile.sync_state ADD COLUMN owned_reverted_counter bigint NOT NULL DEFAULT 0;
ALTER TABLE reconcile.sync_state ADD COLUMN owned_write_at timestamptz;
ALTER TABLE reconcile.sync_state ADD COLUMN owned_write_columns text[];
CREATE INDEX sync_state_owned_write_idx ON reconcile.sync_state (table_key)
    WHERE owned_write_counter > owned_reverted_counter;

ALTER TABLE reconcile.runs ADD COLUMN transaction_ids text[];

ALTER TABLE reconcile.push_results DROP CONSTRAINT push_results_outcome_check;
ALTER TABLE reconcile.push_results ADD CONSTRAINT push_results_outcome_check
    CHECK (outcome IN ('updated', 'skipped', 'conflict', 'failed', 'quarantined', 'deleted',
                       'held'));

CREATE OR REPLACE FUNCTION reconcile.capture_portal_change() RETURNS trigger
LANGUAGE plpgsql AS $fn$
-- Bumps the per-record portal change counter when a portal-owned column changes, and the
-- owned-write counter when the portal writes an Airtable-owned column, whatever code path wrote
-- it, unless the transaction is tagged as the reconciler's own (SET LOCAL reconcile.origin =
-- 'reconciler'). Records the transaction, so an echo can be told from a genuine edit.
-- TG_ARGV[0] is the table key, TG_ARGV[1] the column holding the Airtable record id.
DECLARE
    new_row jsonb;
    old_row jsonb;
    record_id text;
    portal_changed boolean := false;
    owned_changed boolean := false;
    owned_columns text[];
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
        SELECT coalesce(bool_or(t.owner = 'portal' AND
                                new_row -> t.column_name IS DISTINCT FROM old_row -> t.column_name),
                        false),
               array_agg(t.column_name ORDER BY t.column_name) FILTER (WHERE t.owner = 'airtable'
                   AND new_row -> t.column_name IS DISTINCT FROM old_row -> t.column_name)
          INTO portal_changed, owned_columns
          FROM reconcile.tracked_columns t
         WHERE t.table_key = TG_ARGV[0];
        -- A record id newly linked to this row: its portal values have never been compared.
        portal_changed := portal_changed OR (old_row ->> TG_ARGV[1]) IS DISTINCT FROM record_id;
        owned_changed := owned_columns IS NOT NULL;
    ELSE
        SELECT coalesce(bool_or(t.owner = 'portal' AND
                                coalesce(new_row -> t.column_name, 'null'::jsonb) <> 'null'::jsonb),
                        false)
          INTO portal_changed
          FROM reconcile.tracked_columns t
         WHERE t.table_key = TG_ARGV[0];
    END IF;
    IF portal_changed OR owned_changed THEN
        INSERT INTO reconcile.sync_state AS s
               (table_key, airtable_record_id, portal_change_counter, portal_changed_at,
                portal_changed_xid, owned_write_counter, owned_write_at, owned_write_columns)
        VALUES (TG_ARGV[0], record_id, portal_changed::int,
                CASE WHEN portal_changed THEN clock_timestamp() END,
                CASE WHEN portal_changed THEN pg_current_xact_id() END,
                owned_changed::int, CASE WHEN owned_changed THEN clock_timestamp() END,
                owned_columns)
        ON CONFLICT (table_key, airtable_record_id) DO UPDATE
           SET portal_change_counter = s.portal_change_counter + excluded.portal_change_counter,
               portal_changed_at = coalesce(excluded.portal_changed_at, s.portal_changed_at),
               portal_changed_xid = coalesce(excluded.portal_changed_xid, s.portal_changed_xid),
               owned_write_counter = s.owned_write_counter + excluded.owned_write_counter,
               owned_write_at = coalesce(excluded.owned_write_at, s.owned_write_at),
               owned_write_columns = ARRAY(
                   SELECT DISTINCT c FROM unnest(array_cat(s.owned_write_columns,
                                                           excluded.owned_write_columns)) AS c
                   ORDER BY c);
    END IF;
    RETURN NULL;
END
$fn$;
"""

DOWNGRADE = r"""
DROP TABLE reconcile.high_water_marks;
DROP TABLE reconcile.pull_coverage;
DELETE FROM reconcile.airtable_snapshots WHERE fields IS NULL;
ALTER TABLE reconcile.airtable_snapshots ALTER COLUMN fields SET NOT NULL;
ALTER TABLE reconcile.airtable_snapshots DROP COLUMN raw_record;
DROP INDEX reconcile.quarantine_open_uidx;
DELETE FROM reconcile.quarantine q WHERE released_at IS NULL AND EXISTS (
    SELECT 1 FROM reconcile.quarantine o WHERE o.released_at IS NULL AND o.id < q.id
    AND o.table_key = q.table_key AND o.airtable_record_id = q.airtable_record_id
    AND o.direction = q.direction);
ALTER TABLE reconcile.quarantine DROP COLUMN field;
ALTER TABLE reconcile.quarantine DROP COLUMN raw_value;
CREATE UNIQUE INDEX quarantine_open_uidx ON reconcile.quarantine
    (table_key, airtable_record_id, direction) WHERE released_at IS NULL;
DELETE FROM reconcile.tracked_columns WHERE owner = 'airtable';
ALTER TABLE reconcile.tracked_columns DROP COLUMN owner;
ALTER TABLE reconcile.sync_state DROP COLUMN portal_changed_xid;
ALTER TABLE reconcile.sync_state DROP COLUMN owned_write_counter;
ALTER TABLE reconcile.sync_state DROP COLUMN owned_reverted_counter;
ALTER TABLE reconcile.sync_state DROP COLUMN owned_write_at;
ALTER TABLE reconcile.sync_state DROP COLUMN owned_write_columns;
ALTER TABLE reconcile.runs DROP COLUMN transaction_ids;
UPDATE reconcile.push_results SET outcome = 'skipped' WHERE outcome IN ('deleted', 'held');
ALTER TABLE reconcile.push_results DROP CONSTRAINT push_results_outcome_check;
ALTER TABLE reconcile.push_results ADD CONSTRAINT push_results_outcome_check
    CHECK (outcome IN ('updated', 'skipped', 'conflict', 'failed', 'quarantined'));
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
    # Back to 0001's function body (it knows none of the columns dropped above).
    initial_path = Path(__file__).with_name("0001_initial.py")
    spec = importlib.util.spec_from_file_location("reconcile_migration_0001", initial_path)
    assert spec is not None and spec.loader is not None
    initial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(initial)
    body = initial.CAPTURE_TRIGGER.split("CREATE TRIGGER")[0]
    op.execute(body.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
