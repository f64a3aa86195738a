"""Invariants the asset checks evaluate: loops, duplicates, errors, quarantine, drift, freshness.

Each function returns a `Finding`: whether the invariant holds, the numbers, and a few offending
record ids for a person to act on.
"""

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from sqlalchemy import text

from reconcile_pipeline.engine.convert import PulledRecord
from reconcile_pipeline.engine.pull import snapshot_pulled
from reconcile_pipeline.engine.repository import Repository

EXAMPLES = 10


@dataclass(frozen=True)
class Finding:
    passed: bool
    count: int
    summary: str
    examples: list[dict] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


def _offenders(rows: list[dict], ok: str, problem: str) -> Finding:
    """The finding of an invariant whose offending rows were queried: none means it holds."""
    return Finding(
        passed=not rows,
        count=len(rows),
        summary=ok if not rows else f"{len(rows)} {problem}",
        examples=rows[:EXAMPLES],
    )


def _rows(repo: Repository, sql: str, params: dict) -> list[dict]:
    with repo.engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(sql), params).mappings().all()]


def echoes_marked_dirty(repo: Repository, run_id: str) -> Finding:
    """Leads whose change counter was last bumped inside one of this run's own merge
    transactions: the reconciler's write was taken for a portal edit (the loop the origin tag
    exists to prevent).

    The capture trigger records the transaction that bumped the counter, so a genuine portal
    edit that raced the merge (committed while the merge waited on its row lock, or right
    after) is never mistaken for an echo: it is another transaction (DESIGN §3.9).
    """
    rows = _rows(
        repo,
        # The dirty states first, through their partial index (few, in steady state). Asked
        # for the first 100 by record id directly, the planner walked the primary key in order,
        # expecting a third of the states to be dirty (its guess for a comparison of two
        # columns), and read every state when none was: 0.06 s at 100k leads, against 0.3 ms.
        "WITH dirty AS MATERIALIZED (SELECT airtable_record_id, portal_change_counter, "
        "pushed_counter, portal_changed_xid FROM reconcile.sync_state "
        "WHERE client = :c AND table_key = :t AND portal_change_counter > pushed_counter) "
        "SELECT d.airtable_record_id AS record_id, d.portal_change_counter AS counter, "
        "d.pushed_counter AS pushed, d.portal_changed_xid::text AS transaction "
        "FROM dirty d JOIN reconcile.runs r ON r.client = :c AND r.table_key = :t "
        "AND r.run_id = :run AND r.stage = 'pull' "
        "WHERE d.portal_changed_xid::text = ANY(r.transaction_ids) "
        "ORDER BY d.airtable_record_id LIMIT 100",
        {"c": repo.mapping.client, "t": repo.mapping.name, "run": run_id},
    )
    return _offenders(
        rows,
        "no pulled echo marked a lead dirty",
        "leads were marked dirty by the reconciler's own writes (loop)",
    )


def repeated_pushes(repo: Repository, run_id: str) -> Finding:
    """Leads this run sent to Airtable for a change counter already sent before: a push that
    was not caused by a new portal edit."""
    rows = _rows(
        repo,
        "SELECT p.airtable_record_id AS record_id, p.counter_sent AS counter, "
        "count(*) AS times FROM reconcile.push_results p "
        "WHERE p.client = :c AND "
        "p.table_key = :t AND p.run_id = :run AND p.outcome IN ('updated', 'conflict') "
        "AND p.fields_sent IS NOT NULL AND EXISTS (SELECT 1 FROM reconcile.push_results q "
        "WHERE q.client = p.client AND q.table_key = p.table_key "
        "AND q.airtable_record_id = p.airtable_record_id "
        "AND q.counter_sent = p.counter_sent AND q.fields_sent IS NOT NULL "
        "AND q.outcome IN ('updated', 'conflict') AND q.id < p.id) "
        "GROUP BY 1, 2 LIMIT 100",
        {"c": repo.mapping.client, "t": repo.mapping.name, "run": run_id},
    )
    return _offenders(
        rows,
        "every lead pushed carried a new portal change",
        "leads were pushed again without a new portal change (loop)",
    )


def duplicate_leads(repo: Repository) -> Finding:
    """More than one PostgreSQL lead for an Airtable record."""
    key = repo.key_sql
    table = repo.table_sql
    rows = _rows(
        repo,
        f"SELECT {key} AS record_id, count(*) AS leads FROM {table} WHERE {key} IS NOT NULL "
        f"AND {repo.client_rows()} GROUP BY 1 HAVING count(*) > 1 ORDER BY 2 DESC LIMIT 100",
        repo.client_params,
    )
    return _offenders(
        rows,
        "one lead per Airtable record",
        "Airtable records have several leads",
    )


def records_repeated_in_pull(repo: Repository, run_id: str) -> Finding:
    """Records this run's listing returned more than once (deduplicated before the merge): the
    listing shifted under pagination, so a record may also have been skipped until the next
    run."""
    rows = _rows(
        repo,
        # One aggregate over the run's snapshot rows (a self-join on them went quadratic when
        # the planner expected one row for a new run: 20 s at 10k records).
        "SELECT id AS record_id, sum(n)::bigint AS times FROM ("
        "SELECT jsonb_array_elements_text(stats -> 'repeated_ids') AS id, 1::bigint AS n "
        "FROM reconcile.runs "
        "WHERE client = :c AND table_key = :t AND run_id = :run AND stage = 'fetch' "
        "UNION ALL SELECT airtable_record_id, count(*) FROM reconcile.airtable_snapshots "
        "WHERE client = :c AND table_key = :t AND run_id = :run "
        "GROUP BY 1 HAVING count(*) > 1) r GROUP BY 1 ORDER BY 1 LIMIT 100",
        {"c": repo.mapping.client, "t": repo.mapping.name, "run": run_id},
    )
    return _offenders(
        rows,
        "no record came twice in the pull",
        "records came more than once in one pull (deduplicated)",
    )


def contact_columns(repo: Repository) -> dict[str, str]:
    """The mapped e-mail and phone columns ("email"/"phone" kinds of contact), found by name."""
    found: dict[str, str] = {}
    for spec in repo.mapping.fields:
        name = spec.column.lower()
        if "mail" in name and "email" not in found:
            found["email"] = spec.column
        elif ("phone" in name or "mobile" in name) and "phone" not in found:
            found["phone"] = spec.column
    return found


def duplicate_contacts(repo: Repository) -> Finding:
    """Live rows sharing an e-mail or a phone (reported, not repaired: people decide).

    A whole-table check, so its cost grows with the table. Per kind, the values held more than
    once are found first by counting alone (a hash aggregate); only the rows holding one of
    them are then looked up in the sync state (soft-deleted leads are not live) and gathered
    into sorted id lists. Gathering every row's id list (a sort of the whole table) and
    joining every row to its sync state, as the first version did, took 0.21 s at 100k leads
    (vacuumed and analyzed, none shared); this takes 0.09 s."""
    table = repo.table_sql
    key = repo.key_sql
    normalise = {
        "email": "lower({alias}.{col})",
        "phone": "regexp_replace({alias}.{col}, '[^0-9+]', '', 'g')",
    }
    parts = []
    for kind, column in contact_columns(repo).items():
        col = '"' + column.replace('"', '""') + '"'
        value, counted = (normalise[kind].format(alias=a, col=col) for a in ("l", "d"))
        parts.append(
            f"SELECT '{kind}' AS kind, {value} AS value, array_agg(l.{key} ORDER BY l.{key}) "
            f"AS ids FROM {table} l WHERE l.{col} IS NOT NULL AND {repo.client_rows('l')} "
            f"AND {value} IN (SELECT {counted} FROM {table} d WHERE d.{col} IS NOT NULL "
            f"AND {repo.client_rows('d')} GROUP BY 1 HAVING count(*) > 1) "
            "AND NOT EXISTS (SELECT 1 FROM reconcile.sync_state s WHERE s.client = :c "
            f"AND s.table_key = :t AND s.airtable_record_id = l.{key} "
            "AND s.deleted_at IS NOT NULL) GROUP BY 2 HAVING count(*) > 1"
        )
    if not parts:
        return Finding(True, 0, "no e-mail or phone column is mapped")
    rows = _rows(
        repo,
        "SELECT kind, value, ids, cardinality(ids) AS leads FROM ("
        + " UNION ALL ".join(parts)
        + ") d ORDER BY leads DESC LIMIT 100",
        {"c": repo.mapping.client, "t": repo.mapping.name, **repo.client_params},
    )
    for row in rows:
        row["ids"] = ", ".join(row["ids"][:5])
    return _offenders(
        rows,
        "no live leads share an e-mail or phone",
        "e-mails/phones are shared by several live leads",
    )


def push_error_rate(repo: Repository, run_id: str, threshold: float) -> Finding:
    rows = _rows(
        repo,
        "SELECT outcome, count(*) AS n FROM reconcile.push_results WHERE client = :c AND "
        "table_key = :t "
        "AND run_id = :run GROUP BY 1",
        {"c": repo.mapping.client, "t": repo.mapping.name, "run": run_id},
    )
    counts = {r["outcome"]: r["n"] for r in rows}
    attempted = sum(counts.values())
    failed = counts.get("failed", 0) + counts.get("quarantined", 0)
    rate = failed / attempted if attempted else 0.0
    examples = _rows(
        repo,
        "SELECT airtable_record_id AS record_id, outcome, left(error, 120) AS error "
        "FROM reconcile.push_results WHERE client = :c AND table_key = :t AND run_id = :run "
        "AND outcome IN ('failed', 'quarantined') LIMIT :n",
        {"c": repo.mapping.client, "t": repo.mapping.name, "run": run_id, "n": EXAMPLES},
    )
    return Finding(
        passed=rate <= threshold,
        count=failed,
        summary=f"{failed}/{attempted} pushes failed ({rate:.0%}, threshold {threshold:.0%})",
        examples=examples,
        figures={"error_rate": rate, "attempted": attempted},
    )


def quarantine_growth(repo: Repository, run_id: str) -> Finding:
    """Fields (or whole records) this run held for the first time, with the reason."""
    rows = _rows(
        repo,
        "SELECT airtable_record_id AS record_id, field, direction, left(reason, 160) AS reason "
        "FROM reconcile.quarantine WHERE client = :c AND table_key = :t AND released_at IS NULL "
        # attempts = 1: first held by this run (a field still bad on retry is not growth)
        "AND run_id = :run AND attempts = 1 ORDER BY last_seen_at DESC, id LIMIT 100",
        {"c": repo.mapping.client, "t": repo.mapping.name, "run": run_id},
    )
    total = _rows(
        repo,
        "SELECT count(*) AS n FROM reconcile.quarantine WHERE client = :c AND table_key = :t "
        "AND released_at IS NULL",
        {"c": repo.mapping.client, "t": repo.mapping.name},
    )[0]["n"]
    return Finding(
        passed=not rows,
        count=len(rows),
        summary="nothing quarantined by this run"
        if not rows
        else f"{len(rows)} fields quarantined by this run ({total} held in all)",
        examples=rows[:EXAMPLES],
        figures={"held_in_total": total},
    )


def window_drift(
    repo: Repository, run_id: str, pulled: Sequence[PulledRecord] | None = None
) -> Finding:
    """After the run: fields of the window's records where PostgreSQL differs from what Airtable
    holds now, as far as this run knows it: the pulled value, or the value this run pushed.

    Left out: portal edits still waiting to be pushed, fields held in quarantine, and records
    whose newer Airtable version was applied after this snapshot.

    `pulled`: the run's records as its pull converted them (`PullResult.records`); without
    them they are read back from the run's snapshot and converted again.
    """
    if pulled is None:
        pulled = snapshot_pulled(repo, run_id)
    airtable = {record.record_id: record.values for record in pulled}
    snapshot_times = {record.record_id: record.modified for record in pulled}
    with repo.engine.connect() as conn:
        current = repo.drift_rows(conn, list(airtable))
        pushed = conn.execute(
            text(
                "SELECT airtable_record_id, fields_sent FROM reconcile.push_results "
                "WHERE client = :c AND "
                "table_key = :t AND run_id = :run AND fields_sent IS NOT NULL "
                "AND outcome IN ('updated', 'conflict') ORDER BY id"
            ),
            {"c": repo.mapping.client, "t": repo.mapping.name, "run": run_id},
        ).all()
        held = repo.held_fields(conn, "pull")
    for rid, sent in pushed:
        if rid in airtable:
            airtable[rid] = {**airtable[rid], **sent}
    by_column = repo.mapping.by_column()
    columns = repo.columns
    # A record holding every mapped column equal on both sides has nothing to report: one
    # tuple comparison instead of a field-by-field look (most of a window's records). With a
    # single column `pick` gives a value, not a tuple: every record is looked at field by field.
    pick = itemgetter(*columns)
    drifted: dict[str, int] = {}
    examples = []
    for rid, values in airtable.items():
        found = current.get(rid)
        if found is None:
            drifted["(missing lead)"] = drifted.get("(missing lead)", 0) + 1
            continue
        state, lead_values = found
        if state.deleted:
            continue
        snapshot_time = snapshot_times.get(rid)
        if (
            state.airtable_modified_at is not None
            and snapshot_time is not None
            and state.airtable_modified_at > snapshot_time
        ):
            continue  # a newer Airtable version was applied after this snapshot
        try:
            if pick(values) == lead_values:
                continue
        except KeyError:  # a column this snapshot does not hold: compared field by field
            pass
        lead = dict(zip(columns, lead_values, strict=True))
        fields = [
            c
            for c, v in values.items()
            if c in lead
            and lead[c] != v
            and (rid, c) not in held
            and not (state.dirty and by_column[c].portal_owned)
        ]
        for c in fields:
            drifted[c] = drifted.get(c, 0) + 1
        if fields and len(examples) < EXAMPLES:
            examples.append({"record_id": rid, "fields": ", ".join(fields)})
    total = sum(drifted.values())
    return Finding(
        passed=total == 0,
        count=total,
        summary="the window's records agree on every mapped field"
        if not total
        else f"{total} field values differ between the sides",
        examples=examples,
        figures={"drift_by_field": drifted, "records": len(airtable)},
    )


def pull_continuity(repo: Repository, *, max_lag: dt.timedelta, horizon: dt.timedelta) -> Finding:
    """Stretches of time within `horizon` that no committed pull covered (DESIGN §3.6): holes
    between committed pulls, and the time since the high-water mark when it lags more than
    `max_lag` behind now (pulls are failing, or nothing runs)."""
    with repo.engine.connect() as conn:
        now = conn.execute(text("SELECT now()")).scalar_one()
        mark = repo.high_water_mark(conn)
        intervals = repo.committed_coverage(conn, now - horizon)
    gaps: list[dict] = []
    covered_until: dt.datetime | None = None
    for start, end in intervals:
        if covered_until is not None and start is not None and start > covered_until:
            gaps.append({"from": covered_until, "to": start})
        if covered_until is None or end > covered_until:
            covered_until = end
    lag = (now - mark) if mark is not None else None
    if lag is not None and lag > max_lag:
        gaps.append({"from": mark, "to": now})
    examples = [
        {
            "from": f"{gap['from']:%Y-%m-%d %H:%M:%S} UTC",
            "to": f"{gap['to']:%Y-%m-%d %H:%M:%S} UTC",
            "minutes": round((gap["to"] - gap["from"]).total_seconds() / 60, 1),
        }
        for gap in gaps
    ]
    if mark is None:
        summary = "no pull has committed yet: the first run makes a full pull"
    elif not gaps:
        summary = f"pulls cover time without a gap up to {mark:%Y-%m-%d %H:%M:%S} UTC"
    else:
        summary = (
            f"{len(gaps)} stretches of time no successful pull covered "
            f"({sum(e['minutes'] for e in examples):.0f} min); the next successful run pulls "
            "from the high-water mark and covers them"
        )
    return Finding(
        passed=not gaps,
        count=len(gaps),
        summary=summary,
        examples=examples[:EXAMPLES],
        figures={
            "high_water_mark": mark.isoformat() if mark else None,
            "lag_minutes": round(lag.total_seconds() / 60, 2) if lag is not None else None,
        },
    )


def portal_writes_to_airtable_fields(repo: Repository, run_id: str) -> Finding:
    """Portal writes to Airtable-owned columns this run put back to Airtable's value: a portal
    bug worth seeing (DESIGN §3.1)."""
    rows = _rows(
        repo,
        "SELECT airtable_record_id AS record_id, field, old_value::text AS portal_wrote, "
        "new_value::text AS restored FROM reconcile.change_history WHERE client = :c AND "
        "table_key = :t "
        "AND run_id = :run AND reason = 'reverted_portal_write' ORDER BY id LIMIT 100",
        {"c": repo.mapping.client, "t": repo.mapping.name, "run": run_id},
    )
    return _offenders(
        rows,
        "the portal wrote no Airtable-owned column",
        "portal writes to Airtable-owned columns were reverted to Airtable's value",
    )


def freshness(repo: Repository, max_age: dt.timedelta) -> Finding:
    """The last successful push is recent and no portal edit waits longer than `max_age`."""
    rows = _rows(
        repo,
        "SELECT (SELECT max(finished_at) FROM reconcile.runs WHERE client = :c AND table_key = :t "
        "AND stage = 'push' AND NOT dry_run) AS last_push, "
        "(SELECT min(s.portal_changed_at) FROM reconcile.sync_state s WHERE s.client = :c AND "
        "s.table_key = :t "
        "AND s.portal_change_counter > s.pushed_counter AND s.deleted_at IS NULL "
        f"AND EXISTS (SELECT 1 FROM {repo.table_sql} l WHERE l.{repo.key_sql} = "
        "s.airtable_record_id)) AS oldest_dirty, "
        "now() AS now",
        {"c": repo.mapping.client, "t": repo.mapping.name},
    )[0]
    now = rows["now"]
    push_age = (now - rows["last_push"]) if rows["last_push"] else None
    wait = (now - rows["oldest_dirty"]) if rows["oldest_dirty"] else dt.timedelta(0)
    passed = push_age is not None and push_age <= max_age and wait <= max_age
    return Finding(
        passed=passed,
        count=0,
        summary=(
            f"last push {push_age.total_seconds() / 60:.1f} min ago"
            if push_age is not None
            else "no successful push recorded yet"
        )
        + f"; oldest unpushed portal edit waits {wait.total_seconds() / 60:.1f} min "
        f"(limit {max_age.total_seconds() / 60:.0f} min)",
        figures={
            "minutes_since_last_push": round(push_age.total_seconds() / 60, 2)
            if push_age is not None
            else None,
            "oldest_dirty_minutes": round(wait.total_seconds() / 60, 2),
        },
    )
