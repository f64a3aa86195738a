"""`reconcile init`'s pure part: matching fields to columns, types, and the starter file.

No I/O: the two sides are built in the test; the rendered text is read back with the project
file's own parser (`config.load.parse`), as `reconcile` will read it.
"""

import re
from pathlib import Path
from typing import Any

import pytest

from reconcile_pipeline.airtable.errors import AirtableRequestError
from reconcile_pipeline.config import init
from reconcile_pipeline.config.init import AirtableField, AirtableTable, Column, PostgresTable
from reconcile_pipeline.config.load import parse, table_mapping
from reconcile_pipeline.engine.mapping import FieldKind, Owner

BASE = "appAcmeSales00001"
TABLE_ID = "tblProspects00001"


def fid(label: str) -> str:
    """A valid Airtable field id (fld + 14 letters or digits) derived from a label."""
    letters = re.sub(r"[^A-Za-z0-9]", "", label)
    return "fld" + (letters + "0" * 14)[:14]


def af(name: str, type_: str = "singleLineText", **options: Any) -> AirtableField:
    return AirtableField(fid(name), name, type_, options)


def col(name: str, data_type: str = "text", **extra: Any) -> Column:
    return Column(name, data_type, **extra)


def pg(*columns: Column, name: str = "prospects") -> PostgresTable:
    key = () if any(c.name == "airtable_record_id" for c in columns) else (
        Column("airtable_record_id", "text", unique=True),
    )  # fmt: skip
    return PostgresTable("public", name, (*key, *columns))


def at(*fields: AirtableField) -> AirtableTable:
    return AirtableTable(TABLE_ID, "Prospects", tuple(fields))


def starter(fields: list[AirtableField], columns: list[Column], **kw: Any) -> init.Starter:
    return init.plan_starter(
        base_id=BASE,
        base_name=kw.pop("base_name", "Acme Sales"),
        airtable=at(*fields),
        postgres=pg(*columns),
        **kw,
    )


def loaded(plan: init.Starter):
    """The rendered file, parsed by the project file's parser: (client key, client, table)."""
    text = init.render(plan)
    config = parse(text, "reconcile.yaml")
    ((client_key, client),) = config.clients.items()
    ((table_key, table),) = client.tables.items()
    assert table_key == plan.table_key
    return client_key, client, table


def columns_by_id(table) -> dict[str, str]:
    return {field_id: spec.column for field_id, spec in table.fields.items()}


# ----- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field_name", "column"),
    [
        ("E-mail", "email"),
        ("Assigned To", "assigned_to"),
        ("ICP Score", "icp_score"),
        ("Téléphone", "telephone"),
        ("first.name", "FirstName"),
    ],
)
def test_names_compare_ignoring_case_accents_and_punctuation(field_name: str, column: str) -> None:
    assert init.normalize(field_name) == init.normalize(column)


def test_names_that_differ_in_letters_are_not_equal() -> None:
    assert init.normalize("Mobile") != init.normalize("mobile_phone")
    assert init.normalize("Status 2") != init.normalize("status")


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("prospects", "prospects"),
        ("Prospects-2024", "prospects_2024"),
        ("2024 leads", "t_2024_leads"),
        ("Acme Sales (EU)", "acme_sales_eu"),
        ("Équipe", "equipe"),
        ("---", "main"),
        ("x" * 100, "x" * 63),
    ],
)
def test_keys_are_lower_snake_case(name: str, key: str) -> None:
    assert init.snake_key(name) == key


# ----- matching ---------------------------------------------------------------------------


def test_exact_then_case_and_punctuation_insensitive() -> None:
    fields = [af("email"), af("E-Mail"), af("Mobile", "phoneNumber"), af("Assigned To")]
    columns = [col("email"), col("e_mail"), col("mobile"), col("assigned_to")]
    matching = init.match_fields(fields, columns)

    pairs = {m.field.name: (m.column.name, m.how) for m in matching.mapped}
    assert pairs == {
        "email": ("email", "exact"),  # the exact name is taken first ...
        "E-Mail": ("e_mail", "normalized"),  # ... so E-Mail gets the other one
        "Mobile": ("mobile", "normalized"),
        "Assigned To": ("assigned_to", "normalized"),
    }
    assert matching.unmapped_fields == () and matching.unmapped_columns == ()


def test_ambiguous_loose_matches_are_suggested_never_mapped() -> None:
    fields = [af("Email", "email"), af("E-mail", "email")]
    matching = init.match_fields(fields, [col("email")])

    assert matching.mapped == ()
    assert [(u.field.name, u.suggestions) for u in matching.unmapped_fields] == [
        ("Email", ("email",)),
        ("E-mail", ("email",)),
    ]
    assert all("ambiguous" in u.reason for u in matching.unmapped_fields)
    assert [c.column.name for c in matching.unmapped_columns] == ["email"]


def test_similar_names_are_only_suggestions() -> None:
    fields = [af("Phone Number", "phoneNumber"), af("Email", "email")]
    plan = starter(fields, [col("phone"), col("email"), col("local_note")])
    matching = plan.matching

    assert [m.field.name for m in matching.mapped] == ["Email"]
    (unmapped,) = matching.unmapped_fields
    assert unmapped.field.name == "Phone Number" and unmapped.suggestions[0] == "phone"
    _, _, table = loaded(plan)
    assert columns_by_id(table) == {fid("Email"): "email"}  # the suggestion is not a mapping
    text = init.render(plan)
    assert f"# {fid('Phone Number')}:" in text  # but a commented block ready to uncomment
    assert "#   column: phone" in text
    assert {c.column.name for c in matching.unmapped_columns} == {"phone", "local_note"}


def test_no_similar_column_leaves_a_plain_comment() -> None:
    plan = starter([af("Email", "email"), af("Zebra Count", "number", precision=0)], [col("email")])
    (unmapped,) = plan.matching.unmapped_fields
    assert unmapped.suggestions == () and unmapped.reason == "no column has a similar name"
    assert f"# {fid('Zebra Count')}: Zebra Count (number): no column" in init.render(plan)


# ----- types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "column_type", "kind"),
    [
        (af("X", "singleLineText"), "text", FieldKind.TEXT),
        (af("X", "email"), "character varying", FieldKind.TEXT),
        (af("X", "phoneNumber"), "text", FieldKind.TEXT),
        (af("X", "multilineText"), "text", FieldKind.TEXT),
        (af("X", "number", precision=0), "integer", FieldKind.INTEGER),
        (af("X", "number", precision=0), "bigint", FieldKind.INTEGER),
        (af("X", "number", precision=0), "double precision", FieldKind.FLOAT),
        (af("X", "number", precision=2), "numeric", FieldKind.FLOAT),
        (af("X", "number"), "double precision", FieldKind.FLOAT),
        (af("X", "currency", precision=2), "numeric", FieldKind.FLOAT),
        (af("X", "rating"), "smallint", FieldKind.INTEGER),
        (af("X", "checkbox"), "boolean", FieldKind.BOOLEAN),
        (af("X", "date"), "date", FieldKind.DATE),
        (af("X", "dateTime"), "timestamp with time zone", FieldKind.DATETIME),
        (af("X", "singleSelect"), "text", FieldKind.SELECT),
        (af("X", "multipleSelects"), "jsonb", FieldKind.JSON),
        (af("X", "multipleRecordLinks"), "jsonb", FieldKind.JSON),
        (af("X", "multipleAttachments"), "jsonb", FieldKind.ATTACHMENTS),
    ],
)
def test_type_from_airtable_checked_against_the_column(
    field: AirtableField, column_type: str, kind: FieldKind
) -> None:
    assert init.choose_kind(field, col("x", column_type)) == (kind, "")


@pytest.mark.parametrize(
    ("field", "column_type", "needle"),
    [
        (af("X", "number", precision=2), "integer", "float"),
        (af("X", "dateTime"), "timestamp without time zone", "timestamp with time zone"),
        (af("X", "checkbox"), "text", "boolean"),
        (af("X", "singleSelect"), "USER-DEFINED", "select"),
        (af("X", "multipleSelects"), "ARRAY", "jsonb"),
        (af("X", "singleCollaborator"), "text", "not supported"),
    ],
)
def test_incompatible_types_say_why(field: AirtableField, column_type: str, needle: str) -> None:
    kind, reason = init.choose_kind(field, col("x", column_type))
    assert kind is None and needle in reason


def test_a_type_mismatch_is_reported_and_left_commented_out() -> None:
    fields = [
        af("Email", "email"),
        af("Deal Size", "number", precision=2),
        af("Owner", "singleCollaborator"),
    ]
    plan = starter(fields, [col("email"), col("deal_size", "integer"), col("owner")])

    mismatches = {x.field.name: x for x in plan.matching.mismatches}
    assert set(mismatches) == {"Deal Size", "Owner"}
    assert mismatches["Deal Size"].kind is FieldKind.FLOAT
    assert mismatches["Owner"].kind is None
    # Neither column counts as unmapped: each is reported with its field.
    assert plan.matching.unmapped_columns == ()
    _, _, table = loaded(plan)
    assert list(table.fields) == [fid("Email")]
    text = init.render(plan)
    assert "TYPE MISMATCHES" in text
    assert f"# {fid('Deal Size')}:" in text and "#   type: float" in text
    assert "singleCollaborator is not supported" in text
    report = "\n".join(init.coverage_report(plan))
    assert "type mismatches (left commented out): 2" in report
    assert "Deal Size (number) ↔ deal_size (integer)" in report


def test_text_lengths_and_not_null_columns_carry_over() -> None:
    plan = starter(
        [af("Email", "email"), af("Code")],
        [col("email", "character varying", max_length=254, nullable=False), col("code")],
    )
    _, _, table = loaded(plan)
    email, code = table.fields[fid("Email")], table.fields[fid("Code")]
    assert (email.max_length, email.required) == (254, True)
    assert (code.max_length, code.required) == (None, False)


def test_a_not_null_column_with_a_default_is_not_required() -> None:
    plan = starter(
        [af("Booked", "checkbox")], [col("booked", "boolean", nullable=False, has_default=True)]
    )
    _, _, table = loaded(plan)
    assert table.fields[fid("Booked")].required is False


def test_a_generated_column_is_never_mapped() -> None:
    plan = starter(
        [af("Email", "email"), af("Domain")], [col("email"), col("domain", generated=True)]
    )
    assert [m.field.name for m in plan.matching.mapped] == ["Email"]
    assert [c.column.name for c in plan.matching.unmapped_columns] == ["domain"]
    assert "domain (text, generated)" in init.render(plan)


# ----- computed fields, soft delete, modified time, key ----------------------------------


def test_computed_fields_are_ignored_with_a_comment() -> None:
    fields = [
        af("Email", "email"),
        af("Full Name", "formula", formula="{First} & {Last}"),
        af("Lines", "rollup"),
        af("Company Size", "multipleLookupValues"),
        af("Deals", "count"),
        af("Number", "autoNumber"),
        af("Created", "createdTime"),
        af("Modified", "lastModifiedTime", referencedFieldIds=[]),
    ]
    plan = starter(fields, [col("email"), col("full_name"), col("number", "integer")])

    assert [m.field.name for m in plan.matching.mapped] == ["Email"]
    ignored = {i.field.name: i for i in plan.matching.ignored}
    assert set(ignored) == {f.name for f in fields[1:]}
    assert ignored["Full Name"].column_hint == "full_name"
    assert plan.modified_time_field == fields[-1]
    _, _, table = loaded(plan)
    assert table.modified_time_field == fid("Modified")
    # modified_time_field is covered as such, not listed again
    assert table.ignored_fields == [fid(f.name) for f in fields[1:-1]]
    text = init.render(plan)
    assert f"- {fid('Full Name')}  # Full Name: computed by Airtable (formula); column" in text
    assert {c.column.name for c in plan.matching.unmapped_columns} == {"full_name", "number"}


def test_a_last_modified_field_watching_some_fields_is_not_the_modified_time_field() -> None:
    plan = starter(
        [af("Email", "email"), af("Email changed", "lastModifiedTime", referencedFieldIds=["x"])],
        [col("email")],
    )
    assert plan.modified_time_field is None
    _, _, table = loaded(plan)
    assert table.modified_time_field is None
    assert "# modified_time_field: fld…  # none found" in init.render(plan)


def test_an_is_active_boolean_is_the_soft_delete_column_and_its_field_is_ignored() -> None:
    fields = [af("Email", "email"), af("Is Active", "checkbox")]
    plan = starter(fields, [col("email"), col("is_active", "boolean", nullable=False)])

    assert plan.soft_delete_column is not None and plan.soft_delete_column.name == "is_active"
    _, _, table = loaded(plan)
    assert table.postgres.soft_delete_column == "is_active"
    assert columns_by_id(table) == {fid("Email"): "email"}
    assert table.ignored_fields == [fid("Is Active")]


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ([col("active", "boolean")], "active"),
        ([col("in_airtable", "boolean"), col("is_active", "boolean")], "is_active"),
        ([col("is_deleted", "boolean")], None),  # inverted: not what the sync writes
        ([col("is_active", "text")], None),  # not a boolean
    ],
)
def test_soft_delete_candidates(columns: list[Column], expected: str | None) -> None:
    found = init.find_soft_delete_column(columns)
    assert (found.name if found else None) == expected


def test_without_a_soft_delete_column_the_file_suggests_one_in_a_comment() -> None:
    plan = starter([af("Email", "email")], [col("email"), col("is_deleted", "boolean")])
    _, _, table = loaded(plan)
    assert table.postgres.soft_delete_column is None
    assert "# soft_delete_column: is_active  # none found" in init.render(plan)


def test_the_key_column_defaults_to_airtable_record_id_and_is_never_a_field() -> None:
    plan = starter([af("Email", "email"), af("airtable_record_id")], [col("email")])
    assert plan.key_column.name == "airtable_record_id"
    _, _, table = loaded(plan)
    assert table.postgres.key_column == "airtable_record_id"
    assert "airtable_record_id" not in {f.column for f in table.fields.values()}


def test_without_airtable_record_id_the_key_column_must_be_named() -> None:
    table = PostgresTable("public", "prospects", (col("record_ref"), col("email")))
    fields = at(af("Email", "email"))
    with pytest.raises(init.InitError, match="pass --key-column") as caught:
        init.plan_starter(base_id=BASE, base_name=None, airtable=fields, postgres=table)
    assert "record_ref" in str(caught.value)

    plan = init.plan_starter(
        base_id=BASE, base_name=None, airtable=fields, postgres=table, key_column="record_ref"
    )
    assert plan.key_column.name == "record_ref"
    assert "no unique index" in init.render(plan)  # record_ref is not unique here


@pytest.mark.parametrize(
    ("key_column", "needle"), [("nope", "has no such column"), ("id", "must be text")]
)
def test_a_wrong_key_column_is_refused(key_column: str, needle: str) -> None:
    table = PostgresTable("public", "prospects", (col("id", "bigint"), col("email")))
    with pytest.raises(init.InitError, match=needle):
        init.plan_starter(
            base_id=BASE,
            base_name=None,
            airtable=at(af("Email", "email")),
            postgres=table,
            key_column=key_column,
        )


def test_nothing_to_map_is_an_error_not_a_file_that_would_not_load() -> None:
    with pytest.raises(init.InitError, match="nothing was written"):
        starter([af("Alpha"), af("Beta", "formula")], [col("gamma")])


# ----- the file ---------------------------------------------------------------------------


def test_the_rendered_file_loads_and_says_everything() -> None:
    fields = [
        af("Name"),
        af("E-mail", "email"),
        af("Mobile", "phoneNumber"),
        af("Assigned To"),
        af("Status", "singleSelect", choices=[{"name": n} for n in ("New", "Nurture", "Lost")]),
        af("Is Active", "checkbox"),
        af("Last Modified", "lastModifiedTime"),
        af("Score", "formula", formula="LEN({E-mail})"),
    ]
    columns = [
        col("email"),
        col("mobile", "character varying", max_length=40),
        col("assigned_to"),
        col("status"),
        col("is_active", "boolean"),
        col("internal_rating", "integer"),
    ]
    plan = starter(fields, columns, token_env="ACME_AIRTABLE_TOKEN")
    client_key, client, table = loaded(plan)

    assert client_key == "acme_sales" and client.name == "Acme Sales"
    assert client.base_id == BASE and client.token_env == "ACME_AIRTABLE_TOKEN"
    assert (table.airtable_table, table.name) == (TABLE_ID, "Prospects")
    assert (table.postgres.schema_name, table.postgres.table) == ("public", "prospects")
    assert table.postgres.key_column == "airtable_record_id"
    assert table.postgres.soft_delete_column == "is_active"
    assert table.modified_time_field == fid("Last Modified")
    assert columns_by_id(table) == {
        fid("E-mail"): "email",
        fid("Mobile"): "mobile",
        fid("Assigned To"): "assigned_to",
        fid("Status"): "status",
    }
    assert {i: f.type for i, f in table.fields.items()} == {
        fid("E-mail"): FieldKind.TEXT,
        fid("Mobile"): FieldKind.TEXT,
        fid("Assigned To"): FieldKind.TEXT,
        fid("Status"): FieldKind.SELECT,
    }
    assert table.fields[fid("Status")].choices is None  # options come from Airtable at run time
    assert table.fields[fid("Mobile")].max_length == 40
    assert table.ignored_fields == [fid("Is Active"), fid("Score")]
    # The engine builds its mapping from it.
    mapping = table_mapping("prospects", table)
    assert mapping.fields_by_id and len(mapping.fields) == 4

    text = init.render(plan)
    assert "Nurture" in text  # the options, shown in a comment
    assert "internal_rating (integer)" in text  # the local-only column
    assert f"{fid('Name')}: Name (singleLineText)" in text  # the unmapped field


def test_portal_ownership_is_never_set_but_explained() -> None:
    fields = [af(n) for n in ("Notes", "Claimed By", "Portal Status", "Campaign ID")]
    plan = starter(
        fields, [col("notes"), col("claimed_by"), col("portal_status"), col("campaign_id")]
    )
    _, _, table = loaded(plan)

    assert len(table.fields) == 4
    assert all(f.owner is Owner.AIRTABLE for f in table.fields.values())
    text = init.render(plan)
    uncommented = [line.split("#", 1)[0] for line in text.splitlines()]
    assert not any("portal" in line and "owner" in line for line in uncommented)
    assert not any("policy" in line for line in uncommented)
    assert sum(line.strip() == "owner: airtable" for line in uncommented) == 4
    assert "owner: portal" in text and "policy: merge_lines" in text  # in the comments


@pytest.mark.parametrize(
    "hostile",
    [
        "yes",
        "123",
        "a: b",
        "#hash",
        "- item",
        "line\nclients: {}",
        "x\u2028y",
        "tab\there",
        "'quoted\"",
        "  padded  ",
        "Ünïcödé ☃",
        "{flow}",
        "*alias",
        "on",
        "null",
    ],
)
def test_any_airtable_name_reads_back_and_cannot_break_out_of_a_comment(hostile: str) -> None:
    fields = [
        af("Email", "email"),
        AirtableField(fid("hostile"), hostile, "singleLineText"),  # mapped (column "hostile")
        AirtableField(fid("unmapped"), f"{hostile} #2", "number", {"precision": 0}),
        AirtableField(fid("calc"), f"{hostile} calc", "formula", {}),
    ]
    plan = init.plan_starter(
        base_id=BASE,
        base_name=hostile,
        airtable=AirtableTable(TABLE_ID, hostile, tuple(fields)),
        postgres=pg(col("email"), col(hostile)),
    )
    _, client, table = loaded(plan)

    assert client.name == hostile and table.name == hostile
    assert table.fields[fid("hostile")].name == hostile
    assert table.fields[fid("hostile")].column == hostile
    assert set(table.fields) == {fid("Email"), fid("hostile")}
    assert table.ignored_fields == [fid("calc")]


def test_the_client_key_is_given_or_comes_from_the_base() -> None:
    assert starter([af("Email", "email")], [col("email")], client_key="acme").client_key == "acme"
    assert starter([af("Email", "email")], [col("email")], base_name=None).client_key == (
        "appacmesales00001"
    )


def test_the_table_key_comes_from_the_postgres_table() -> None:
    plan = init.plan_starter(
        base_id=BASE,
        base_name=None,
        airtable=at(af("Email", "email")),
        postgres=pg(col("email"), name="Sales-Leads 2024"),
    )
    assert plan.table_key == "sales_leads_2024"
    assert loaded(plan)[2].postgres.table == "Sales-Leads 2024"


def test_the_coverage_report() -> None:
    plan = starter(
        [af("E-mail", "email"), af("Name"), af("Score", "formula"), af("Size", "number")],
        [col("email"), col("size", "text"), col("internal_rating", "integer")],
    )
    report = "\n".join(init.coverage_report(plan))
    assert "  mapped: 1\n    E-mail → email (text)" in report
    assert "unmapped Airtable fields: 1\n    Name (singleLineText)" in report
    assert "unmapped columns (local-only): 1\n    internal_rating (integer)" in report
    assert "type mismatches (left commented out): 1\n    Size (number) ↔ size (text)" in report
    assert "Score: computed by Airtable (formula)" in report
    assert "owner: portal" in report


# ----- arguments, tables, errors ----------------------------------------------------------


def test_choose_table() -> None:
    tables = [{"id": "tblA", "name": "Leads"}, {"id": "tblB", "name": "Sales Prospects"}]
    assert init.choose_table(tables, "tblB", BASE, "x")["name"] == "Sales Prospects"
    assert init.choose_table(tables, "Leads", BASE, "x")["id"] == "tblA"
    assert init.choose_table(tables, "sales_prospects", BASE, "x")["id"] == "tblB"
    assert init.choose_table(tables, None, BASE, "sales_prospects")["id"] == "tblB"
    assert init.choose_table(tables[:1], None, BASE, "anything")["id"] == "tblA"
    with pytest.raises(init.InitError, match=r"pass --table with one of: Leads \(tblA\)"):
        init.choose_table(tables, None, BASE, "contacts")
    with pytest.raises(init.InitError, match="'Nope' was not found in base .* pass --table"):
        init.choose_table(tables, "Nope", BASE, "x")


def test_parse_postgres_table() -> None:
    assert init.parse_postgres_table("public.prospects") == ("public", "prospects")
    assert init.parse_postgres_table("crm.leads") == ("crm", "leads")
    assert init.parse_postgres_table("leads") == ("public", "leads")
    with pytest.raises(init.InitError, match="schema.table"):
        init.parse_postgres_table("public.")


def test_arguments_are_checked_and_a_pasted_token_is_never_echoed() -> None:
    init.check_arguments(BASE, "AIRTABLE_API_KEY", "acme")
    with pytest.raises(init.InitError, match="--base"):
        init.check_arguments("appShort", "AIRTABLE_API_KEY")
    with pytest.raises(init.InitError, match="--client"):
        init.check_arguments(BASE, "AIRTABLE_API_KEY", "Acme Sales")
    token = "patAbCdEf123456.0123456789abcdef"
    with pytest.raises(init.InitError, match="NAME of the variable") as caught:
        init.check_arguments(BASE, token)
    assert token not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "needle"),
    [
        (401, "set ACME_TOKEN"),
        (403, "check --base"),
        (404, "check --base"),
        (None, "AIRTABLE_ENDPOINT_URL"),
        (500, "failed for base"),
    ],
)
def test_airtable_failures_name_what_to_set(status: int | None, needle: str) -> None:
    error = AirtableRequestError(status, "SOME_ERROR", "message")
    message = init.airtable_failure(error, BASE, "ACME_TOKEN", "https://api.airtable.com")
    assert needle in message and "\n" not in message


def test_write_file_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.yaml"
    init.write_file(path, "first\n", force=False)
    with pytest.raises(init.InitError, match="--force"):
        init.write_file(path, "second\n", force=False)
    assert path.read_text() == "first\n"
    init.write_file(path, "third\n", force=True)
    assert path.read_text() == "third\n"
    assert [p.name for p in tmp_path.iterdir()] == ["reconcile.yaml"]  # no temporary left
