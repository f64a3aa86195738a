"""The duplicate-contacts check against real PostgreSQL: live leads sharing an e-mail (any case)
or a phone (any formatting) are reported with their sorted ids; soft-deleted leads are not live;
a portal row with no sync state is. A randomised table is checked against a plain Python
reading of the same rows."""

import datetime as dt
import random
import re

from sqlalchemy import text

from reconcile_pipeline.engine import invariants
from reconcile_pipeline_tests.engine.conftest import BASE, TABLE
from reconcile_pipeline_tests.engine.test_end_to_end import LEAD, portal_write
from reconcile_pipeline_tests.engine.test_trust import now, run_window


def _pull_all(emulator, repo, client, leads: list[dict]) -> list[str]:
    ids = emulator.seed_records(BASE, TABLE, [{**LEAD, **fields} for fields in leads])
    t0 = now()
    run_window(repo, client, t0 - dt.timedelta(minutes=20), t0)
    return ids


def _soft_delete(engine, *record_ids: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE reconcile.sync_state SET deleted_at = now() "
                "WHERE airtable_record_id = ANY(:ids)"
            ),
            {"ids": list(record_ids)},
        )


def _portal_only_lead(engine, record_id: str, email: str) -> None:
    """A row the portal holds under an Airtable id the reconciler never recorded."""
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO leads (airtable_record_id, email) VALUES (:r, :e)"),
            {"r": record_id, "e": email},
        )


def _reported(repo) -> dict[tuple[str, str], list[str]]:
    finding = invariants.duplicate_contacts(repo)
    assert finding.passed == (finding.count == 0)
    return {(row["kind"], row["value"]): row["ids"].split(", ") for row in finding.examples}


def test_shared_contacts_are_reported_among_live_leads_only(emulator, engine, client, repo):
    a, b, c, d, e, lone = _pull_all(
        emulator,
        repo,
        client,
        [
            {"Email": "Shared@Example.com"},
            {"Email": "shared@example.com"},
            {"Email": "c@example.com", "Phone": "+1 (555) 010-0000"},
            {"Email": "d@example.com", "Phone": "+15550100000"},
            {"Email": "e@example.com", "Phone": "+1 555 010 0000"},
            {"Email": "lone@example.com", "Phone": "+15550109999"},
        ],
    )
    assert _reported(repo) == {
        ("email", "shared@example.com"): sorted([a, b]),
        ("phone", "+15550100000"): sorted([c, d, e]),
    }

    _soft_delete(engine, e)  # deleted in Airtable: no longer a live lead
    _portal_only_lead(engine, "recPortalOnly0001", "SHARED@example.com")  # no sync state: live
    assert _reported(repo) == {
        ("email", "shared@example.com"): sorted([a, b, "recPortalOnly0001"]),
        ("phone", "+15550100000"): sorted([c, d]),
    }

    _soft_delete(engine, a, b, d)  # one live holder left of each: nothing shared
    finding = invariants.duplicate_contacts(repo)
    assert finding.passed and finding.count == 0
    assert lone  # a lead sharing nothing is never reported


def test_the_check_agrees_with_a_plain_reading_of_a_random_table(emulator, engine, client, repo):
    rng = random.Random(15)
    emails = ["ann@example.com", "Ann@Example.com", "bo@example.com", "cy@example.com"]
    phones = ["+1 (555) 010-0001", "+15550100001", "555-010-0002", "5550100002", "+44 20 7946"]
    leads = []
    for i in range(60):
        fields = {"Email": rng.choice(emails) if rng.random() < 0.5 else f"u{i}@example.com"}
        if rng.random() < 0.6:
            fields["Phone"] = rng.choice(phones)
        leads.append(fields)
    ids = _pull_all(emulator, repo, client, leads)
    _soft_delete(engine, *rng.sample(ids, 15))
    for record_id in rng.sample(ids, 5):  # the portal clears a phone
        portal_write(engine, record_id, phone=None)

    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT l.airtable_record_id, l.email, l.phone FROM leads l "
                "LEFT JOIN reconcile.sync_state s ON s.airtable_record_id = l.airtable_record_id "
                "WHERE s.deleted_at IS NULL"
            )
        ).all()
    expected: dict[tuple[str, str], list[str]] = {}
    for record_id, email, phone in rows:
        if email is not None:
            expected.setdefault(("email", email.lower()), []).append(record_id)
        if phone is not None:
            expected.setdefault(("phone", re.sub(r"[^0-9+]", "", phone)), []).append(record_id)
    expected = {key: sorted(held) for key, held in expected.items() if len(held) > 1}

    assert len(expected) >= 4  # the draw shares e-mails and phones both
    assert {kind for kind, _ in expected} == {"email", "phone"}
    # The examples list each group's first five ids; compare the groups that fit.
    reported = _reported(repo)
    assert set(reported) == set(expected)
    for key, held in expected.items():
        assert reported[key] == held[:5]
    assert invariants.duplicate_contacts(repo).count == len(expected)
