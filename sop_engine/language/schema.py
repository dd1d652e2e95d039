"""Stage 2: check a source document against the published JSON Schema.

The schema at ``sop_definitions/sop.schema.json`` is the language's contract: editors use it
for completion, and the engine validates every file against it before reading meaning into
it. Each violation becomes a :class:`~sop_engine.errors.Problem` at the line of the value
at fault, with a "did you mean" for unknown keys.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from rapidfuzz import fuzz, process

from sop_engine.errors import Problem
from sop_engine.language.source import DataPath, SourceDocument

__all__ = ["did_you_mean", "inlined", "schema", "schema_problems", "validator"]


@cache
def schema() -> dict[str, Any]:
    """The published SOP JSON Schema."""
    text = resources.files("sop_definitions").joinpath("sop.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _without_required(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: _without_required(v) for k, v in node.items() if k not in ("required", "if", "then")
        }
    if isinstance(node, list):
        return [_without_required(v) for v in node]
    return node


_DEFS = "#/$defs/"


def inlined(node: Any, defs: dict[str, Any], trail: tuple[str, ...] = ()) -> Any:
    """``node`` with every ``$ref`` to ``#/$defs/NAME`` replaced by that definition: the same
    schema, checked about 2.5 times faster (jsonschema resolves a reference anew at every value
    it checks). A reference beside other keywords becomes ``allOf`` with them.

    :raises ValueError: a definition refers to itself, which cannot be inlined.
    """
    if isinstance(node, list):
        return [inlined(v, defs, trail) for v in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if not (isinstance(ref, str) and ref.startswith(_DEFS)):
        return {k: inlined(v, defs, trail) if k != "$defs" else v for k, v in node.items()}
    name = ref.removeprefix(_DEFS)
    if name in trail:
        raise ValueError(f"the schema's definition {name!r} refers to itself")
    target = inlined(defs[name], defs, (*trail, name))
    rest = {k: inlined(v, defs, trail) for k, v in node.items() if k != "$ref"}
    return {"allOf": [target, rest]} if rest else target


@cache
def validator(partial: bool = False) -> Draft202012Validator:
    """The full validator, or with ``partial`` one that requires nothing: an SOP that
    ``extends`` another names only what it overrides, and is checked in full once merged.

    The schema is the engine's own: ``tests/language/test_schema.py`` checks it against the
    metaschema, which each command would otherwise pay for (a third of ``validate FILE``).
    Its references are :func:`inlined`."""
    full = schema()
    checked = inlined(full, full.get("$defs", {}))
    return Draft202012Validator(_without_required(checked) if partial else checked)


def did_you_mean(name: str, candidates: Any) -> str | None:
    """A "did you mean" hint for a near-miss name, or None: the candidate most similar to
    ``name`` (by the ratio of their longest common subsequence, at least 0.6; of equals, the
    last in sorted order, as :func:`difflib.get_close_matches` picks).

    RapidFuzz computes it: difflib took up to 30 ms for one name among 200 alike ones, and an
    SOP at the bounds can hold thousands of near-miss names (under 0.1 ms each here)."""
    choices = sorted((str(c) for c in candidates), reverse=True)
    found = process.extractOne(name, choices, scorer=fuzz.ratio, score_cutoff=60)
    return f"did you mean {found[0]!r}?" if found is not None else None


def _prose_hint(key: str) -> str | None:
    """A "key" with spaces is almost always text cut at a comma inside ``{...}``."""
    if " " in key.strip():
        return "a comma inside { } starts a new key: put the text in quotes"
    return None


def _describe(path: DataPath) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _problems_of(error: ValidationError, doc: SourceDocument, sop: str | None) -> list[Problem]:
    path: DataPath = tuple(error.absolute_path)
    where = _describe(path)
    if (
        error.validator == "additionalProperties"
        and isinstance(error.instance, dict)
        and isinstance(error.schema, dict)
    ):
        known = set(error.schema.get("properties", {}))
        problems = []
        for key in error.instance:
            if key in known:
                continue
            problems.append(
                Problem(
                    *doc.where((*path, key)),
                    f"unknown key {key!r} in {where}",
                    sop=sop,
                    hint=did_you_mean(key, known) or _prose_hint(key),
                )
            )
        return problems
    if error.validator == "required":
        return [Problem(*doc.where(path), f"{where}: {error.message}", sop=sop)]
    if error.validator == "oneOf" and error.context:
        best = min(error.context, key=lambda e: len(list(e.absolute_path)))
        message = f"{where}: {best.message}"
    elif error.validator == "pattern":
        message = (
            f"{where}: {error.instance!r} is not of the expected form ({error.validator_value})"
        )
    else:
        message = f"{where}: {error.message}"
    return [Problem(*doc.where(path), message, sop=sop)]


def schema_problems(doc: SourceDocument, *, partial: bool | None = None) -> list[Problem]:
    """Every schema violation in ``doc``, located. By default a document that ``extends``
    another is checked as a partial one (see :func:`validator`)."""
    data = doc.data
    sop = data.get("key") if isinstance(data, dict) else None
    sop = sop if isinstance(sop, str) else None
    if partial is None:
        partial = isinstance(data, dict) and "extends" in data
    if partial and isinstance(data, dict):
        # Identity stays required even in a partial document.
        missing = [k for k in ("key", "version") if k not in data]
        if missing:
            return [
                Problem(*doc.where(()), f"(top level): {k!r} is a required property", sop=sop)
                for k in missing
            ]
    problems: list[Problem] = []
    for error in validator(partial).iter_errors(data):
        problems.extend(_problems_of(error, doc, sop))
    return problems
