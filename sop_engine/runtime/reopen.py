"""Reopening a closed case, for a survivor who comes back.

An SOP that allows it says how (``reopen: {to, roles, reasons}``): the managing agency's
holders of those roles reopen the case, for one of those reasons, into ``to``, whose tasks
and deadlines start as on any entry. The timeline records the reopening, its reason and the
state it left; the case is open again (``closed_at`` cleared) and keeps its history, its
consent ledger and its version count. An erased case cannot be reopened: its data is gone.
"""

from __future__ import annotations

from sop_engine.errors import (
    InvalidInput,
    RoleNotAllowed,
    TransitionNotAllowed,
)
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.change import Change, check_version, load_referral
from sop_engine.runtime.clocks import update_clocks
from sop_engine.runtime.services import Services
from sop_engine.timeline.entries import EntryDraft

__all__ = ["reopen_case"]


def reopen_case(
    services: Services,
    case_code: str,
    *,
    reason: str,
    actor: Actor,
    expected_version: int | None = None,
) -> int:
    """Reopen the closed case ``case_code``; its new version.

    :raises NotFound: no such referral.
    :raises TransitionNotAllowed: it is not closed, it was erased, or its SOP does not allow
        reopening.
    :raises RoleNotAllowed: the actor is not of the managing agency in one of the SOP's
        reopening roles.
    :raises InvalidInput: ``reason`` is not one of the SOP's.
    :raises ConcurrentChange: ``expected_version`` is not the referral's.
    """
    with services.db.begin() as conn:
        ref = load_referral(conn, case_code)
        spec = services.sop(ref.sop_key, ref.sop_version).spec
        how = spec.reopen
        if how is None:
            raise TransitionNotAllowed(f"{spec.ref} does not allow reopening a closed case")
        if actor.agency_id != ref.owner_agency_id or actor.role not in how.roles:
            raise RoleNotAllowed(
                f"a case is reopened by the managing agency's {', '.join(how.roles)}"
            )
        if ref.erased_at is not None:
            raise TransitionNotAllowed(f"referral {case_code} was erased")
        if ref.closed_at is None:
            raise TransitionNotAllowed(f"referral {case_code} is not closed")
        if reason not in how.reasons:
            raise InvalidInput(f"reason must be one of {', '.join(how.reasons)}", field="reason")
        check_version(ref, expected_version)
        change = Change.open(conn, ref, spec, services.clock.now())
        change.record(
            EntryDraft(
                kind="reopened",
                actor=actor,
                from_state=ref.state,
                to_state=how.to,
                details={"reason": reason},
            )
        )
        change.closed_at = None
        change.enter(how.to)
        sop = services.sop(ref.sop_key, ref.sop_version)
        update_clocks(conn, sop, change, actor, directory=services.directory)
        return change.write()
