"""Case clocks at run time: started when their timestamp is known, stopped for good when
``stops_when`` holds, whatever state the case is in.

The SOP's ``clocks:`` (PEP within 72 hours of the incident, emergency contraception within
120, the medical follow-ups from the day care was given) belong to the case, not to a state.
After every change of a referral (its creation, an event fired, the incident time recorded,
a reopening, a waiver) :func:`update_clocks` plans, on the same :class:`Change`:

* a clock whose ``stops_when`` now holds stops for good: its unfired timers go, a
  ``clock_stopped`` entry joins the timeline, and a ``clock_stops`` row remembers it;
* a clock whose timestamp is known gets one timer per level of its ladder (reminders before
  the due time, escalation after) in the ``timers`` table under the reserved state
  :data:`CLOCK_STATE`, so that no state change drops them; a level already fired is never
  added again, and a level planned from an older timestamp (the incident time corrected, the
  day of care corrected) is replaced;
* while the case is closed, a running clock's unfired timers are dropped: nobody is told about
  a closed case (a reopened case gets them back).

An unknown incident time fails closed: the windows may be open. The referral's creation
then opens a task for the managing agency to establish it (:data:`ESTABLISH_INCIDENT_TIME`),
closed when the incident time is recorded. :func:`blocking_clocks` names the clocks that keep
a case from closing; :mod:`clock_waivers` waives one; :mod:`clock_escalation` fires their
levels for the sweep.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, update

from sop_engine.directory.model import ServiceDirectory
from sop_engine.errors import TransitionNotAllowed
from sop_engine.language.clocks import condition_key
from sop_engine.language.compiler import CompiledSop
from sop_engine.language.spec import CLOCK_ANCHORS, ClockSpec
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.change import Change, anchor_time
from sop_engine.runtime.choice import names_context
from sop_engine.timeline.entries import EntryDraft

__all__ = [
    "CLOCK_STATE",
    "ESTABLISH_INCIDENT_TIME",
    "ClockRecord",
    "blocking_clocks",
    "clock_holds",
    "clock_records",
    "clock_start",
    "end_clock",
    "open_incident_time_task",
    "refuse_closure_while_clocks_run",
    "update_clocks",
]

CLOCK_STATE = "@clock"
"""The ``timers.state`` of a case clock's timers: no state is named so (state names are
lower-case words), so leaving a state never drops them."""

ESTABLISH_INCIDENT_TIME = "establish_incident_time"
"""The task opened for the managing agency while the incident time is unknown."""

_TM = tables.timers
_TK = tables.tasks
_CS = tables.clock_stops

_DROP_CLOCK_TIMERS = delete(_TM).where(
    _TM.c.referral_id == bindparam("p_referral"),
    _TM.c.state == CLOCK_STATE,
    _TM.c.deadline == bindparam("p_clock"),
    _TM.c.fired_at.is_(None),
)
_DROP_TIMER = delete(_TM).where(_TM.c.id == bindparam("p_id"), _TM.c.fired_at.is_(None))
_CLOSE_INCIDENT_TASK = (
    update(_TK)
    .where(
        _TK.c.referral_id == bindparam("p_referral"),
        _TK.c.name == ESTABLISH_INCIDENT_TIME,
        _TK.c.state.is_(None),
        _TK.c.status == "open",
    )
    .values(status="done", closed_at=bindparam("p_at", type_=_TK.c.closed_at.type))
)


@dataclass(frozen=True, slots=True)
class ClockRecord:
    """What the database holds of one clock of one referral."""

    ended: str | None = None
    """``stopped`` or ``waived`` once it ended for good; None while it runs or waits."""
    timers: tuple[Any, ...] = ()
    """Its timer rows, fired and unfired."""


def clock_records(conn: Connection, referral_id: str) -> dict[str, ClockRecord]:
    """Every clock of the referral that has a timer or has ended, by name."""
    ended: dict[str, str] = {
        row.clock: row.outcome
        for row in conn.execute(
            select(_CS.c.clock, _CS.c.outcome).where(_CS.c.referral_id == referral_id)
        )
    }
    timers: dict[str, list[Any]] = {}
    for row in conn.execute(
        select(_TM).where(_TM.c.referral_id == referral_id, _TM.c.state == CLOCK_STATE)
    ):
        timers.setdefault(row.deadline, []).append(row)
    return {
        name: ClockRecord(ended.get(name), tuple(timers.get(name, ())))
        for name in {*ended, *timers}
    }


def clock_start(change: Change, clock: ClockSpec) -> datetime | None:
    """When the clock runs from, as the change leaves the referral; None while unknown."""
    if clock.anchor == "incident_at":
        return change.incident_at
    return anchor_time(change.ref, change.facts, clock.anchor, change.now)


def _context(
    conn: Connection,
    sop: CompiledSop,
    change: Change,
    scopes: frozenset[str],
    directory: ServiceDirectory | None,
) -> dict[str, Any]:
    """What ``stops_when`` sees: the names a guard sees, as the change leaves the referral."""
    return names_context(
        conn,
        sop.spec,
        change.ref,
        facts=change.facts,
        incident_at=change.incident_at,
        agencies=change.agencies,
        scopes=scopes,
        now=change.now,
        directory=directory,
    )


def clock_holds(
    conn: Connection,
    sop: CompiledSop,
    change: Change,
    clock: ClockSpec,
    directory: ServiceDirectory | None = None,
) -> bool:
    """Whether the clock's ``stops_when`` holds; an expression that cannot be evaluated does
    not (the clock keeps running: it fails closed)."""
    condition = sop.guards.get(condition_key(clock.name))
    if condition is None:
        return False
    try:
        return condition.evaluate(_context(conn, sop, change, condition.consent_scopes, directory))
    except (TypeError, ValueError, RuntimeError):
        return False


def end_clock(
    change: Change, clock: ClockSpec, actor: Actor, *, outcome: str, reason: str | None = None
) -> None:
    """Plan the end of a clock for good: unfired timers dropped, the timeline told, the end
    remembered. ``outcome``: ``stopped`` (its ``stops_when`` held) or ``waived``."""
    change.statements.append(
        (_DROP_CLOCK_TIMERS, {"p_referral": change.ref.id, "p_clock": clock.name})
    )
    details: dict[str, Any] = {"clock": clock.name}
    if outcome == "stopped":
        details["stops_when"] = clock.stops_when
    else:
        details["reason"] = reason
    seq, _ = change.record(
        EntryDraft(kind=f"clock_{outcome}", actor=actor, from_state=change.state, details=details)
    )
    change.add(
        "clock_stops",
        {
            "referral_id": change.ref.id,
            "clock": clock.name,
            "outcome": outcome,
            "reason": reason,
            "at": change.now,
            "by_user_id": actor.id,
            "timeline_seq": seq,
        },
    )


def _plan_timers(
    change: Change, clock: ClockSpec, start: datetime, timers: tuple[Any, ...]
) -> None:
    """Add the levels that have no timer; replace unfired ones planned from another start.

    Once every level of the clock is due (the survivor came in after its window had closed,
    the incident turned out to be older, a closed case was reopened months later), no level
    is added any more, and unfired ones from another start are dropped: telling people now
    that a window closed long ago helps nobody, and a fired level stays on the timeline."""
    due = start + clock.after
    window_passed = all(due + lv.after <= change.now for lv in clock.ladder)
    by_level = {t.level: t for t in timers}
    for lv in clock.ladder:
        existing = by_level.get(lv.level)
        if existing is not None and (
            existing.fired_at is not None or existing.deadline_due_at == due
        ):
            continue
        if existing is not None:
            change.statements.append((_DROP_TIMER, {"p_id": existing.id}))
        if window_passed:
            continue
        change.add(
            "timers",
            {
                "referral_id": change.ref.id,
                "state": CLOCK_STATE,
                "deadline": clock.name,
                "level": lv.level,
                "due_at": due + lv.after,
                "deadline_due_at": due,
                "created_at": change.now,
            },
        )


def update_clocks(
    conn: Connection,
    sop: CompiledSop,
    change: Change,
    actor: Actor,
    *,
    directory: ServiceDirectory | None = None,
    records: Mapping[str, ClockRecord] | None = None,
) -> list[str]:
    """Plan what the change means for each clock (see the module docstring); the clocks that
    cannot start because a referral timestamp they run from (the incident's) is unknown. A
    clock from a fact (the day of care) simply waits for it."""
    spec = sop.spec
    if not spec.clocks:
        return []
    if records is None:
        records = clock_records(conn, change.ref.id)
    waiting: list[str] = []
    for clock in spec.clocks.values():
        record = records.get(clock.name, ClockRecord())
        if record.ended is not None:
            continue
        if clock_holds(conn, sop, change, clock, directory):
            end_clock(change, clock, actor, outcome="stopped")
            continue
        if change.closed_at is not None:
            if any(t.fired_at is None for t in record.timers):
                change.statements.append(
                    (_DROP_CLOCK_TIMERS, {"p_referral": change.ref.id, "p_clock": clock.name})
                )
            continue
        start = clock_start(change, clock)
        if start is None:
            if clock.anchor in CLOCK_ANCHORS:
                waiting.append(clock.name)
            continue
        _plan_timers(change, clock, start, record.timers)
    if change.incident_at is not None and change.ref.incident_at is None:
        change.statements.append(
            (_CLOSE_INCIDENT_TASK, {"p_referral": change.ref.id, "p_at": change.now})
        )
    return waiting


def waiting_warnings(waiting: Iterable[str]) -> tuple[str, ...]:
    """A warning for each clock of ``waiting`` (:func:`update_clocks`), given with the
    referral's creation and with every event after it until the time is recorded: the
    clinical windows may be closing meanwhile, and nobody is alerted."""
    return tuple(f"clock {c!r} not started: its timestamp is unknown" for c in waiting)


def open_incident_time_task(
    change: Change, spec_clocks: Mapping[str, ClockSpec], waiting: list[str]
) -> None:
    """At creation, when clocks from the incident wait for its time: ask the managing agency
    to establish it, at once (the windows may be open)."""
    from_incident = [c for c in waiting if spec_clocks[c].anchor == "incident_at"]
    if not from_incident:
        return
    role = spec_clocks[from_incident[0]].waive_roles[0]
    change.add(
        "tasks",
        {
            "id": str(uuid.uuid4()),
            "referral_id": change.ref.id,
            "state": None,
            "name": ESTABLISH_INCIDENT_TIME,
            "role": role,
            "agency_slot": None,
            "agency_id": change.ref.owner_agency_id,
            "ask": (
                "Establish when the incident happened and record it (PUT /referrals/"
                f"{change.ref.case_code}/incident-time): the clinical windows may still be open "
                f"and their clocks ({', '.join(from_incident)}) cannot run without it"
            ),
            "status": "open",
            "due_at": None,
            "created_at": change.now,
        },
    )


def blocking_clocks(
    conn: Connection, sop: CompiledSop, change: Change, directory: ServiceDirectory | None = None
) -> list[ClockSpec]:
    """The clocks that keep the case from entering a final state now: they block closure,
    run (their timestamp is known), have not ended, and their ``stops_when`` does not hold
    with the change's facts."""
    blocking = [c for c in sop.spec.clocks.values() if c.blocks_closure]
    if not blocking:
        return []
    records = clock_records(conn, change.ref.id)
    return [
        c
        for c in blocking
        if records.get(c.name, ClockRecord()).ended is None
        and clock_start(change, c) is not None
        and not clock_holds(conn, sop, change, c, directory)
    ]


def refuse_closure_while_clocks_run(
    conn: Connection, sop: CompiledSop, change: Change, directory: ServiceDirectory | None = None
) -> None:
    """Refuse entering a final state while a clock that blocks closure runs.

    :raises TransitionNotAllowed: naming each such clock and how to end it.
    """
    blocking = blocking_clocks(conn, sop, change, directory)
    if not blocking:
        return
    code = change.ref.case_code
    named = "; ".join(
        f"clock {c.name!r} ({c.description or c.stops_when}) runs until {c.stops_when}"
        for c in blocking
    )
    raise TransitionNotAllowed(
        f"the case cannot close while {named}: record what stops it, or waive it with a reason "
        f"(POST /referrals/{code}/clocks/{blocking[0].name}/waive)"
    )
