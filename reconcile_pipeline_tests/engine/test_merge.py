"""The three-way merge decision table (DESIGN §3.3), one case per row, pure logic."""

import pytest

from reconcile_pipeline.engine.mapping import ConflictPolicy
from reconcile_pipeline.engine.merge import MISSING, Action, merge_field, merge_lines

WINS = ConflictPolicy.AIRTABLE_WINS
LINES = ConflictPolicy.MERGE_LINES


@pytest.mark.parametrize(
    ("base", "airtable", "portal", "policy", "action", "postgres", "new_base", "push"),
    [
        # Nobody changed anything: nothing to do.
        ("ana", "ana", "ana", WINS, Action.NOTHING, "ana", "ana", MISSING),
        # Only Airtable changed: take Airtable's value into PostgreSQL.
        ("ana", "bo", "ana", WINS, Action.TAKE_AIRTABLE, "bo", "bo", MISSING),
        # Only the portal changed: keep it and push it; the base stays until Airtable accepts.
        ("ana", "ana", "bo", WINS, Action.PUSH_PORTAL, "bo", "ana", "bo"),
        # The portal cleared the field (unclaim): an empty value is a change to push.
        ("ana", "ana", None, WINS, Action.PUSH_PORTAL, None, "ana", None),
        # Both changed to the same value: nothing to do, the base moves.
        ("ana", "cy", "cy", WINS, Action.NOTHING, "cy", "cy", MISSING),
        # Both changed differently: Airtable wins by default.
        ("ana", "bo", "cy", WINS, Action.CONFLICT, "bo", "bo", MISSING),
        # Never compared (no base) and different: treated as a conflict, Airtable wins.
        (MISSING, "bo", "cy", WINS, Action.CONFLICT, "bo", "bo", MISSING),
        # Never compared but equal: agreed.
        (MISSING, "bo", "bo", WINS, Action.NOTHING, "bo", "bo", MISSING),
        # merge_lines: both appended a line: both kept, the merged text goes to Airtable too.
        (
            "a",
            "a\nfrom airtable",
            "a\nfrom portal",
            LINES,
            Action.CONFLICT,
            "a\nfrom airtable\nfrom portal",
            "a\nfrom airtable",
            "a\nfrom airtable\nfrom portal",
        ),
        # merge_lines with only one side changed behaves like any field.
        (
            "a",
            "a",
            "a\nfrom portal",
            LINES,
            Action.PUSH_PORTAL,
            "a\nfrom portal",
            "a",
            "a\nfrom portal",
        ),
    ],
)
def test_merge_decision_table(base, airtable, portal, policy, action, postgres, new_base, push):
    merged = merge_field(base, airtable, portal, policy)

    assert merged.action is action
    assert merged.postgres_value == postgres
    assert merged.base == new_base
    assert merged.push_value == push


@pytest.mark.parametrize(
    ("base", "airtable", "portal", "expected"),
    [
        # The portal removed a line Airtable still has: Airtable wins deletions.
        ("x\ny", "x\ny\nz", "x", "x\ny\nz"),
        # Both added the same line: it appears once.
        ("x", "x\nsame", "x\nsame", "x\nsame"),
        # Empty everything stays empty (None, not "").
        (None, None, None, None),
    ],
)
def test_merge_lines(base, airtable, portal, expected):
    assert merge_lines(base, airtable, portal) == expected


def test_merge_lines_keeps_airtable_deletions_and_adds_a_portal_line_once():
    from reconcile_pipeline.engine.merge import merge_lines

    # Airtable removed "b"; the portal still has it (unchanged since base): it stays removed.
    assert merge_lines("a\nb", "a", "a\nb\nc") == "a\nc"
    # Without a base, every portal line Airtable lacks is added, each once.
    assert merge_lines(None, "a", "a\nb\nb") == "a\nb"
    assert merge_lines(None, None, None) is None
