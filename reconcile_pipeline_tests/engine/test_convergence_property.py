"""Property: whatever the interleaving of Airtable edits, portal edits, Airtable deletes and
reconcile runs, once the edits stop two runs bring both sides into agreement on every mapped
field (Airtable winning each true conflict, and each recorded), and a further run writes nothing
on either side."""

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from reconcile_pipeline.engine.context import RunContext
from reconcile_pipeline.engine.convert import from_airtable, from_postgres
from reconcile_pipeline.engine.sweep import delete_sweep
from reconcile_pipeline_tests.engine.conftest import BASE, TABLE

RECORDS = 3
# Portal-owned fields with the airtable_wins policy, and one Airtable-owned field.
FIELDS = {"claimed_by": "Claimed By", "processing_status": "Processing Status", "status": "Status"}
VALUES = {
    "claimed_by": [None, "ana", "bo", "cy"],
    "processing_status": ["Active", "Paused", "Removed"],
    "status": ["New", "Engaged", "Qualified"],
}
PORTAL_COLUMNS = ["claimed_by", "processing_status"]

airtable_edit = st.tuples(
    st.just("airtable"), st.integers(0, RECORDS - 1), st.sampled_from(list(FIELDS))
).flatmap(
    lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.just(t[2]), st.sampled_from(VALUES[t[2]]))
)
portal_edit = st.tuples(
    st.just("portal"), st.integers(0, RECORDS - 1), st.sampled_from(PORTAL_COLUMNS)
).flatmap(
    lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.just(t[2]), st.sampled_from(VALUES[t[2]]))
)
steps = st.lists(
    st.one_of(
        airtable_edit,
        portal_edit,
        st.just(("reconcile",)),
        # The last record is never deleted: a sweep that finds Airtable empty refuses by
        # design (test_sweep_refuses_when_airtable_lists_nothing).
        st.tuples(st.just("delete"), st.integers(0, RECORDS - 2)),
    ),
    min_size=1,
    max_size=10,
)


def reset(engine, emulator) -> list[str]:
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE leads, reconcile.sync_state, reconcile.airtable_snapshots, "
                "reconcile.conflicts, reconcile.change_history, reconcile.quarantine, "
                "reconcile.push_results, reconcile.runs"
            )
        )
    emulator.clear_records()
    return emulator.seed_records(
        BASE,
        TABLE,
        [
            {"Email": f"p{i}@example.com", "Status": "New", "Processing Status": "Active"}
            for i in range(RECORDS)
        ],
    )


def full_cycle(reconcile, repo, client) -> None:
    reconcile()
    delete_sweep(repo, client, RunContext(run_id=f"sweep-{uuid.uuid4().hex[:6]}"))


def airtable_state(emulator) -> dict[str, dict]:
    return {r["id"]: r["fields"] for r in emulator.all_records(BASE, TABLE)}


def writes(emulator) -> int:
    counts = emulator.request_log()["counts"]
    return sum(n for key, n in counts.items() if key.startswith(("PATCH", "PUT", "DELETE")))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=steps)
def test_any_interleaving_converges_and_then_stays_quiet(
    script, emulator, engine, repo, client, reconcile
):
    ids = reset(engine, emulator)
    reconcile()
    deleted: set[str] = set()
    # The model: per record and portal field, what each side last agreed and holds now.
    agreed = {
        rid: {c: VALUES[c][0] if c != "claimed_by" else None for c in PORTAL_COLUMNS} for rid in ids
    }
    for rid in ids:
        agreed[rid]["processing_status"] = "Active"
    expected_conflicts = 0
    portal_now = {rid: dict(agreed[rid]) for rid in ids}
    airtable_now = {rid: dict(agreed[rid]) for rid in ids}

    def settle_model() -> int:
        conflicts = 0
        for rid in ids:
            if rid in deleted:
                continue
            for column in PORTAL_COLUMNS:
                base, a, p = agreed[rid][column], airtable_now[rid][column], portal_now[rid][column]
                if a != base and p != base and a != p:
                    conflicts += 1
                    portal_now[rid][column] = a
                value = a if a != base else p
                agreed[rid][column] = airtable_now[rid][column] = portal_now[rid][column] = value
        return conflicts

    for step in script:
        if step[0] == "reconcile":
            expected_conflicts += settle_model()
            full_cycle(reconcile, repo, client)
            continue
        if step[0] == "delete":
            rid = ids[step[1]]
            if rid not in deleted:
                emulator.delete_record(BASE, TABLE, rid)
                deleted.add(rid)
            continue
        side, index, column, value = step
        rid = ids[index]
        if rid in deleted:
            continue
        if side == "airtable":
            emulator.update_record_fields(BASE, TABLE, rid, {FIELDS[column]: value})
            if column in airtable_now[rid]:
                airtable_now[rid][column] = value
        else:
            with engine.begin() as conn:
                conn.execute(
                    text(f"UPDATE leads SET {column} = :v WHERE airtable_record_id = :r"),
                    {"v": value, "r": rid},
                )
            portal_now[rid][column] = value

    expected_conflicts += settle_model()
    full_cycle(reconcile, repo, client)
    full_cycle(reconcile, repo, client)

    airtable = airtable_state(emulator)
    mapping = repo.mapping.by_column()
    with engine.connect() as conn:
        leads = {
            row.airtable_record_id: row._mapping
            for row in conn.execute(text("SELECT * FROM leads"))
        }
        deleted_marked = set(
            conn.execute(
                text(
                    "SELECT airtable_record_id FROM reconcile.sync_state "
                    "WHERE deleted_at IS NOT NULL"
                )
            ).scalars()
        )
        conflicts = conn.execute(text("SELECT count(*) FROM reconcile.conflicts")).scalar_one()
    assert deleted_marked == deleted
    assert set(airtable) == set(ids) - deleted
    for rid, fields in airtable.items():
        for column, name in FIELDS.items():
            spec = mapping[column]
            assert from_postgres(spec, leads[rid][column]) == from_airtable(spec, fields.get(name))
            if column in PORTAL_COLUMNS:
                assert from_airtable(spec, fields.get(name)) == agreed[rid][column]
    assert conflicts == expected_conflicts

    writes_before = writes(emulator)
    with engine.connect() as conn:
        history_before = conn.execute(
            text("SELECT count(*) FROM reconcile.change_history")
        ).scalar_one()
    full_cycle(reconcile, repo, client)
    with engine.connect() as conn:
        history_after = conn.execute(
            text("SELECT count(*) FROM reconcile.change_history")
        ).scalar_one()
    assert writes(emulator) == writes_before
    assert history_after == history_before
