"""The project file's schema: errors name the file, the line and the key, and say what to write;
the demo's shipped file loads; links are checked and ordered."""

import pytest

from reconcile_pipeline.config.load import DEMO_FILE, ConfigError, Project, load, parse
from reconcile_pipeline.engine.mapping import FieldKind, Owner

GOOD = """\
version: 1
clients:
  own:
    base_id: appOwnBase0000001
    tables:
      people:
        airtable_table: tblPeople00000001
        postgres: {table: people}
        fields:
          fldMail0000000001: {name: E-mail, column: email, type: text}
"""


def errors_of(text: str) -> str:
    with pytest.raises(ConfigError) as raised:
        parse(text, "reconcile.yaml")
    return str(raised.value)


def test_the_demo_file_loads_into_id_keyed_mappings():
    project = load(DEMO_FILE)
    leads = next(m for m in project.mappings() if m.name == "leads")

    assert project.is_demo
    assert leads.fields_by_id and leads.soft_delete_column == "is_active"
    claimed_by = next(f for f in leads.fields if f.column == "claimed_by")
    assert claimed_by.airtable_name.startswith("fld") and claimed_by.label == "Claimed By"
    assert claimed_by.owner is Owner.PORTAL
    assert next(f for f in leads.fields if f.column == "attachments").kind is (
        FieldKind.ATTACHMENTS
    )


def test_an_unknown_key_names_its_line_and_key():
    text = GOOD.replace("postgres: {table: people}", "postgres: {table: people, tabel: x}")

    message = errors_of(text)

    assert message.startswith("reconcile.yaml:8: clients.own.tables.people.postgres.tabel")
    assert "unknown key" in message


def test_ids_and_names_are_checked_with_what_to_write():
    assert "not an Airtable base id" in errors_of(GOOD.replace("appOwnBase0000001", "myBase"))
    assert "not an Airtable table id" in errors_of(GOOD.replace("tblPeople00000001", "People"))
    assert "keyed by Airtable field id" in errors_of(GOOD.replace("fldMail0000000001", "E-mail"))
    assert "type" in errors_of(GOOD.replace("type: text", "type: txt"))


def test_a_token_pasted_into_token_env_is_refused_without_echoing_it():
    # Shaped like a personal access token (pat…, a dot, a secret part), built here so that no
    # token-shaped literal sits in the repository.
    secret = "fakesecret" * 3
    pasted = "pat" + "X" * 14 + "." + secret
    text = GOOD.replace("    tables:", f"    token_env: {pasted}\n    tables:")

    message = errors_of(text)

    assert "NAME of an environment variable" in message
    assert secret not in message


def test_two_fields_on_one_column_and_a_mapped_soft_delete_column_are_refused():
    doubled = GOOD + "          fldMail0000000002: {name: Mail 2, column: email, type: text}\n"
    assert "columns mapped twice: ['email']" in errors_of(doubled)
    soft = GOOD.replace(
        "postgres: {table: people}", "postgres: {table: people, soft_delete_column: email}"
    )
    assert "soft_delete_column email is also a mapped field" in errors_of(soft)


def test_links_must_name_a_table_of_the_client_and_cannot_form_a_cycle():
    link = "          fldLink0000000001: {name: Team, column: team, type: link, links_to: teams}\n"
    assert "'teams' is not a table of this client" in errors_of(GOOD + link)

    cyclic = (
        GOOD
        + "          fldLink0000000001: {name: Team, column: team, type: link, links_to: teams}\n"
        + """      teams:
        airtable_table: tblTeams000000001
        postgres: {table: teams}
        fields:
          fldName0000000001: {name: Name, column: name, type: text}
          fldLink0000000002: {name: Lead, column: lead, type: link, links_to: people}
"""
    )
    assert "links form a cycle: people → teams → people" in errors_of(cyclic)

    portal_link = GOOD + (
        "          fldLink0000000001: {name: Me, column: me, type: link, links_to: people, "
        "owner: portal}\n"
    )
    assert "links are pulled only" in errors_of(portal_link)


def test_linked_tables_come_before_the_tables_linking_to_them():
    text = GOOD + (
        "          fldLink0000000001: {name: Team, column: team, type: link, links_to: teams}\n"
        """      teams:
        airtable_table: tblTeams000000001
        postgres: {table: teams, key_column: ref}
        fields:
          fldName0000000001: {name: Name, column: name, type: text}
"""
    )

    mappings = Project(path=DEMO_FILE, config=parse(text)).mappings()

    assert [m.name for m in mappings] == ["teams", "people"]
    [link] = mappings[1].link_fields
    assert (link.link_target.table, link.link_target.key_column) == ("teams", "ref")


def test_invalid_yaml_names_the_line():
    assert errors_of("clients:\n  own: [unclosed\n").startswith("reconcile.yaml:")
