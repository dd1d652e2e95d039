"""Waiving a case clock: the managing agency ends it for good, with a reason.

A clock that blocks closure (the medical follow-ups) keeps a case open until what stops it
is recorded; where it never will be (the survivor declined the follow-up, moved away, was
seen elsewhere) someone of the managing agency in one of the clock's ``waive.roles`` waives
it for one of its ``waive.reasons`` (codes, never free text: the timeline keeps them). Its
unfired timers go, and the timeline records who waived which clock and why.
"""

from __future__ import annotations

from sop_engine.errors import InvalidInput, NotFound, RoleNotAllowed, TransitionNotAllowed
from sop_engine.language.schema import did_you_mean
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.change import Change, check_version, load_referral
from sop_engine.runtime.clocks import ClockRecord, clock_records, end_clock, update_clocks
from sop_engine.runtime.services import Services

__all__ = ["waive_clock"]


def waive_clock(
    services: Services,
    case_code: str,
    clock: str,
    *,
    reason: str,
    actor: Actor,
    expected_version: int | None = None,
) -> int:
    """Waive clock ``clock`` of the referral; its new version.

    :raises NotFound: no such referral, or its SOP has no such clock.
    :raises RoleNotAllowed: the actor is not of the managing agency in one of the clock's
        waiving roles.
    :raises TransitionNotAllowed: the referral is closed or erased, or the clock already
        ended (stopped or waived).
    :raises InvalidInput: ``reason`` is not one of the clock's.
    :raises ConcurrentChange: ``expected_version`` is not the referral's.
    """
    with services.db.begin() as conn:
        ref = load_referral(conn, case_code)
        sop = services.sop(ref.sop_key, ref.sop_version)
        spec = sop.spec
        found = spec.clocks.get(clock)
        if found is None:
            hint = did_you_mean(clock, spec.clocks) if spec.clocks else None
            raise NotFound(f"{spec.ref} has no clock {clock!r}" + (f" ({hint})" if hint else ""))
        if actor.agency_id != ref.owner_agency_id or actor.role not in found.waive_roles:
            raise RoleNotAllowed(
                f"clock {clock!r} is waived by the managing agency's {', '.join(found.waive_roles)}"
            )
        if ref.erased_at is not None or ref.closed_at is not None:
            raise TransitionNotAllowed(f"referral {case_code} is closed")
        if reason not in found.waive_reasons:
            raise InvalidInput(
                f"reason must be one of {', '.join(found.waive_reasons)}", field="reason"
            )
        check_version(ref, expected_version)
        records = clock_records(conn, ref.id)
        ended = records.get(clock, ClockRecord()).ended
        if ended is not None:
            raise TransitionNotAllowed(f"clock {clock!r} has already {ended}")
        change = Change.open(conn, ref, spec, services.clock.now())
        end_clock(change, found, actor, outcome="waived", reason=reason)
        others = {name: r for name, r in records.items() if name != clock}
        ended_now = {clock: ClockRecord(ended="waived")}
        update_clocks(
            conn, sop, change, actor, directory=services.directory, records={**others, **ended_now}
        )
        return change.write()
