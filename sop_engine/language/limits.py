"""How large an SOP may be: every bound of the language, in one place.

The bounds keep the cost of checking any document the engine accepts small (well under 2 s
of CPU for the largest one, measured in ``bench/``), whoever wrote it, so that an upload can
never occupy the server. They sit far above what a real SOP needs: the largest SOP of the
shipped library holds under 1,000 values in 8 levels, 11 states and 17 transitions, and with
the baseline it extends about 1,600 values.

* Reading (:mod:`~sop_engine.language.source`): :data:`MAX_FILE_BYTES`, :data:`MAX_DEPTH`
  (checked while YAML is composed, so that no depth of nesting reaches Python's recursion
  limit), :data:`MAX_VALUES` (aliases expanded), :data:`MAX_ENTRIES`, :data:`MAX_ALIASES`.
* After ``extends`` is resolved (:func:`size_problems`, for each document with everything
  it inherits): :data:`MAX_VALUES`, :data:`MAX_STATES`, :data:`MAX_TRANSITIONS`,
  :data:`MAX_GUARD_CHARS`; and :data:`MAX_EXTENDS` for the chain of parents (checked by
  :func:`~sop_engine.language.inherit.resolve_extends`).

Each refusal is a :class:`~sop_engine.errors.Problem` naming the bound and the line.
``docs/sop-language.md`` ("YAML rules") lists them for coordinators.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sop_engine.errors import Problem

if TYPE_CHECKING:
    from sop_engine.language.source import SourceDocument

__all__ = [
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_ENTRIES",
    "MAX_EXTENDS",
    "MAX_FILE_BYTES",
    "MAX_GUARD_CHARS",
    "MAX_STATES",
    "MAX_TRANSITIONS",
    "MAX_VALUES",
    "count_values",
    "size_problems",
]

MAX_FILE_BYTES = 1024 * 1024
"""An SOP is a few hundred lines; a megabyte is already far beyond any real one."""
MAX_DEPTH = 32
"""Levels of nesting: a real SOP needs 8."""
MAX_VALUES = 6_000
"""Values in a document (each mapping, list and scalar), aliases expanded: an alias bomb stops
here long before memory suffers."""
MAX_ENTRIES = 1_000
"""Keys in one mapping, items in one list."""
MAX_ALIASES = 200
"""Aliases (``*name``) in a document: an honest SOP needs a handful."""
MAX_STATES = 200
"""States an SOP declares, its parents' included (each handoff adds its stages to these)."""
MAX_TRANSITIONS = 300
"""Transitions an SOP declares, its parents' included."""
MAX_GUARD_CHARS = 500
"""Characters in one guard: the longest shipped guard has under 100, and compiling CEL costs
about 1 ms per 200 characters."""
MAX_EXTENDS = 4
"""SOPs above one in its chain of ``extends`` (a baseline, a national SOP, a corridor ...)."""


def count_values(data: Any) -> int:
    """How many values ``data`` holds (each mapping, list and scalar, the top one included),
    counted without recursion."""
    count = 0
    stack = [data]
    while stack:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count


def size_problems(doc: SourceDocument) -> list[Problem]:
    """What in ``doc`` (a document with what it inherits merged in) is over a bound."""
    data = doc.data
    if not isinstance(data, dict):
        return []
    sop = data.get("key") if isinstance(data.get("key"), str) else None
    inherited = " with what it extends" if "extends" in data else ""
    problems = []
    values = count_values(data)
    if values > MAX_VALUES:
        where = doc.where(("extends",)) if "extends" in data else doc.where(())
        message = f"the SOP{inherited} holds {values} values; at most {MAX_VALUES} are allowed"
        problems.append(Problem(*where, message, sop=sop))
    for name, bound in (("states", MAX_STATES), ("transitions", MAX_TRANSITIONS)):
        items = data.get(name)
        if isinstance(items, dict) and len(items) > bound:
            message = f"the SOP{inherited} has {len(items)} {name}; at most {bound} are allowed"
            # At the first one the SOP declares itself, rather than at its parent's.
            own = [loc for _, loc in doc.child_locations((name,)) if loc[0] == doc.file]
            problems.append(Problem(*min(own, default=doc.where((name,))), message, sop=sop))
    transitions = data.get("transitions")
    for name, transition in transitions.items() if isinstance(transitions, dict) else ():
        guard = transition.get("guard") if isinstance(transition, dict) else None
        if isinstance(guard, str) and len(guard) > MAX_GUARD_CHARS:
            message = (
                f"transition {name!r}: the guard has {len(guard)} characters; "
                f"at most {MAX_GUARD_CHARS} are allowed"
            )
            problems.append(Problem(*doc.where(("transitions", name, "guard")), message, sop=sop))
    return problems
