"""The published JSON Schema and the loader speak the same language."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from sop_engine.language.build import KEYS
from sop_engine.language.schema import (
    _without_required,
    inlined,
    schema,
    schema_problems,
    validator,
)
from sop_engine.language.source import parse_source

ROOT = Path(__file__).resolve().parents[2]


def _properties(definition: dict[str, Any]) -> set[str]:
    return set(definition.get("properties", {}))


def test_published_schema_file_is_the_one_the_engine_uses() -> None:
    published = json.loads((ROOT / "sop_definitions" / "sop.schema.json").read_text("utf-8"))
    assert published == schema()


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(schema())
    Draft202012Validator.check_schema(_without_required(schema()))


def test_loader_keys_equal_schema_properties() -> None:
    s = schema()
    definitions = {"sop": s, **s["$defs"]}
    objects = {
        name for name, d in definitions.items() if d.get("type") == "object" and "properties" in d
    }
    assert set(KEYS) == objects, "every object kind of the schema is read by the builder"
    for kind, keys in KEYS.items():
        assert keys == _properties(definitions[kind]), f"{kind}: loader and schema differ"


def test_every_object_refuses_unknown_keys() -> None:
    s = schema()
    for name, d in {"sop": s, **s["$defs"]}.items():
        if d.get("type") == "object" and "properties" in d:
            assert d.get("additionalProperties") is False, name


def test_unknown_key_gets_a_did_you_mean() -> None:
    doc = parse_source("key: a\nversion: 1\nextends: b@1\nstates:\n  s: {inital: true}\n", "x")
    (problem,) = schema_problems(doc)
    assert problem.line == 5
    assert problem.message == "unknown key 'inital' in states.s"
    assert problem.hint == "did you mean 'initial'?"


def test_standalone_sop_must_be_complete_but_an_extension_need_not_be() -> None:
    standalone = parse_source("key: a\nversion: 1\n")
    missing = {p.message for p in schema_problems(standalone)}
    assert "(top level): 'states' is a required property" in missing
    extension = parse_source("key: a\nversion: 1\nextends: b@1\n")
    assert schema_problems(extension) == []


def test_extension_must_still_say_who_it_is() -> None:
    doc = parse_source("extends: b@1\ntitle: t\n")
    assert {p.message for p in schema_problems(doc)} == {
        "(top level): 'key' is a required property",
        "(top level): 'version' is a required property",
    }


def test_text_cut_by_a_comma_in_a_flow_mapping_gets_a_hint() -> None:
    """Regression: `{description: Lead agency, sub-cluster}` silently made two keys."""
    doc = parse_source("key: a\nversion: 1\nextends: b@1\nroles:\n  c: {description: A, B or C}\n")
    (problem,) = schema_problems(doc)
    assert problem.line == 5
    assert problem.message == "unknown key 'B or C' in roles.c"
    assert problem.hint == "a comma inside { } starts a new key: put the text in quotes"


def _errors(validator: Draft202012Validator, data: Any) -> list[tuple[Any, ...]]:
    return sorted(
        (tuple(map(str, e.absolute_path)), e.validator, e.message)
        for e in validator.iter_errors(data)
    )


def test_the_inlined_schema_finds_the_same_faults_as_the_published_one() -> None:
    """The validator inlines the schema's references (2.5 times faster); on every fixture,
    shipped SOP and broken variant of them it must find exactly what the schema finds."""
    fixtures = ROOT / "tests" / "language" / "fixtures"
    texts = [p.read_text("utf-8") for p in sorted(fixtures.rglob("*.yaml"))]
    texts += [p.read_text("utf-8") for p in sorted((ROOT / "sop_definitions").rglob("*.sop.yaml"))]
    documents = []
    for text in texts:
        try:
            documents.append(parse_source(text).data)
        except ValueError:
            continue
    broken = [
        {**documents[0], "states": {"s": {"deadlines": {"d": {"after": "soon"}}}}},
        {**documents[0], "transitions": {"t": {"from": 3, "to": [], "roles": "x", "guard": 1}}},
        {**documents[0], "facts": {"Bad-Name": {"type": "enum"}}, "version": "one"},
        # A reference beside its own keyword (minItems): both must hold.
        {**documents[0], "transitions": {"t": {"from": "a", "to": "b", "roles": []}}},
    ]
    assert len(documents) > 30
    for partial in (False, True):
        published = Draft202012Validator(_without_required(schema()) if partial else schema())
        for data in [*documents, *broken]:
            assert _errors(validator(partial), data) == _errors(published, data)


def test_a_definition_that_refers_to_itself_cannot_be_inlined() -> None:
    defs = {"node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/node"}}}}
    with pytest.raises(ValueError, match="'node' refers to itself"):
        inlined({"$ref": "#/$defs/node"}, defs)
