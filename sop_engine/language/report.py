"""What every check shares: a problem collector and the names coordinators wrote.

Handoffs expand into generated stages and transitions (see :mod:`build`); problems must
still speak of the state the coordinator wrote, and be reported once, where it was written.
"""

from __future__ import annotations

from collections.abc import Collection

from sop_engine.errors import Problem
from sop_engine.language.schema import did_you_mean
from sop_engine.language.spec import (
    BUILTIN_FIELDS,
    DeadlineSpec,
    HandoffSpec,
    SopSpec,
    StateSpec,
    TaskSpec,
    TransitionSpec,
    Where,
)

__all__ = [
    "Report",
    "disclosable_fields",
    "entered_handoff",
    "from_handoff",
    "generated",
    "transition_state",
    "user_state",
    "what",
]


class Report:
    """Collects problems for one SOP, with its key filled in."""

    def __init__(self, spec: SopSpec) -> None:
        self.spec = spec
        self.problems: list[Problem] = []

    def add(
        self, where: Where, message: str, *, state: str | None = None, hint: str | None = None
    ) -> None:
        self.problems.append(Problem(where.file, where.line, message, self.spec.key, state, hint))

    def ref(
        self,
        where: Where,
        kind: str,
        name: str | None,
        known: Collection[str],
        *,
        state: str | None = None,
        context: str = "",
    ) -> bool:
        """Report ``name`` unless it is one of ``known``; True when it is known."""
        if name is None or name in known:
            return True
        self.add(
            where,
            f"{context}unknown {kind} {name!r}",
            state=state,
            hint=did_you_mean(name, known),
        )
        return False


def user_state(spec: SopSpec, state: str) -> str:
    """The name a coordinator wrote: the handoff's, for one of its generated stages."""
    return spec.states[state].handoff or state if state in spec.states else state


def transition_state(spec: SopSpec, t: TransitionSpec) -> str | None:
    names = dict.fromkeys(user_state(spec, s) for s in t.sources)
    return ", ".join(names) if names else None


def what(t: TransitionSpec) -> str:
    return f"transition {t.id!r}: "


def generated(spec: SopSpec, state: StateSpec, item: DeadlineSpec | TaskSpec) -> bool:
    """Whether a handoff stage's deadline or task was made by the engine, not written."""
    return state.handoff is not None and item.where == spec.handoffs[state.handoff].where


def entered_handoff(spec: SopSpec, t: TransitionSpec) -> HandoffSpec | None:
    target = spec.states.get(t.target)
    if target is None or target.handoff is None or target.stage != "sent":
        return None
    return spec.handoffs[target.handoff]


def from_handoff(spec: SopSpec, t: TransitionSpec) -> bool:
    """Whether the transition's disclosure is the handoff's (checked once, at the handoff)."""
    h = entered_handoff(spec, t)
    return h is not None and t.discloses is not None and t.discloses.where == h.where


def disclosable_fields(spec: SopSpec) -> dict[str, str | None]:
    """Every disclosable field with its data category."""
    out: dict[str, str | None] = dict(BUILTIN_FIELDS)
    out.update((name, f.category) for name, f in spec.facts.items())
    return out
