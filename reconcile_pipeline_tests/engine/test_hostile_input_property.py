"""Issue 11 A4, as a property: whatever JSON Airtable returns for any field of any kind, no input
fails a batch. Each record is stored losslessly in the raw snapshot, every field either syncs
or is held in quarantine with a reason, and the valid records of the batch sync (DESIGN §3.5).

Real PostgreSQL; the records go straight to the engine (the emulator's serving of hostile values
over HTTP is tested in the airtable tests and test_trust.py)."""

import datetime as dt
import math
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.convert import ascii_json
from reconcile_pipeline.engine.pull import apply_records
from reconcile_pipeline_tests.mappings import LEADS_MAPPING

HOSTILE_TEXT = st.text(
    alphabet=st.characters(exclude_categories=()),  # surrogates and NUL included
    max_size=12,
)
DATE_LIKE = st.one_of(
    st.sampled_from(
        [
            "9999-12-31T23:59:59-14:00",
            "0001-01-01T00:00:00+14:00",
            "2026-02-30",
            "2026-11-30T10:00:00Z",
            "2026-11-30",
            "T",
            "",
        ]
    ),
    st.datetimes(
        min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31), timezones=st.none()
    ).map(lambda d: d.isoformat() + "+14:00"),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    HOSTILE_TEXT,
    DATE_LIKE,
    st.sampled_from([{"specialValue": "NaN"}, {"error": "#ERROR!"}, "x" * 300]),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(HOSTILE_TEXT, children, max_size=3)
    ),
    max_leaves=6,
)
NAMES = [spec.airtable_name for spec in LEADS_MAPPING.fields] + ["Last Modified"]
FIELDS = st.fixed_dictionaries({}, optional={name: JSON_VALUES for name in NAMES})
RECORD = st.fixed_dictionaries(
    {"fields": st.one_of(FIELDS, FIELDS, FIELDS, JSON_VALUES)},
    optional={"createdTime": st.one_of(DATE_LIKE, JSON_VALUES)},
)


@settings(
    max_examples=100,
    deadline=None,
    # The same 100 examples every run, so CI is reproducible; a failure a random run once found
    # (years below 1000) is pinned in test_convert.py.
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(records=st.lists(RECORD, min_size=1, max_size=6))
def test_no_input_fails_a_batch(engine, repo, records):
    for record in records:
        record["id"] = "rec" + uuid.uuid4().hex[:14]
    good = {
        "id": "rec" + uuid.uuid4().hex[:14],
        "createdTime": "2026-11-30T10:00:00.000Z",
        "fields": {"Email": "valid@example.com", "Status": "New"},
    }
    run = RunContext(run_id=f"prop-{uuid.uuid4().hex[:8]}")

    result = apply_records(repo, [*records, good], run)  # must not raise

    assert result.pulled == len(records) + 1
    with engine.connect() as conn:
        stored = conn.execute(
            text(
                "SELECT airtable_record_id, fields, raw_record FROM reconcile.airtable_snapshots "
                "WHERE run_id = :run"
            ),
            {"run": run.run_id},
        ).all()
        email = conn.execute(
            text("SELECT email FROM leads WHERE airtable_record_id = :r"), {"r": good["id"]}
        ).scalar_one()
    assert email == "valid@example.com"  # the valid record of the batch synced
    # Lossless: every record is in the snapshot, as jsonb or as text that reads back exactly.
    by_id = {rid: (fields, raw) for rid, fields, raw in stored}
    for record in records:
        fields, raw = by_id[record["id"]]
        if raw is not None:
            assert raw == ascii_json(record)
        else:
            assert _same(fields, record["fields"])


def _same(stored, original) -> bool:
    """Equality as jsonb keeps it (numbers compare by value; jsonb cannot hold NaN, so the
    snapshot never stores one as jsonb)."""
    if isinstance(original, float) and isinstance(stored, int | float):
        return math.isclose(stored, original) or stored == original
    if isinstance(original, dict):
        return (
            isinstance(stored, dict)
            and stored.keys() == original.keys()
            and all(_same(stored[k], v) for k, v in original.items())
        )
    if isinstance(original, list):
        return (
            isinstance(stored, list)
            and len(stored) == len(original)
            and all(_same(a, b) for a, b in zip(stored, original, strict=True))
        )
    return stored == original
