"""Stage 6: one ``transitions`` state machine per SOP version, shared by all its referrals.

The machine is built with ``model=None`` and ``auto_transitions=False`` and is never given a
model to keep: a referral is passed to an event's ``trigger`` for the length of one call.
Which transition may run is decided by the caller: each machine transition carries a
condition that asks ``event.kwargs["allow"](transition_id)``, and records the id of the one
that ran in ``event.kwargs["chosen"]``, so the runtime applies its role, guard and consent
rules while the machine stays the single place a state moves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from transitions import Machine
from transitions.core import EventData

from sop_engine.language.spec import SopSpec

__all__ = ["StateHolder", "build_machine", "trigger"]


class StateHolder(Protocol):
    state: str


def _condition(transition_id: str) -> Callable[[EventData], bool]:
    def allowed(event: EventData) -> bool:
        allow: Callable[[str], bool] = event.kwargs["allow"]
        return allow(transition_id)

    return allowed


def _record(transition_id: str) -> Callable[[EventData], None]:
    def chosen(event: EventData) -> None:
        event.kwargs["chosen"].append(transition_id)

    return chosen


def build_machine(spec: SopSpec) -> Machine:
    """The machine for a checked spec."""
    return Machine(
        model=None,
        states=list(spec.states),
        initial=spec.initial_state,
        transitions=[
            {
                "trigger": t.event,
                "source": list(t.sources),
                "dest": t.target,
                "conditions": [_condition(t.id)],
                "after": [_record(t.id)],
            }
            for t in spec.transitions
        ],
        auto_transitions=False,
        send_event=True,
        ignore_invalid_triggers=False,
    )


def trigger(machine: Machine, holder: Any, event: str, allow: Callable[[str], bool]) -> str | None:
    """Fire ``event`` on ``holder`` (anything with a ``state``); return the transition id that
    ran, or None when none was allowed. The state is changed on ``holder`` in place."""
    chosen: list[str] = []
    machine.events[event].trigger(holder, allow=allow, chosen=chosen)
    return chosen[0] if chosen else None
