"""Stage 2 of reading the directory: check each file against the published JSON Schema.

``sop_definitions/directory.schema.json`` is the directory's contract: editors use it for
completion, and the loader checks every file against it before reading meaning into it.
Each violation becomes a :class:`~sop_engine.errors.Problem` at the line of the value at
fault, naming the entry by its id, with a "did you mean" for an unknown key or word.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from sop_engine.errors import Problem
from sop_engine.language.schema import did_you_mean
from sop_engine.language.source import DataPath, SourceDocument

__all__ = ["KEYS", "SECTIONS", "directory_schema", "schema_problems"]

KEYS: Mapping[str, frozenset[str]] = {
    "file": frozenset(
        {"$schema", "country", "note", "corridors", "agencies", "hotlines", "border_points"}
    ),
    "corridor": frozenset(
        {"code", "origin", "destination", "framework", "source", "last_verified", "verify", "note"}
    ),
    "agency": frozenset(
        {
            "id",
            "name",
            "country",
            "province",
            "agency_types",
            "services",
            "languages",
            "corridors",
            "corridor_roles",
            "contact_channel",
            "contact_address",
            "accepts_new_cases",
            "source",
            "last_verified",
            "synthetic",
            "verify",
            "note",
        }
    ),
    "hotline": frozenset(
        {
            "id",
            "number",
            "name",
            "operator",
            "purpose",
            "hours",
            "languages",
            "source",
            "last_verified",
            "verify",
            "note",
        }
    ),
    "border_point": frozenset(
        {
            "id",
            "name",
            "country",
            "corridor",
            "source",
            "last_verified",
            "verify",
            "synthetic",
            "note",
        }
    ),
}
"""The keys the loader reads, per kind of object; a test keeps them equal to the schema's."""

SECTIONS: Mapping[str, str] = {
    "corridors": "corridor",
    "agencies": "agency",
    "hotlines": "hotline",
    "border_points": "border_point",
}
"""The lists a file may hold, and the kind (a key of :data:`KEYS`) of their entries."""

_NOUNS = {
    "services": "service",
    "agency_types": "agency type",
    "languages": "language",
    "country": "country",
    "origin": "country",
    "destination": "country",
    "contact_channel": "contact channel",
    "corridor_roles": "corridor role",
}
_FORMS = {
    "id": "an id: capitals and dashes starting with the country, e.g. TH-MSDHS, TH-SYN-SHELTER-A",
    "code": "a corridor code: two country codes, e.g. TH-LA",
    "corridor": "a corridor code: two country codes, e.g. TH-LA",
    "corridors": "a corridor code: two country codes, e.g. TH-LA",
    "last_verified": "a date written YYYY-MM-DD",
    "number": "a number as dialled: digits, spaces or dashes, optionally a leading +",
}
_REQUIRED = re.compile(r"^'(?P<key>[^']+)' is a required property$")
_REQUIRED_HINTS = {
    "source": "cite the public source that names this entry, or write 'synthetic'",
    "last_verified": "the date the entry was last checked against its source",
}


@cache
def directory_schema() -> dict[str, Any]:
    """The published JSON Schema of a directory file."""
    text = resources.files("sop_definitions").joinpath("directory.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator() -> Draft202012Validator:
    # Checked against the metaschema by tests/directory/test_directory_schema.py, not on
    # every start.
    return Draft202012Validator(directory_schema())


def schema_problems(doc: SourceDocument) -> tuple[list[Problem], set[DataPath]]:
    """Every schema violation in ``doc``, located, and the paths of the entries at fault
    (``(section, index)``; shorter paths for a fault above the entries)."""
    problems: list[Problem] = []
    broken: set[DataPath] = set()
    for error in _validator().iter_errors(doc.data):
        path: DataPath = tuple(error.absolute_path)
        problems.extend(_problems_of(error, doc, path))
        broken.add(path[:2])
    return problems, broken


def _label(data: Any, path: DataPath) -> tuple[str, DataPath]:
    """What a message calls the entry at ``path``, and the rest of the path inside it."""
    if len(path) >= 2 and path[0] in SECTIONS and isinstance(path[1], int):
        entry = data[path[0]][path[1]]
        ident = entry.get("id", entry.get("code")) if isinstance(entry, dict) else None
        name = ident if isinstance(ident, str) else f"#{path[1] + 1}"
        return f"{SECTIONS[str(path[0])].replace('_', ' ')} {name}", path[2:]
    return "(top level)", path


def _problems_of(error: ValidationError, doc: SourceDocument, path: DataPath) -> list[Problem]:
    label, inner = _label(doc.data, path)
    where = f"{label}, {'.'.join(str(p) for p in inner)}" if inner else label
    keys = [p for p in path if isinstance(p, str)]
    last = keys[-1] if keys else ""
    at = doc.where(path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {})) if isinstance(error.schema, dict) else set()
        return [
            Problem(
                *doc.where((*path, key)),
                f"{where}: unknown key {key!r}",
                hint=did_you_mean(key, known),
            )
            for key in error.instance
            if key not in known
        ]
    if error.validator == "enum":
        noun = _NOUNS.get(last, last or "value")
        return [
            Problem(
                *at,
                f"{label}: unknown {noun} {error.instance!r}",
                hint=did_you_mean(str(error.instance), error.validator_value),
            )
        ]
    if error.validator == "dependentRequired":
        return [Problem(*at, f"{label}: a file with {error.message.split()[-1]} names its country")]
    if error.validator == "pattern":
        form = _FORMS.get(last, f"of the form {error.validator_value}")
        return [Problem(*at, f"{where}: {error.instance!r} is not {form}")]
    if error.validator == "required" and (missing := _REQUIRED.match(error.message)):
        key = missing.group("key")
        return [Problem(*at, f"{where}: missing {key!r}", hint=_REQUIRED_HINTS.get(key))]
    if error.validator == "type" and not isinstance(error.instance, (dict, list, str)):
        hint = (
            "quote it: YAML reads it as a number or boolean"
            if "string" in str(error.validator_value)
            else None
        )
        return [Problem(*at, f"{where}: {error.message}", hint=hint)]
    return [Problem(*at, f"{where}: {error.message}")]
