"""Stage 6: one ``transitions`` state machine per SOP version, shared by all its referrals.

The machine is built with ``model=None`` and ``auto_transitions=False`` and is never given a
model to keep: a referral is passed to an event's ``trigger`` for the length of one call.
Which transition may run is decided by the caller: each machine transition carries a
condition that asks ``event.kwargs["allow"](transition_id)``, and records the id of the one
that ran in ``event.kwargs["chosen"]``, so the runtime applies its role, guard and consent
rules while the machine stays the single place a state moves: the runtime takes the state
the machine moved its holder to.

Parallel handoffs (``handoff: {parallel: true}``) are regions beside the case's own state.
The machine holds their stages too, and the states a closed one is in (``NAME.idle``, never
sent; ``NAME.delivered``, ``.declined``, ``.revoked``, ended); a trigger moves one holder:
the case's state, or one parallel handoff's stage. ``transitions``' own parallel states
(``HierarchicalMachine``) model this directly but cost about 1.3 ms per trigger on this
machine against 60 µs for this flat machine, more than a whole ``fire``; so the regions
are flat states of one machine, and the runtime holds one of them per open handoff.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from transitions import Machine
from transitions.core import EventData

from sop_engine.language.spec import ENDED_STAGES, IDLE_STAGE, SopSpec, TransitionSpec

__all__ = [
    "StateHolder",
    "build_machine",
    "closed_stages",
    "idle",
    "machine_sources",
    "trigger",
]


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


def idle(region: str) -> str:
    """The machine's state of parallel handoff ``region`` before it was ever sent."""
    return f"{region}.{IDLE_STAGE}"


def closed_stages(region: str) -> list[str]:
    """The machine's states of parallel handoff ``region`` while it is not open."""
    return [idle(region), *(f"{region}.{stage}" for stage in ENDED_STAGES)]


def machine_sources(t: TransitionSpec) -> list[str]:
    """Where ``t`` leaves from in the machine: a transition opening a parallel handoff moves
    it from not open (never sent, or ended) to sent; the case's state it needs is the
    caller's condition."""
    return closed_stages(t.region) if t.opens and t.region is not None else list(t.sources)


def build_machine(spec: SopSpec) -> Machine:
    """The machine for a checked spec: the case's states and, for each parallel handoff, its
    stages and its idle state. A trigger moves one holder: the case's state, or one
    parallel handoff's stage."""
    return Machine(
        model=None,
        states=[*spec.states, *(s for r in spec.regions for s in closed_stages(r))],
        initial=spec.initial_state,
        transitions=[
            {
                "trigger": t.event,
                "source": machine_sources(t),
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
