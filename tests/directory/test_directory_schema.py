"""The published directory schema and the loader speak the same language."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from sop_engine.directory import (
    AGENCY_TYPES,
    CONTACT_CHANNELS,
    CORRIDOR_ROLES,
    COUNTRIES,
    LANGUAGES,
    SERVICES,
    directory_schema,
)
from sop_engine.directory.schema import KEYS, SECTIONS

ROOT = Path(__file__).resolve().parents[2]


def _objects(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    every = {"file": schema, **schema["$defs"]}
    return {name: d for name, d in every.items() if d.get("type") == "object"}


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(directory_schema())


def test_published_schema_file_is_the_one_the_engine_uses() -> None:
    path = ROOT / "sop_definitions" / "directory.schema.json"
    assert json.loads(path.read_text("utf-8")) == directory_schema()


def test_the_schema_enums_equal_the_python_vocabularies() -> None:
    defs = directory_schema()["$defs"]
    assert defs["country"]["enum"] == list(COUNTRIES)
    assert defs["agency_type"]["enum"] == list(AGENCY_TYPES)
    assert defs["service"]["enum"] == list(SERVICES)
    assert defs["language"]["enum"] == list(LANGUAGES)
    assert defs["contact_channel"]["enum"] == list(CONTACT_CHANNELS)
    assert defs["corridor_role"]["enum"] == list(CORRIDOR_ROLES)


def test_the_vocabularies_are_the_ones_the_brief_names() -> None:
    assert set(SERVICES) == {
        "clinical_care",
        "psychosocial_support",
        "safety_and_shelter",
        "legal_aid_and_justice",
        "repatriation",
        "economic_reintegration",
        "case_management",
    }
    assert set(COUNTRIES) == {"TH", "KH", "LA", "MM", "VN"}
    assert {"th", "km", "lo", "my", "vi", "en", "hmn"} <= set(LANGUAGES)
    assert set(CONTACT_CHANNELS) == {"email", "webhook", "in_app", "phone"}


def test_loader_keys_equal_schema_properties() -> None:
    objects = _objects(directory_schema())
    assert set(KEYS) == set(objects), "every object kind of the schema is read by the loader"
    for kind, keys in KEYS.items():
        assert keys == set(objects[kind]["properties"]), f"{kind}: loader and schema differ"


def test_every_list_a_file_holds_is_a_section_of_the_loader() -> None:
    top = directory_schema()["properties"]
    lists = {name for name, d in top.items() if d.get("type") == "array"}
    assert lists == set(SECTIONS)
    for section, kind in SECTIONS.items():
        assert top[section]["items"] == {"$ref": f"#/$defs/{kind}"}


def test_every_object_refuses_unknown_keys() -> None:
    for name, d in _objects(directory_schema()).items():
        assert d.get("additionalProperties") is False, name
