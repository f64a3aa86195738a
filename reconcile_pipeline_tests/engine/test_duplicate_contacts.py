"""The duplicate-contacts check against real PostgreSQL: live leads sharing an e-mail (any case)
or a phone (any formatting) are reported with their sorted ids; soft-deleted leads are not live;
a portal row with no sync state is. A randomised table is checked against a plain Python
reading of the same rows."""

import dataclasses
import datetime as dt
import random
import re

from sqlalchemy import text

from reconcile_pipeline.engine import invariants
from reconcile_pipeline.engine.repository import Repository
from reconcile_pipeline_tests.engine.conftest import BASE, TABLE
from reconcile_pipeline_tests.engine.test_end_to_end import LEAD, portal_write
from reconcile_pipeline_tests.engine.test_trust import now, run_window
from reconcile_pipeline_tests.mappings import LEADS_MAPPING


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
    assert invariants.duplicate_contacts(repo).summary == (
        "2 e-mails/phones are shared by several live leads"
    )

    _soft_delete(engine, e)  # deleted in Airtable: no longer a live lead
    _portal_only_lead(engine, "recPortalOnly0001", "SHARED@example.com")  # no sync state: live
    assert _reported(repo) == {
        ("email", "shared@example.com"): sorted([a, b, "recPortalOnly0001"]),
        ("phone", "+15550100000"): sorted([c, d]),
    }

    _soft_delete(engine, a, b, d)  # one live holder left of each: nothing shared
    finding = invariants.duplicate_contacts(repo)
    assert (finding.passed, finding.count) == (True, 0)
    assert finding.summary == "no live leads share an e-mail or phone"
    assert lone  # a lead sharing nothing is never reported


def test_on_a_table_clients_share_only_the_client_s_own_rows_count(emulator, engine, client):
    """A portal table several clients share (a client column): an e-mail held once by each of
    two clients is no duplicate; twice within one client is, for that client only."""
    acme, globex = (
        dataclasses.replace(
            LEADS_MAPPING,
            fields=tuple(f for f in LEADS_MAPPING.fields if f.column != "client_id"),
            client_column="client_id",
            client_value=value,
        )
        for value in ("acme", "globex")
    )
    repo = Repository(engine, acme)
    repo.register_tracked_columns()
    ids = _pull_all(emulator, repo, client, [{"Email": "one@example.com"}])
    with engine.begin() as conn:
        for record_id, client_id in (("recGlobexOne00001", "globex"), ("recAcmeTwo000001", "acme")):
            conn.execute(
                text(
                    "INSERT INTO leads (airtable_record_id, email, client_id) "
                    "VALUES (:r, 'one@example.com', :c)"
                ),
                {"r": record_id, "c": client_id},
            )

    assert _reported(repo) == {("email", "one@example.com"): sorted([ids[0], "recAcmeTwo000001"])}
    assert invariants.duplicate_contacts(Repository(engine, globex)).passed
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM leads WHERE airtable_record_id = 'recAcmeTwo000001'"))
    # Held once by each client: nothing shared within either.
    assert invariants.duplicate_contacts(repo).passed


def test_a_mapping_without_an_e_mail_or_phone_column_has_nothing_to_compare(engine):
    without_contacts = dataclasses.replace(
        LEADS_MAPPING,
        fields=tuple(f for f in LEADS_MAPPING.fields if f.column not in ("email", "phone")),
    )

    finding = invariants.duplicate_contacts(Repository(engine, without_contacts))

    assert (finding.passed, finding.count) == (True, 0)
    assert finding.summary == "no e-mail or phone column is mapped"


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
