"""The demo's Leads mapping built in code, keyed by Airtable field *name*: the engine tests talk
to the emulator's records by name. (The product reads mappings from the project file only, keyed
by field id: `reconcile_pipeline/demo/reconcile.yaml`.)"""

from reconcile_pipeline.engine.mapping import (
    ConflictPolicy,
    FieldKind,
    FieldSpec,
    Owner,
    TableMapping,
)


def _text(name: str, column: str, **kwargs) -> FieldSpec:
    kwargs.setdefault("max_length", 255)
    return FieldSpec(name, column, FieldKind.TEXT, **kwargs)


STATUS_CHOICES = frozenset({"New", "Contacted", "Engaged", "Qualified", "Unqualified", "Customer"})
PROCESSING_CHOICES = frozenset({"Queued", "Active", "Paused", "Completed", "Removed"})
LEAD_SOURCE_CHOICES = frozenset(
    {"Website Form", "Referral", "Cold Outreach", "Event", "Partner", "Ads"}
)

LEADS_MAPPING = TableMapping(
    name="leads",
    # The test database's trigger on public.leads is the demo client's (migration 0005 carries
    # it over to the project file's first client).
    client="demo",
    airtable_table="Leads",
    postgres_table="leads",
    modified_time_field="Last Modified",
    fields=(
        _text("Email", "email", required=True, max_length=254),
        _text("First Name", "first_name"),
        _text("Last Name", "last_name"),
        _text("Phone", "phone", max_length=40),
        _text("Company", "company"),
        _text("Title", "title"),
        FieldSpec("ICP Score", "icp_score", FieldKind.INTEGER),
        FieldSpec("Status", "status", FieldKind.SELECT, choices=STATUS_CHOICES),
        FieldSpec(
            "Processing Status",
            "processing_status",
            FieldKind.SELECT,
            owner=Owner.PORTAL,
            choices=PROCESSING_CHOICES,
        ),
        _text("Campaign ID", "campaign_id", owner=Owner.PORTAL, max_length=64),
        _text("Campaign Name", "campaign_name"),
        FieldSpec("SMS Sequence Position", "sms_sequence_position", FieldKind.INTEGER),
        FieldSpec("SMS Sent Count", "sms_sent_count", FieldKind.INTEGER),
        FieldSpec("SMS Last Sent At", "sms_last_sent_at", FieldKind.DATETIME),
        FieldSpec("Lead Source", "lead_source", FieldKind.SELECT, choices=LEAD_SOURCE_CHOICES),
        _text("Form ID", "form_id", max_length=64),
        FieldSpec("Booked", "booked", FieldKind.BOOLEAN),
        FieldSpec("Booked At", "booked_at", FieldKind.DATETIME),
        FieldSpec("SMS Stop", "sms_stop", FieldKind.BOOLEAN),
        _text("Claimed By", "claimed_by", owner=Owner.PORTAL),
        FieldSpec("Claimed At", "claimed_at", FieldKind.DATETIME, owner=Owner.PORTAL),
        FieldSpec(
            "Notes",
            "notes",
            FieldKind.TEXT,
            owner=Owner.PORTAL,
            policy=ConflictPolicy.MERGE_LINES,
            max_length=100_000,
        ),
        _text("Client ID", "client_id", max_length=64),
        FieldSpec("Tags", "tags", FieldKind.JSON),
        FieldSpec("Attachments", "attachments", FieldKind.JSON),
    ),
    # The portal sees Airtable deletes here (DESIGN §3.7). Airtable's own "Is Active" checkbox is
    # therefore not synced into it: one column cannot have two owners.
    soft_delete_column="is_active",
    # Fields we deliberately do not store (the coverage report lists them as not synced).
    ignored_airtable_fields=frozenset({"Full Name", "Lead Number", "Created", "Is Active"}),
)
