"""Checks across the files of a directory: what no single file can know.

* Ids are unique across every file (agencies, hotlines and border points share one space),
  and each corridor is declared once.
* Every corridor an agency or border point names is declared in some file, and the entry's
  country is one end of it: a Thai shelter does not serve the Viet Nam-Cambodia corridor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from sop_engine.errors import Problem
from sop_engine.language.schema import did_you_mean
from sop_engine.language.spec import Where

if TYPE_CHECKING:
    from sop_engine.directory.loader import FileEntries

__all__ = ["cross_file_problems"]


def _at(where: Where, key: str) -> tuple[str, int]:
    found = where.of(key)
    return found.file, found.line


def _unique(entries: Iterable[tuple[str, str, Where]], key: str) -> list[Problem]:
    """A problem at each repeat of an id, naming where it was first written."""
    first: dict[str, Where] = {}
    problems = []
    for kind, ident, where in entries:
        seen = first.setdefault(ident, where)
        if seen is not where:
            problems.append(
                Problem(
                    *_at(where, key),
                    f"{kind} {ident}: duplicate {key} {ident!r}, first written at "
                    f"{seen.file}:{seen.line}",
                )
            )
    return problems


def cross_file_problems(parts: Sequence[FileEntries]) -> list[Problem]:
    """Every problem between the files' entries, in file order."""
    corridors = {c.code: c for p in parts for c in p.corridors}
    problems = _unique((("corridor", c.code, c.where) for p in parts for c in p.corridors), "code")
    problems += _unique(
        (
            *(("agency", a.id, a.where) for p in parts for a in p.agencies),
            *(("hotline", h.id, h.where) for p in parts for h in p.hotlines),
            *(("border point", b.id, b.where) for p in parts for b in p.border_points),
        ),
        "id",
    )

    def corridor_problem(kind: str, ident: str, country: str, code: str, where: Where) -> None:
        corridor = corridors.get(code)
        if corridor is None:
            problems.append(
                Problem(
                    *_at(where, "corridor" if kind == "border point" else "corridors"),
                    f"{kind} {ident}: unknown corridor {code!r}; corridors are declared in "
                    "the directory's corridors list",
                    hint=did_you_mean(code, corridors),
                )
            )
        elif country not in (corridor.origin, corridor.destination):
            problems.append(
                Problem(
                    *_at(where, "corridor" if kind == "border point" else "corridors"),
                    f"{kind} {ident}: corridor {code} runs between {corridor.origin} and "
                    f"{corridor.destination}, not through {country}",
                )
            )

    for part in parts:
        for a in part.agencies:
            for code in a.corridors:
                corridor_problem("agency", a.id, a.country, code, a.where)
        for b in part.border_points:
            corridor_problem("border point", b.id, b.country, b.corridor, b.where)
    return problems
