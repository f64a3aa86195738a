"""The three-way merge of one portal-owned field (DESIGN §3.3). Pure; no I/O.

`base` is the last value both sides agreed on, `airtable` Airtable's value now, `portal` the
portal's value now (all canonical). Timestamps from the two clocks are never compared.
"""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from reconcile_pipeline.engine.mapping import ConflictPolicy

MISSING = object()  # no base yet: the two sides have never been compared


class Action(StrEnum):
    NOTHING = "nothing"  # both sides hold the same value
    TAKE_AIRTABLE = "take_airtable"  # write Airtable's value into PostgreSQL
    PUSH_PORTAL = "push_portal"  # keep the portal's value; it goes to Airtable
    CONFLICT = "conflict"  # both changed differently: the policy decided


@dataclass(frozen=True)
class FieldMerge:
    """The outcome for one field."""

    action: Action
    postgres_value: Any  # what PostgreSQL holds afterwards
    base: Any  # the new agreed value (what Airtable holds afterwards, once pushed)
    push_value: Any = MISSING  # what must be sent to Airtable, if anything

    @property
    def needs_push(self) -> bool:
        return self.push_value is not MISSING


def merge_lines(base: str | None, airtable: str | None, portal: str | None) -> str | None:
    """Airtable's text plus the lines the portal added since base (in the portal's order).

    Lines the portal removed but Airtable still has stay (Airtable wins deletions); lines both
    added appear once.
    """
    base_lines = set((base or "").splitlines())
    merged = (airtable or "").splitlines()
    present = set(merged)
    for line in (portal or "").splitlines():
        if line not in base_lines and line not in present:
            merged.append(line)
            present.add(line)
    text = "\n".join(merged)
    return text or None


def merge_field(base: Any, airtable: Any, portal: Any, policy: ConflictPolicy) -> FieldMerge:
    """Decide one field. `base` is MISSING when the sides were never compared."""
    if airtable == portal:
        return FieldMerge(Action.NOTHING, portal, airtable)
    if base is not MISSING:
        if portal == base:  # only Airtable changed
            return FieldMerge(Action.TAKE_AIRTABLE, airtable, airtable)
        if airtable == base:  # only the portal changed
            return FieldMerge(Action.PUSH_PORTAL, portal, base, push_value=portal)
    # Both changed (or never compared): the declared policy decides.
    if policy is ConflictPolicy.MERGE_LINES:
        merged = merge_lines(None if base is MISSING else base, airtable, portal)
        if merged == airtable:
            return FieldMerge(Action.CONFLICT, airtable, airtable)
        return FieldMerge(Action.CONFLICT, merged, airtable, push_value=merged)
    return FieldMerge(Action.CONFLICT, airtable, airtable)
