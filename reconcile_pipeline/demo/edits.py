"""Simulated activity on both sides: portal users (SQL on the leads table, untagged, as the
portal's API would write) and Airtable automations (edits through the emulator)."""

import datetime as dt
import random

from sqlalchemy import text
from sqlalchemy.engine import Engine

from reconcile_pipeline.demo.environment import DEMO_BASE_ID, DEMO_TABLE

REPS = ["ana@portal", "bo@portal", "cy@portal", "dee@portal"]


def _linked_ids(engine: Engine, limit: int, rng: random.Random) -> list[str]:
    with engine.connect() as conn:
        ids = list(
            conn.execute(
                text(
                    "SELECT airtable_record_id FROM leads WHERE airtable_record_id IS NOT NULL "
                    "ORDER BY airtable_record_id"
                )
            ).scalars()
        )
    rng.shuffle(ids)
    return ids[:limit]


def portal_edit(engine: Engine, record_id: str, **values) -> None:
    assignments = ", ".join(f"{column} = :{column}" for column in values)
    with engine.begin() as conn:
        conn.execute(
            text(f"UPDATE leads SET {assignments} WHERE airtable_record_id = :rid"),
            {"rid": record_id, **values},
        )


def burst(engine: Engine, emulator, seed: int = 11) -> dict[str, int]:
    """Claims, notes and removals in the portal; status and SMS changes in Airtable; one true
    conflict; one record Airtable holds that we cannot map. Returns what was done."""
    rng = random.Random(seed)
    ids = _linked_ids(engine, 80, rng)
    now = dt.datetime.now(dt.UTC)
    done = {
        "portal_claims": 0,
        "portal_notes": 0,
        "portal_removals": 0,
        "airtable_status_changes": 0,
        "airtable_sms_changes": 0,
    }
    for rid in ids[:20]:
        portal_edit(engine, rid, claimed_by=rng.choice(REPS), claimed_at=now)
        done["portal_claims"] += 1
    for rid in ids[20:30]:
        portal_edit(engine, rid, notes=f"Called on {now:%b %d}, wants pricing")
        done["portal_notes"] += 1
    for rid in ids[30:35]:
        portal_edit(engine, rid, processing_status="Removed", campaign_id=None)
        done["portal_removals"] += 1
    for rid in ids[35:55]:
        emulator.update_record_fields(
            DEMO_BASE_ID, DEMO_TABLE, rid, {"Status": rng.choice(["Engaged", "Qualified"])}
        )
        done["airtable_status_changes"] += 1
    for rid in ids[55:75]:
        emulator.update_record_fields(
            DEMO_BASE_ID,
            DEMO_TABLE,
            rid,
            {"SMS Sent Count": rng.randint(3, 9), "SMS Last Sent At": now.isoformat()},
        )
        done["airtable_sms_changes"] += 1
    conflict = ids[75]
    portal_edit(engine, conflict, claimed_by="ana@portal")
    emulator.update_record_fields(
        DEMO_BASE_ID, DEMO_TABLE, conflict, {"Claimed By": "automation@airtable"}
    )
    invalid = ids[76]
    emulator.update_record_fields(DEMO_BASE_ID, DEMO_TABLE, invalid, {"Company": "X" * 300})
    done["true_conflicts"] = 1
    done["invalid_records"] = 1
    return done


def trickle_step(engine: Engine, emulator, rng: random.Random) -> str:
    """One small edit on a random side (the UI's live background activity)."""
    [rid] = _linked_ids(engine, 1, rng) or [None]
    if rid is None:
        return "no leads yet"
    if rng.random() < 0.5:
        portal_edit(engine, rid, claimed_by=rng.choice(REPS), claimed_at=dt.datetime.now(dt.UTC))
        return f"portal claimed {rid}"
    emulator.update_record_fields(
        DEMO_BASE_ID, DEMO_TABLE, rid, {"SMS Sent Count": rng.randint(0, 9)}
    )
    return f"airtable SMS count changed on {rid}"
