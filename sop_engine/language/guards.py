"""Guards: safe expressions in CEL (Common Expression Language), compiled once per SOP version.

A guard sees every fact the SOP declares by name (``null`` while unset), plus:

=====================  ==========================================================
``facts``              map of the facts that are set (so ``has(facts.risk_level)`` works)
``consent``            map of consent scope name to whether a covering grant exists
``now``                the current time (timestamp)
``incident_at``        when the incident happened (timestamp or null)
``disclosed_at``       when the survivor disclosed (timestamp or null)
``hours_since_incident``  hours from the incident to now (double; -1.0 when unknown)
``origin``             the referral's origin country code
``destination``        the referral's destination country code
=====================  ==========================================================

CEL cannot loop forever, open files or call Python; only the standard functions listed in
:data:`ALLOWED_FUNCTIONS` may be used. Names are checked when the SOP compiles, so that a
misspelt fact is a definition error with a "did you mean", never a surprise at run time.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sop_engine.language import celext
from sop_engine.language.schema import did_you_mean

_CEL = celext.load()

__all__ = [
    "ALLOWED_FUNCTIONS",
    "BUILTIN_VARIABLES",
    "CompiledGuard",
    "GuardCompileError",
    "compile_guard",
]

BUILTIN_VARIABLES = frozenset(
    {
        "facts",
        "consent",
        "now",
        "incident_at",
        "disclosed_at",
        "hours_since_incident",
        "origin",
        "destination",
    }
)

ALLOWED_FUNCTIONS = frozenset(
    {
        # operators, as CEL names their overloads
        "_&&_",
        "_||_",
        "!_",
        "-_",
        "_==_",
        "_!=_",
        "_<_",
        "_<=_",
        "_>_",
        "_>=_",
        "_+_",
        "_-_",
        "_*_",
        "_/_",
        "_%_",
        "_?_:_",
        "_[_]",
        "@in",
        "@not_strictly_false",
        # standard functions and macros
        "size",
        "has",
        "contains",
        "startsWith",
        "endsWith",
        "matches",
        "exists",
        "all",
        "exists_one",
        "map",
        "filter",
        "int",
        "uint",
        "double",
        "string",
        "bool",
        "timestamp",
        "duration",
        "getFullYear",
        "getMonth",
        "getDayOfMonth",
        "getHours",
    }
)

_COMPREHENSION = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_CONSENT_REF = re.compile(r"\bconsent\s*\.\s*([A-Za-z_]\w*)")
_CONSENT_INDEX = re.compile(r"\bconsent\s*\[\s*['\"]([^'\"]*)['\"]\s*\]")


class GuardCompileError(ValueError):
    """A guard that does not parse, or names something that does not exist."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class CompiledGuard:
    source: str
    program: Any
    variables: frozenset[str]
    consent_scopes: frozenset[str]

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        """True only when the expression evaluates to exactly ``true``."""
        return self.program.execute(dict(context)) is True


def compile_guard(
    source: str, facts: Collection[str], consent_scopes: Collection[str]
) -> CompiledGuard:
    """Parse ``source`` and check every name it uses; raise :class:`GuardCompileError`."""
    try:
        program = _CEL.compile(source)
    except (ValueError, RuntimeError) as exc:
        detail = str(exc).split("\n")[0].replace(f"Failed to parse expression {source!r}: ", "")
        raise GuardCompileError(f"guard does not compile: {detail}") from None
    bound = set(_COMPREHENSION.findall(source))
    known = set(facts) | BUILTIN_VARIABLES | bound
    for name in program.variables():
        if name not in known:
            raise GuardCompileError(
                f"guard uses unknown fact {name!r}", did_you_mean(name, known - bound)
            )
    for fn in program.functions():
        if fn not in ALLOWED_FUNCTIONS:
            raise GuardCompileError(f"guard calls unknown function {fn!r}")
    scopes = set(_CONSENT_REF.findall(source)) | set(_CONSENT_INDEX.findall(source))
    for scope in sorted(scopes):
        if scope not in consent_scopes:
            raise GuardCompileError(
                f"guard refers to unknown consent scope {scope!r}",
                did_you_mean(scope, consent_scopes),
            )
    return CompiledGuard(source, program, frozenset(program.variables()), frozenset(scopes))
