"""Firing one level of a case clock, for the escalation sweep (:mod:`deadlines`).

A clock's timer is live whatever state the case is in: it is stale only when the case was
erased or closed, when its clock has left the SOP version (never, for a pinned version), or
when its ``stops_when`` holds by now (a condition over ``now`` or ``hours_since_incident``
can become true without any change; the clock then stops here, for good). Otherwise the
level's roles are told (where the current state has a task for a role, that task's agency
hears it, as for a state's deadline), and the timeline records an ``escalation`` entry
naming the clock and the state the case was in (in ``details``, not ``from_state``: the
escalation is the case's, and deadline compliance by agency counts only the states' own).
The level's event, if any, is fired as the system from whatever state the case is in
(refused quietly, with a note, where it cannot fire from there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row

from sop_engine.errors import SopEngineError
from sop_engine.runtime.actors import SYSTEM
from sop_engine.runtime.change import Change, recipient_agency
from sop_engine.runtime.clocks import CLOCK_STATE, clock_holds, end_clock
from sop_engine.runtime.fire import fire_as_system
from sop_engine.runtime.services import Services
from sop_engine.timeline.entries import EntryDraft

__all__ = ["ClockLevelOutcome", "fire_clock_level", "is_clock_timer"]


def is_clock_timer(timer: Row[Any]) -> bool:
    """Whether the timer belongs to a case clock rather than to a state's deadline."""
    return bool(timer.state == CLOCK_STATE)


@dataclass(frozen=True, slots=True)
class ClockLevelOutcome:
    """``escalated`` or ``stale``, with the event fired and a note."""

    outcome: str
    fired_event: str | None = None
    note: str | None = None


def fire_clock_level(
    services: Services, conn: Connection, ref: Row[Any], timer: Row[Any]
) -> ClockLevelOutcome:
    """Plan and write one clock level of ``ref`` (the caller marks the timer fired)."""
    if ref.erased_at is not None or ref.closed_at is not None:
        return ClockLevelOutcome("stale", note="the case is closed")
    sop = services.sop(ref.sop_key, ref.sop_version)
    spec = sop.spec
    clock = spec.clocks.get(timer.deadline)
    if clock is None or timer.level > len(clock.ladder):
        return ClockLevelOutcome("stale", note="the SOP has no such clock level")
    now = services.clock.now()
    change = Change.open(conn, ref, spec, now)
    if clock_holds(conn, sop, change, clock, services.directory):
        end_clock(change, clock, SYSTEM, outcome="stopped")
        change.write()
        return ClockLevelOutcome("stale", note="the clock has stopped")
    level = clock.ladder[timer.level - 1]
    state = spec.states.get(ref.state)
    shown_state = (state.handoff or state.name) if state is not None else ref.state
    due_at = timer.deadline_due_at.isoformat()
    details: dict[str, Any] = {
        "clock": clock.name,
        "state": ref.state,
        "level": level.level,
        "due_at": due_at,
        "reminder": level.after.total_seconds() < 0,
        "notified": list(level.notify),
    }
    for role in level.notify:
        change.notify(
            level.template,
            role,
            recipient_agency(spec, state, role, change.agencies, ref.owner_agency_id),
            {
                "event": "escalation",
                "state": shown_state,
                "deadline": clock.name,
                "level": level.level,
                "ask": clock.description,
                "due_at": due_at,
            },
        )
    fired_event = note = None
    if level.fire is not None:
        try:
            fired_event = fire_as_system(
                conn, services, change, sop=sop, event=level.fire, details=details
            )
        except SopEngineError as exc:
            note = f"could not fire {level.fire!r}: {exc}"
            details["fire_refused"] = note
    if fired_event is None:
        # No from_state: a clock's escalation is the case's, not the work of the agencies
        # whose tasks the current state holds (deadline compliance by agency counts those).
        change.record(EntryDraft(kind="escalation", actor=SYSTEM, details=details))
    change.write()
    return ClockLevelOutcome("escalated", fired_event, note)
