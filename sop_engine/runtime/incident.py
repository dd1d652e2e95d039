"""Recording the incident time after the referral was opened, or correcting it.

The clinical windows (HIV prophylaxis within 72 hours, emergency contraception within 120)
run from the incident, not from the referral, and a survivor often says when it happened only
later, or remembers it better. The managing agency records it, with a reason; the timeline
keeps the time, the one it replaces and the reason. The case clocks from the incident start
(or move) with it, in whatever state (:mod:`clocks`), and deadlines of the current state that
run from the incident start again from the new time (levels already escalated stay escalated;
levels already due under the new time escalate at the next sweep), and so do the guards that
read ``hours_since_incident``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sop_engine.clock import utc
from sop_engine.errors import (
    InvalidInput,
    RoleNotAllowed,
    TransitionNotAllowed,
)
from sop_engine.runtime.access import may_fire
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.change import Change, check_version, load_referral
from sop_engine.runtime.clocks import update_clocks
from sop_engine.runtime.services import Services
from sop_engine.timeline.entries import EntryDraft

__all__ = ["CLOCK_SKEW", "INCIDENT_TIME_REASONS", "record_incident_time"]

INCIDENT_TIME_REASONS = (
    "first_established",
    "survivor_recalled",
    "medical_record",
    "data_entry_error",
    "other",
)
"""Why the incident time is recorded or changed: codes, never free text (the timeline keeps
them, and free text could hold what the survivor said)."""

CLOCK_SKEW = timedelta(minutes=5)
"""How far ahead of the server's clock an incident time may be (the caller's clock may run
ahead); anything later is refused as in the future."""


def record_incident_time(
    services: Services,
    case_code: str,
    *,
    incident_at: datetime,
    reason: str,
    actor: Actor,
    expected_version: int | None = None,
) -> int:
    """Record (or correct) when the incident happened; the referral's new version.

    Only someone of the managing agency in a role that acts on the case there may do it.

    :raises NotFound: no such referral.
    :raises RoleNotAllowed: the actor's agency does not manage it, or her role acts on
        nothing there.
    :raises TransitionNotAllowed: the referral is closed or erased.
    :raises InvalidInput: ``incident_at`` lacks a time zone, is in the future or is the time
        already recorded; ``reason`` is not one of :data:`INCIDENT_TIME_REASONS`.
    :raises ConcurrentChange: ``expected_version`` is not the referral's.
    """
    if reason not in INCIDENT_TIME_REASONS:
        raise InvalidInput(
            f"reason must be one of {', '.join(INCIDENT_TIME_REASONS)}", field="reason"
        )
    if incident_at.tzinfo is None:
        raise InvalidInput("incident_at needs a time zone (UTC: Z)", field="incident_at")
    at = utc(incident_at)
    with services.db.begin() as conn:
        ref = load_referral(conn, case_code)
        spec = services.sop(ref.sop_key, ref.sop_version).spec
        agencies = ref.agencies or {}
        if actor.agency_id != ref.owner_agency_id or not any(
            may_fire(spec, t, actor, ref.owner_agency_id, agencies) for t in spec.transitions
        ):
            raise RoleNotAllowed(
                "only the managing agency's caseworkers and those acting on the case with "
                "them record the incident time"
            )
        if ref.erased_at is not None or ref.closed_at is not None:
            raise TransitionNotAllowed(f"referral {case_code} is closed")
        check_version(ref, expected_version)
        now = services.clock.now()
        if at > now + CLOCK_SKEW:
            raise InvalidInput("incident_at is in the future", field="incident_at")
        previous = ref.incident_at
        if previous is not None and utc(previous) == at:
            raise InvalidInput("that incident time is already recorded", field="incident_at")
        change = Change.open(conn, ref, spec, now)
        change.incident_at = at
        change.record(
            EntryDraft(
                kind="incident_time",
                actor=actor,
                details={
                    "reason": reason,
                    "incident_at": at.isoformat(),
                    "previous": utc(previous).isoformat() if previous is not None else None,
                },
            )
        )
        change.reanchor("incident_at")
        sop = services.sop(ref.sop_key, ref.sop_version)
        update_clocks(conn, sop, change, actor, directory=services.directory)
        return change.write()
