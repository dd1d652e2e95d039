"""Stage 2: check a source document against the published JSON Schema.

The schema at ``sop_definitions/sop.schema.json`` is the language's contract: editors use it
for completion, and the engine validates every file against it before reading meaning into
it. Each violation becomes a :class:`~sop_engine.errors.Problem` at the line of the value
at fault, with a "did you mean" for unknown keys.
"""

from __future__ import annotations

import difflib
import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from sop_engine.errors import Problem
from sop_engine.language.source import DataPath, SourceDocument

__all__ = ["did_you_mean", "schema", "schema_problems", "validator"]


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


@cache
def validator(partial: bool = False) -> Draft202012Validator:
    """The full validator, or with ``partial`` one that requires nothing: an SOP that
    ``extends`` another names only what it overrides, and is checked in full once merged.

    The schema is the engine's own: ``tests/language/test_schema.py`` checks it against the
    metaschema, which each command would otherwise pay for (a third of ``validate FILE``)."""
    return Draft202012Validator(_without_required(schema()) if partial else schema())


def did_you_mean(name: str, candidates: Any) -> str | None:
    """A "did you mean" hint for a near-miss name, or None."""
    close = difflib.get_close_matches(name, sorted(str(c) for c in candidates), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


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
