"""The review console over HTTP against a real PostgreSQL: read-only without a token, sign-in,
CSRF, escaping, resolving conflicts through the engine's path (the portal row changes, the
capture trigger counts it, the history audits it), accepting recommendations, retrying and
releasing holds, a record's history found by e-mail, filters and pages."""

import datetime as dt
import json
import re

import pytest
from sqlalchemy import create_engine, text

from reconcile_pipeline.config.load import ConfigError
from reconcile_pipeline.console import console_from_environment, running_console
from reconcile_pipeline_tests.console.conftest import (
    CLIENT,
    NOW,
    OTHER,
    RECORD,
    SCRIPT,
    TABLE,
    TOKEN,
    Browser,
    scalar,
)

ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def dirty(engine, record_id: str = RECORD) -> bool:
    return scalar(
        engine,
        "SELECT portal_change_counter > pushed_counter FROM reconcile.sync_state "
        "WHERE client = :c AND table_key = :t AND airtable_record_id = :r",
        c=CLIENT,
        t=TABLE,
        r=record_id,
    )


def lead(engine, column: str, record_id: str = RECORD):
    return scalar(
        engine,
        f"SELECT {column} FROM public.leads WHERE airtable_record_id = :r",
        r=record_id,
    )


def conflict(engine, conflict_id: int) -> tuple:
    with engine.connect() as conn:
        return tuple(
            conn.execute(
                text(
                    "SELECT status, resolution, resolved_value FROM reconcile.conflicts "
                    "WHERE id = :id"
                ),
                {"id": conflict_id},
            ).one()
        )


def open_holds(engine) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT id FROM reconcile.quarantine WHERE released_at IS NULL ORDER BY id")
            ).scalars()
        )


PAGES = ["/", "/conflicts", "/quarantine", "/history", f"/history/{RECORD}"]


# ----- read-only ---------------------------------------------------------------------------------


def test_without_a_token_every_page_reads_and_no_write_is_offered_or_accepted(
    serve_console, seeded, engine
):
    console = serve_console(token=None)
    for path in [*PAGES, f"/conflicts/{seeded.conflict_id}"]:
        page = console.get(path)
        assert page.status_code == 200, (path, page.text)
        assert "read-only" in page.text
        assert 'method="post"' not in page.text, path
        assert "csrf" not in page.text
    assert "reconcile_console" not in console.http.cookies  # no session at all
    assert console.get("/signin").status_code == 404

    for path, form in (
        (f"/conflicts/{seeded.conflict_id}/resolve", {"choice": "portal"}),
        ("/conflicts/accept", {"id": seeded.conflict_id}),
        ("/quarantine/release", {"id": seeded.hold_id}),
        ("/quarantine/retry", {"id": seeded.hold_id}),
        ("/signin", {"token": TOKEN}),
    ):
        refused = console.post(path, form)
        assert refused.status_code == 403, path
        assert "read-only" in refused.text
    assert conflict(engine, seeded.conflict_id)[0] == "open"
    assert lead(engine, "claimed_by") == "bob"
    assert open_holds(engine) == [seeded.hold_id]


def test_with_a_token_but_not_signed_in_pages_offer_sign_in_and_writes_are_refused(
    console, seeded, engine
):
    page = console.get(f"/conflicts/{seeded.conflict_id}")
    assert "Sign in" in page.text and "Use the portal" not in page.text
    csrf = console.csrf("/signin")  # an anonymous session's token: not enough to write
    refused = console.post(
        f"/conflicts/{seeded.conflict_id}/resolve", {"csrf": csrf, "choice": "portal"}
    )
    assert refused.status_code == 403
    assert "Sign in" in refused.text
    assert conflict(engine, seeded.conflict_id)[0] == "open"


# ----- sign-in and CSRF --------------------------------------------------------------------------


def test_sign_in_needs_the_token_and_gives_a_strict_http_only_session(console, seeded):
    wrong = console.sign_in("not-the-token")
    assert wrong.status_code == 403
    assert "not the console token" in wrong.text
    assert "not-the-token" not in wrong.text
    assert "Use the portal" not in console.get("/conflicts").text

    before = console.http.cookies.get("reconcile_console")
    signed = console.sign_in()
    assert signed.status_code == 303
    assert signed.headers["location"].startswith("/")
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    after = console.http.cookies.get("reconcile_console")
    assert after != before  # a new session id on sign-in

    page = console.get("/conflicts")
    assert "Use the portal" in page.text and "Sign out" in page.text
    for path in [*PAGES, "/signin", f"/conflicts/{seeded.conflict_id}"]:
        assert TOKEN not in console.get(path).text  # never rendered

    out = console.post("/signout", {"csrf": console.csrf()})
    assert out.status_code == 303
    assert "Use the portal" not in console.get("/conflicts").text


def test_a_post_without_the_sessions_csrf_token_is_refused(
    operator: Browser, serve_console, seeded, engine
):
    path = f"/conflicts/{seeded.conflict_id}/resolve"
    assert operator.post(path, {"choice": "portal"}).status_code == 403
    assert operator.post(path, {"choice": "portal", "csrf": "0" * 64}).status_code == 403

    # A token from another visitor's session (same console) is not this session's.
    stranger = Browser(operator.url)
    foreign = stranger.csrf("/signin")
    assert operator.post(path, {"choice": "portal", "csrf": foreign}).status_code == 403

    # The stranger cannot write with its own CSRF token and a copied-but-altered cookie.
    forged = operator.http.cookies.get("reconcile_console")
    payload, _, signature = forged.rpartition(".")
    stranger.http.cookies.set("reconcile_console", payload + "." + "0" * len(signature))
    assert stranger.post(path, {"choice": "portal", "csrf": foreign}).status_code == 403

    # Not a form at all.
    as_json = operator.http.post(
        operator.url + path,
        data=json.dumps({"choice": "portal"}),
        headers={"content-type": "application/json"},
        allow_redirects=False,
    )
    assert as_json.status_code in (400, 403)
    assert conflict(engine, seeded.conflict_id)[0] == "open"
    assert lead(engine, "claimed_by") == "bob"


def test_only_loopback_names_reach_a_console_on_loopback(operator: Browser):
    assert operator.get("/", headers={"host": "attacker.example"}).status_code == 400
    assert operator.get("/", headers={"host": "localhost"}).status_code == 200


def test_every_value_is_escaped_and_pages_forbid_scripts(operator: Browser, seeded, engine):
    with engine.begin() as conn:  # the portal's own note, a raw value on hold, a search
        conn.execute(
            text(
                "UPDATE reconcile.quarantine SET raw_value = CAST(:v AS jsonb), reason = :v "
                "WHERE id = :id"
            ),
            {"v": json.dumps(SCRIPT), "id": seeded.hold_id},
        )
    pages = [
        "/conflicts",
        f"/conflicts/{seeded.notes_conflict_id}",
        "/quarantine",
        f"/history/{RECORD}",
        "/history?q=" + SCRIPT,
        "/conflicts?field=" + SCRIPT,
        "/history/" + SCRIPT.replace("/", "%2F"),
    ]
    for path in pages:
        page = operator.get(path)
        assert page.status_code in (200, 404), (path, page.status_code)
        assert "<script" not in page.text.lower(), path
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src" not in policy
        assert page.headers["x-frame-options"] == "DENY"
    assert ESCAPED in operator.get(f"/conflicts/{seeded.notes_conflict_id}").text
    assert ESCAPED in operator.get("/quarantine").text
    assert ESCAPED in operator.get(f"/history/{RECORD}").text

    # A value typed in the console is stored as typed and shown escaped.
    typed = "<script>alert(2)</script>\nsecond line"
    done = operator.post(
        f"/conflicts/{seeded.notes_conflict_id}/resolve",
        {"csrf": operator.csrf(), "choice": "custom", "value": typed.replace("\n", "\r\n")},
    )
    assert done.status_code == 303
    assert lead(engine, "notes") == typed
    page = operator.get(f"/conflicts/{seeded.notes_conflict_id}").text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page and "<script" not in page


# ----- conflicts ---------------------------------------------------------------------------------


def test_resolving_with_the_portals_value_writes_it_marks_the_record_dirty_and_audits(
    operator: Browser, seeded, engine
):
    assert not dirty(engine)
    page = operator.get(f"/conflicts/{seeded.conflict_id}")
    assert "carol" in page.text and "bob" in page.text and "airtable_wins" in page.text

    done = operator.post(
        f"/conflicts/{seeded.conflict_id}/resolve",
        {"csrf": operator.csrf(), "choice": "portal", "next": "/conflicts"},
    )

    assert done.status_code == 303
    assert done.headers["location"].startswith("/conflicts?")
    assert conflict(engine, seeded.conflict_id) == ("resolved", "portal", "carol")
    assert lead(engine, "claimed_by") == "carol"
    assert dirty(engine)  # the capture trigger counted it: the next run pushes it
    with engine.connect() as conn:
        audit = conn.execute(
            text(
                "SELECT field, old_value, new_value, reason FROM reconcile.change_history "
                "WHERE airtable_record_id = :r ORDER BY id DESC LIMIT 1"
            ),
            {"r": RECORD},
        ).one()
    assert tuple(audit) == ("claimed_by", "bob", "carol", "conflict_resolution:portal")
    shown = operator.get(done.headers["location"]).text
    assert f"Conflict #{seeded.conflict_id} resolved" in shown
    history = operator.get(f"/history/{RECORD}").text
    assert "conflict_resolution:portal" in history

    again = operator.post(
        f"/conflicts/{seeded.conflict_id}/resolve", {"csrf": operator.csrf(), "choice": "airtable"}
    )
    assert again.status_code == 409
    assert "already resolved" in again.text


def test_keeping_airtables_value_changes_nothing_in_the_portal(operator, seeded, engine):
    done = operator.post(
        f"/conflicts/{seeded.conflict_id}/resolve", {"csrf": operator.csrf(), "choice": "airtable"}
    )
    assert done.status_code == 303
    assert conflict(engine, seeded.conflict_id) == ("resolved", "airtable", "bob")
    assert lead(engine, "claimed_by") == "bob"
    assert not dirty(engine)


def test_a_custom_value_the_mapping_would_hold_back_is_refused_with_the_reason(
    operator, seeded, engine
):
    refused = operator.post(
        f"/conflicts/{seeded.conflict_id}/resolve",
        {"csrf": operator.csrf(), "choice": "custom", "value": "x" * 300},
    )
    assert refused.status_code == 400
    assert "longer than 255" in refused.text
    assert conflict(engine, seeded.conflict_id)[0] == "open"
    assert lead(engine, "claimed_by") == "bob" and not dirty(engine)

    done = operator.post(
        f"/conflicts/{seeded.conflict_id}/resolve",
        {"csrf": operator.csrf(), "choice": "custom", "value": "  dora  "},
    )
    assert done.status_code == 303
    assert conflict(engine, seeded.conflict_id) == ("resolved", "custom", "  dora  ")
    assert lead(engine, "claimed_by") == "  dora  " and dirty(engine)


def test_accepting_the_ticked_recommendations_resolves_only_those(operator, seeded, engine):
    page = operator.get("/conflicts").text
    assert page.count('form="accept"') == 2
    done = operator.post(
        "/conflicts/accept", [("csrf", operator.csrf()), ("id", str(seeded.conflict_id))]
    )
    assert done.status_code == 303
    assert conflict(engine, seeded.conflict_id) == ("resolved", "accepted", "bob")
    assert conflict(engine, seeded.notes_conflict_id)[0] == "open"
    assert not dirty(engine)
    assert "1 conflict(s) accepted" in operator.get(done.headers["location"]).text

    # With the filter naming one table, every open conflict of it can be accepted at once.
    page = operator.get(f"/conflicts?client={CLIENT}&table={TABLE}").text
    assert "Accept all 1 open conflicts" in page
    done = operator.post(
        "/conflicts/accept", {"csrf": operator.csrf(), "whole_table": f"{CLIENT}/{TABLE}"}
    )
    assert done.status_code == 303
    assert conflict(engine, seeded.notes_conflict_id)[:2] == ("resolved", "accepted")


def add_conflicts(engine, count: int, field: str = "processing_status", days_ago: int = 0):
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO reconcile.conflicts (client, table_key, airtable_record_id, field, "
                "airtable_value, portal_value, decided_value, policy, decision, detected_at) "
                "SELECT :c, :t, :r, :f, '\"Active\"', '\"Paused\"', '\"Active\"', "
                "'airtable_wins', 'airtable_wins', :at - make_interval(secs => g) "
                "FROM generate_series(1, :n) g"
            ),
            {
                "c": CLIENT,
                "t": TABLE,
                "r": OTHER,
                "f": field,
                "n": count,
                "at": NOW - dt.timedelta(days=days_ago),
            },
        )


def test_conflicts_filter_by_field_table_client_record_status_and_date_and_paginate(
    operator, seeded, engine
):
    add_conflicts(engine, 120)  # today
    add_conflicts(engine, 5, field="campaign_id", days_ago=3)

    def listed(query: str) -> tuple[int, list[int]]:
        page = operator.get("/conflicts" + query)
        assert page.status_code == 200, page.text
        total = int(re.search(r'class="count">(\d+) conflict', page.text).group(1))
        return total, [int(i) for i in re.findall(r'id="conflict-(\d+)"', page.text)]

    total, first = listed("")
    assert total == 127 and len(first) == 50
    _, third = listed("?page=3")
    assert len(third) == 27 and not set(first) & set(third)
    assert "page 3 of 3" in operator.get("/conflicts?page=3").text
    assert listed("?field=processing_status")[0] == 120
    assert listed("?field=campaign_id")[0] == 5
    day = (NOW - dt.timedelta(days=3)).date().isoformat()
    assert listed(f"?since={day}&until={day}")[0] == 5
    assert listed(f"?client={CLIENT}&table={TABLE}&record={RECORD}")[0] == 2
    assert listed("?client=nobody")[0] == 0
    assert listed("?table=campaigns")[0] == 0
    assert listed("?status=resolved")[0] == 0
    assert listed("?status=all")[0] == 127
    bad = operator.get("/conflicts?since=yesterday")
    assert bad.status_code == 200 and "must be a date" in bad.text
    # Pages keep the filter.
    assert (
        "field=processing_status&amp;page=2"
        in operator.get("/conflicts?field=processing_status").text
    )


# ----- quarantine --------------------------------------------------------------------------------


def test_quarantine_shows_reason_field_raw_value_and_since_then_retry_and_release(
    operator, seeded, engine
):
    page = operator.get("/quarantine").text
    assert "Company (company)" in page
    assert "longer than 255" in page
    assert "Initech Initech" in page
    assert "2026-11-30 12:00:00 UTC" in page

    done = operator.post("/quarantine/retry", {"csrf": operator.csrf(), "id": seeded.hold_id})
    assert done.status_code == 303
    assert open_holds(engine) == [seeded.hold_id]  # still held until the next run decides
    mark = scalar(
        engine,
        "SELECT mark FROM reconcile.high_water_marks WHERE client = :c AND table_key = :t",
        c=CLIENT,
        t=TABLE,
    )
    assert mark == NOW - dt.timedelta(days=1)  # moved back to the record's last Airtable edit
    assert "1 hold(s) will be looked at again" in operator.get(done.headers["location"]).text

    done = operator.post(
        "/quarantine/release",
        [("csrf", operator.csrf()), ("id", str(seeded.hold_id)), ("next", "/quarantine")],
    )
    assert done.status_code == 303
    assert open_holds(engine) == []
    assert "Nothing is held" in operator.get("/quarantine").text
    assert "released" in operator.get("/quarantine?released=1").text


# ----- history -----------------------------------------------------------------------------------


def test_history_is_found_by_email_phone_and_record_id_newest_first(operator, seeded):
    found = operator.get("/history?q=ADA@example.com")
    assert found.status_code == 303
    assert found.headers["location"] == f"/history/{RECORD}?client={CLIENT}&table={TABLE}"

    page = operator.get(found.headers["location"]).text
    rows = re.findall(r"<td>(2026-11-30 \d\d:\d\d:\d\d UTC)</td>", page)
    assert rows == sorted(rows, reverse=True) and len(rows) == 3
    assert "Claimed By (claimed_by)" in page and "Airtable → portal" in page
    assert 'href="http://dagster.test:3000/runs/run-one"' in page
    assert "2026-11-30 09:40:00 UTC → 2026-11-30 10:00:00 UTC" in page
    assert f'href="/conflicts/{seeded.conflict_id}"' in page  # its open conflicts

    by_phone = operator.get("/history?q=020 7946 0018")
    assert by_phone.headers["location"].startswith(f"/history/{RECORD}")
    by_id = operator.get(f"/history?q={RECORD}")
    assert by_id.headers["location"] == f"/history/{RECORD}"
    unscoped = operator.get(by_id.headers["location"]).text  # located through the sync state
    assert "Demo Sales Portal / Leads" in unscoped
    assert "is not" not in operator.get("/history?q=nobody@example.com").text
    assert "No record matches" in operator.get("/history?q=nobody@example.com").text
    assert "Search by a record id" in operator.get("/history?q=hello").text


def test_history_pages_through_a_long_history(operator, seeded, engine):
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO reconcile.change_history (client, table_key, airtable_record_id, "
                "field, old_value, new_value, direction, changed_at) SELECT :c, :t, :r, "
                "'sms_sent_count', to_jsonb(g), to_jsonb(g + 1), 'airtable_to_postgres', "
                ":at - make_interval(secs => g) FROM generate_series(1, 150) g"
            ),
            {"c": CLIENT, "t": TABLE, "r": OTHER, "at": NOW},
        )
    first = operator.get(f"/history/{OTHER}?client={CLIENT}&table={TABLE}").text
    assert first.count("<td>SMS Sent Count (sms_sent_count)") == 100
    assert 'rel="next"' in first
    second = operator.get(f"/history/{OTHER}?client={CLIENT}&table={TABLE}&page=2").text
    assert second.count("<td>SMS Sent Count (sms_sent_count)") == 50
    assert 'rel="next"' not in second


# ----- overview ----------------------------------------------------------------------------------


def test_overview_counts_per_client_and_table_with_runs_and_mark(operator, seeded, engine):
    with engine.begin() as conn:  # a portal edit: one dirty record
        conn.execute(
            text("UPDATE public.leads SET notes = 'called' WHERE airtable_record_id = :r"),
            {"r": OTHER},
        )
    page = operator.get("/").text
    row = re.search(r'<tr data-client="demo" data-table="leads">(.*?)</tr>', page, re.S).group(1)
    cells = [
        re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    ]
    assert cells[0].startswith("Demo Sales Portal")
    assert cells[1] == "Leads"
    assert cells[2:6] == ["2", "1", "2", "1"]  # records, dirty, open conflicts, quarantined
    assert "2026-11-30 12:00:00 UTC" in cells[6] and "2026-11-30 12:00:00 UTC" in cells[8]
    assert 'href="http://dagster.test:3000/runs/run-pull-1"' in row
    assert 'href="http://dagster.test:3000/runs/run-push-1"' in row
    assert 'data-table="campaigns"' in page
    campaigns = re.search(r'data-table="campaigns">(.*?)</tr>', page, re.S).group(1)
    assert "never" in campaigns and "none yet" in campaigns


def test_without_a_dagster_ui_run_ids_are_not_links(serve_console, seeded):
    console = serve_console(token=None, ui=None)
    page = console.get("/").text
    assert "/runs/run-pull-1" not in page and "run-pull" in page
    assert "javascript:" not in serve_console(None, "javascript:alert(1)").get("/").text


# ----- from the environment ----------------------------------------------------------------------


def test_console_from_environment_reads_database_token_and_ui(
    monkeypatch, database_url, seeded, tmp_path
):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("RECONCILE_CONSOLE_TOKEN", f"  {TOKEN}\n")
    monkeypatch.setenv("RECONCILE_DAGSTER_UI_URL", "http://127.0.0.1:3000")
    monkeypatch.delenv("RECONCILE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # the demo's project file
    app = console_from_environment(start_embedded=False)
    with running_console(app, port=0) as served:
        console = Browser(served.url)
        assert console.sign_in().status_code == 303  # the token, trimmed
        assert 'href="http://127.0.0.1:3000/runs/run-pull-1"' in console.get("/").text
    assert repr(app.state.console.guard) == "Guard(token=***)"


def test_console_from_environment_refuses_a_database_without_the_schema(
    monkeypatch, empty_database_url, tmp_path
):
    monkeypatch.setenv("DATABASE_URL", empty_database_url)
    monkeypatch.delenv("RECONCILE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="reconcile db upgrade"):
        console_from_environment(start_embedded=False)
    engine = create_engine(empty_database_url)  # nothing was created
    with engine.connect() as conn:
        assert not conn.execute(
            text("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'reconcile')")
        ).scalar()
    engine.dispose()
