"""Facts sent with an event: checked against the SOP's declarations, split into the plain
ones and the identifying ones (which are sealed with the case key, never stored in clear)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import date, datetime
from typing import Any

from sop_engine.errors import InvalidInput
from sop_engine.language.schema import did_you_mean
from sop_engine.language.spec import FactSpec, SopSpec

__all__ = ["MAX_TEXT", "check_facts", "split_identifying"]

MAX_TEXT = 10_000
"""Longest string fact accepted, in characters."""


def _check_value(fact: FactSpec, value: Any) -> Any:  # noqa: PLR0912 (one branch per type)
    name = f"facts.{fact.name}"
    if value is None:
        return None
    kind = fact.type
    if kind in ("string", "enum", "date", "datetime") and not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", field=name)
    if kind == "string" and len(value) > MAX_TEXT:
        raise InvalidInput(f"{name} is longer than {MAX_TEXT} characters", field=name)
    if kind == "enum" and value not in fact.values:
        raise InvalidInput(f"{name} must be one of {', '.join(fact.values)}", field=name)
    if kind == "date":
        try:
            date.fromisoformat(value)
        except ValueError:
            raise InvalidInput(f"{name} must be a date (YYYY-MM-DD)", field=name) from None
    if kind == "datetime":
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput(f"{name} must be an ISO 8601 timestamp", field=name) from None
        if parsed.tzinfo is None:
            raise InvalidInput(f"{name} must carry its time zone", field=name)
    if kind == "boolean" and not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false", field=name)
    if kind in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"{name} must be a number", field=name)
        if kind == "integer" and not (isinstance(value, int) or value.is_integer()):
            raise InvalidInput(f"{name} must be a whole number", field=name)
        if fact.min is not None and value < fact.min:
            raise InvalidInput(f"{name} must be at least {fact.min:g}", field=name)
        if fact.max is not None and value > fact.max:
            raise InvalidInput(f"{name} must be at most {fact.max:g}", field=name)
        value = int(value) if kind == "integer" else value
    if kind == "list" and not (
        isinstance(value, list)
        and all(isinstance(v, str | int | float | bool) for v in value)
        and len(value) <= 100
    ):
        raise InvalidInput(f"{name} must be a list of at most 100 plain values", field=name)
    return value


def check_facts(
    spec: SopSpec, facts: Mapping[str, Any], allowed: Collection[str] | None
) -> dict[str, Any]:
    """Validate ``facts``; ``allowed`` limits which may be set (None: any declared fact)."""
    if not isinstance(facts, Mapping):
        raise InvalidInput("facts must be an object", field="facts")
    checked: dict[str, Any] = {}
    for name, value in facts.items():
        fact = spec.facts.get(name)
        if fact is None:
            hint = did_you_mean(name, spec.facts)
            raise InvalidInput(
                f"unknown fact {name!r}" + (f" ({hint})" if hint else ""), field=f"facts.{name}"
            )
        if allowed is not None and name not in allowed:
            may = ", ".join(sorted(allowed)) or "none"
            raise InvalidInput(
                f"this event may not set fact {name!r} (it may set: {may})", field=f"facts.{name}"
            )
        checked[name] = _check_value(fact, value)
    return checked


def split_identifying(
    spec: SopSpec, facts: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(plain facts, identifying facts) by the SOP's marks on facts and data categories."""
    plain: dict[str, Any] = {}
    identifying: dict[str, Any] = {}
    for name, value in facts.items():
        fact = spec.facts[name]
        category = spec.data_categories.get(fact.category or "")
        secret = fact.identifying or (category is not None and category.identifying)
        (identifying if secret else plain)[name] = value
    return plain, identifying
