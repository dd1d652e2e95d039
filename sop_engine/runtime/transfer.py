"""Transferring a case: the managing agency hands the case's responsibility to another agency.

A transfer is not a referral (a referral asks for a service while the case stays). An SOP
that allows it says how (``transfer: {to, role, requester_roles, consent, dataset, ...}``):

- :func:`request_transfer`: a holder of one of ``requester_roles`` at the managing agency
  names an agency of the service directory that fits slot ``to``. A standing grant of the
  ``consent`` scope must cover that agency, its country and the dataset's data categories,
  or nothing happens (:class:`~sop_engine.errors.ConsentMissing`, naming what is missing).
  The dataset is disclosed to it, as a handoff's is; it fills slot ``to`` (and so may read
  what was disclosed to it), is told, and the answer's deadline starts. One transfer at a
  time: another request waits until this one is answered or cancelled.
- :func:`accept_transfer`: the receiving agency's ``role`` only, while the grant still
  stands. The receiving agency becomes the managing agency (``owner_agency_id``); the open
  tasks of the agency that managed the case move to it, and so does every slot it filled as
  the managing side (the slots its requester roles work at, and any slot in which nothing
  was disclosed to it). Afterwards the former managing agency takes no part in the case, except
  through slots in which something was disclosed to it (it then reads only that, as any
  receiving agency does). Facts outside the dataset stay with the agency that wrote them
  (``fact_writers``): the new managing agency reads only what was disclosed to it.
- :func:`decline_transfer`: the receiving agency's ``role``, with one of the SOP's
  ``decline_reasons``; nothing changes but the timeline and the transfer's record.
- :func:`cancel_transfer`: a holder of ``requester_roles`` at the managing agency, before the
  answer.

Each step is one transaction through :class:`~sop_engine.runtime.change.Change`: one
hash-chained timeline entry, the referral's version bumped (a concurrent change is a
:class:`~sop_engine.errors.ConcurrentChange`), the other side told through the outbox (case
code and reason codes only).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select

from sop_engine.errors import (
    ConsentMissing,
    InvalidInput,
    NotFound,
    RoleNotAllowed,
    TransitionNotAllowed,
)
from sop_engine.language.spec import TRANSFER_TEMPLATES, SopSpec, TransferSpec
from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction
from sop_engine.runtime import consent
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.change import Change, check_version, load_referral
from sop_engine.runtime.disclosure import categories_of, disclosed_values
from sop_engine.runtime.recipients import Recipient, check_slot, find_recipient, recipient
from sop_engine.runtime.services import Services
from sop_engine.timeline.entries import EntryDraft

__all__ = [
    "TransferView",
    "accept_transfer",
    "cancel_transfer",
    "decline_transfer",
    "list_transfers",
    "request_transfer",
]

_TR = tables.transfers
_TK = tables.tasks
_D = tables.disclosures

_FIELD = "to_agency_id"


@dataclass(frozen=True, slots=True)
class TransferView:
    """One transfer of a case, and the referral's version after the step that returned it."""

    id: str
    case_code: str
    status: str
    """``pending``, ``accepted``, ``declined`` or ``cancelled``."""
    from_agency_id: str
    to_agency_id: str
    requested_at: datetime
    grant_id: str | None
    answered_at: datetime | None
    reason: str | None
    version: int


def _view(row: Row[Any], case_code: str, version: int, **changed: Any) -> TransferView:
    values = {
        "id": row.id,
        "case_code": case_code,
        "status": row.status,
        "from_agency_id": row.from_agency_id,
        "to_agency_id": row.to_agency_id,
        "requested_at": row.requested_at,
        "grant_id": row.grant_id,
        "answered_at": row.answered_at,
        "reason": row.reason,
        "version": version,
    }
    values.update(changed)
    return TransferView(**values)


def _how(spec: SopSpec) -> TransferSpec:
    if spec.transfer is None:
        raise TransitionNotAllowed(f"{spec.ref} does not allow transferring a case")
    return spec.transfer


def _open_case(ref: Row[Any]) -> None:
    if ref.erased_at is not None:
        raise TransitionNotAllowed(f"referral {ref.case_code} was erased")
    if ref.closed_at is not None:
        raise TransitionNotAllowed(f"referral {ref.case_code} is closed: reopen it first")


def _pending(conn: Connection, referral_id: str) -> Row[Any] | None:
    return conn.execute(
        select(_TR).where(_TR.c.referral_id == referral_id, _TR.c.status == "pending")
    ).first()


def _requester(how: TransferSpec, ref: Row[Any], actor: Actor) -> None:
    if actor.agency_id != ref.owner_agency_id or actor.role not in how.requester_roles:
        raise RoleNotAllowed(
            "a transfer is requested and cancelled by the managing agency's "
            + ", ".join(how.requester_roles)
        )


def _covering_grant(
    conn: Connection,
    spec: SopSpec,
    how: TransferSpec,
    ref: Row[Any],
    *,
    to: Recipient,
    now: datetime,
) -> Row[Any]:
    wanted: dict[str, Any] = {
        "referral_id": ref.id,
        "scope": spec.consent_scopes[how.consent],
        "recipient": to,
        "categories": categories_of(spec, how.dataset),
        "now": now,
    }
    grant = consent.covering_grant(conn, **wanted)
    if grant is None:
        raise ConsentMissing(
            f"transferring the case discloses {', '.join(how.dataset)} to {to.describe()}: "
            + consent.why_not_covered(conn, **wanted)
        )
    return grant


def request_transfer(
    services: Services,
    case_code: str,
    *,
    to_agency_id: str,
    actor: Actor,
    expected_version: int | None = None,
) -> TransferView:
    """Ask ``to_agency_id`` to take over the case (see the module docstring).

    :raises NotFound: no such referral.
    :raises TransitionNotAllowed: the SOP allows no transfer; the case is closed or erased; a
        transfer is already pending.
    :raises RoleNotAllowed: the actor is not of the managing agency in a requester role.
    :raises InvalidInput: the agency is not in the directory, does not fit the SOP's slot,
        or already manages the case (field ``to_agency_id``).
    :raises ConsentMissing: no standing grant covers the disclosure.
    :raises ConcurrentChange: ``expected_version`` is not the referral's, or it changed
        meanwhile.
    """
    with services.db.begin() as conn:
        ref = load_referral(conn, case_code)
        spec = services.sop(ref.sop_key, ref.sop_version).spec
        how = _how(spec)
        _requester(how, ref, actor)
        _open_case(ref)
        check_version(ref, expected_version)
        waiting = _pending(conn, ref.id)
        if waiting is not None:
            raise TransitionNotAllowed(
                f"a transfer of referral {case_code} to {waiting.to_agency_id} is pending: it "
                "must be answered or cancelled before another is requested"
            )
        if to_agency_id == ref.owner_agency_id:
            raise InvalidInput("your agency already manages this case", field=_FIELD)
        to = recipient(conn, services.directory, to_agency_id, field=_FIELD)
        check_slot(spec, how.to, to, ref.origin_country, ref.destination_country, field=_FIELD)
        now = services.clock.now()
        grant = _covering_grant(conn, spec, how, ref, to=to, now=now)

        change = Change.open(conn, ref, spec, now)
        change.agencies[how.to] = to_agency_id
        values, sealed = disclosed_values(conn, services, change, how.dataset)
        transfer_id = str(uuid.uuid4())
        due = change.start_transfer_deadline(how.deadline)
        change.record(
            EntryDraft(
                kind="transfer_requested",
                actor=actor,
                from_state=ref.state,
                consent_grant_id=grant.id,
                disclosed_to=to_agency_id,
                disclosed_fields=how.dataset,
                details={
                    "transfer_id": transfer_id,
                    "from_agency_id": ref.owner_agency_id,
                    "to_agency_id": to_agency_id,
                    "due_at": due.isoformat() if due else None,
                },
            )
        )
        change.disclose(
            how.to, to_agency_id, grant.id, False, how.dataset, values=values, sealed_values=sealed
        )
        change.add(
            "transfers",
            {
                "id": transfer_id,
                "referral_id": ref.id,
                "status": "pending",
                "from_agency_id": ref.owner_agency_id,
                "to_agency_id": to_agency_id,
                "requested_by": actor.id,
                "requested_role": actor.role,
                "requested_at": now,
                "grant_id": grant.id,
                "answered_by": None,
                "answered_at": None,
                "reason": None,
            },
        )
        change.notify(
            TRANSFER_TEMPLATES["request"],
            how.role,
            to_agency_id,
            _context(ref, "transfer.request", "Accept or decline the transfer of this case", due),
        )
        version = change.write()
        return TransferView(
            id=transfer_id,
            case_code=case_code,
            status="pending",
            from_agency_id=ref.owner_agency_id,
            to_agency_id=to_agency_id,
            requested_at=now,
            grant_id=grant.id,
            answered_at=None,
            reason=None,
            version=version,
        )


def _context(ref: Row[Any], event: str, ask: str, due: datetime | None = None,
             reason: str | None = None) -> dict[str, Any]:  # fmt: skip
    """What a transfer's notification may show: codes, never case data."""
    return {
        "event": event,
        "state": ref.state,
        "ask": ask,
        "due_at": due.isoformat() if due else None,
        "reason": reason,
    }


def _answering(
    services: Services, conn: Connection, case_code: str, actor: Actor
) -> tuple[Row[Any], SopSpec, TransferSpec, Row[Any]]:
    """The referral, its SOP, its transfer block and its pending transfer, for an answer by
    the receiving agency's role (checked, in that order, before anything else). A decline
    is allowed whatever became of the case meanwhile; an acceptance only of an open case."""
    ref = load_referral(conn, case_code)
    spec = services.sop(ref.sop_key, ref.sop_version).spec
    how = _how(spec)
    pending = _pending(conn, ref.id)
    if pending is None or actor.agency_id != pending.to_agency_id:
        if pending is None and actor.agency_id in _asked(conn, ref.id):
            raise TransitionNotAllowed(f"no transfer of referral {case_code} is pending")
        raise RoleNotAllowed("a transfer is answered by the agency it is pending with, only")
    if actor.role != how.role:
        raise RoleNotAllowed(f"a transfer is answered by the receiving agency's {how.role}")
    return ref, spec, how, pending


def _asked(conn: Connection, referral_id: str) -> set[str]:
    """The agencies any transfer of the referral was ever sent to."""
    return set(conn.scalars(select(_TR.c.to_agency_id).where(_TR.c.referral_id == referral_id)))


def accept_transfer(
    services: Services, case_code: str, *, actor: Actor, expected_version: int | None = None
) -> TransferView:
    """The receiving agency takes over the case (see the module docstring).

    :raises TransitionNotAllowed: no transfer to the actor's agency is pending; the case was
        closed or erased meanwhile.
    :raises RoleNotAllowed: the actor is not the receiving agency's answering role.
    :raises ConsentMissing: the grant that covered the request was withdrawn or has expired,
        and no other covers it: the transfer can only be declined or cancelled now.
    :raises ConcurrentChange: as for every change.
    """
    with services.db.begin() as conn:
        ref, spec, how, pending = _answering(services, conn, case_code, actor)
        _open_case(ref)
        check_version(ref, expected_version)
        now = services.clock.now()
        to = find_recipient(conn, services.directory, pending.to_agency_id)
        if to is None:
            raise TransitionNotAllowed(
                f"{pending.to_agency_id} is no longer in the service directory"
            )
        try:
            grant = _covering_grant(conn, spec, how, ref, to=to, now=now)
        except ConsentMissing as exc:
            raise ConsentMissing(
                f"{exc} The transfer can only be declined or cancelled now."
            ) from None
        old, new = ref.owner_agency_id, pending.to_agency_id
        received = _slots_disclosed_to(conn, ref.id, old) - _managing_slots(spec, how)

        change = Change.open(conn, ref, spec, now)
        change.owner_agency_id = new
        for slot, agency in list(change.agencies.items()):
            if agency == old and slot not in received:
                change.agencies[slot] = new
        change.hand_over_tasks(_managing_tasks(conn, ref.id, old, received), new)
        for name in [*change.facts, *change.sealed_fields]:
            if name not in how.dataset and name not in change.fact_writers:
                change.fact_writers[name] = old
        change.stop_transfer_deadline()
        change.close_transfer(pending.id, "accepted", actor.id, None)
        change.record(
            EntryDraft(
                kind="transfer_accepted",
                actor=actor,
                from_state=ref.state,
                consent_grant_id=grant.id,
                details={"transfer_id": pending.id, "from_agency_id": old, "to_agency_id": new},
            )
        )
        change.notify(
            TRANSFER_TEMPLATES["accept"],
            pending.requested_role,
            old,
            _context(ref, "transfer.accept", ""),
        )
        version = change.write()
        return _view(pending, case_code, version, status="accepted", answered_at=now)


def _managing_slots(spec: SopSpec, how: TransferSpec) -> set[str]:
    """The slots the managing agency fills as such: those its requester roles work at (the
    case agency). Feedback disclosed there went to the managing agency, not to a receiver."""
    return {
        role.agency
        for name in how.requester_roles
        if (role := spec.roles.get(name)) is not None and role.agency is not None
    }


def _slots_disclosed_to(conn: Connection, referral_id: str, agency_id: str) -> set[str]:
    """The slots in which something was disclosed to ``agency_id``: it received data there."""
    return set(
        conn.scalars(
            select(_D.c.agency_slot).where(
                _D.c.referral_id == referral_id, _D.c.agency_id == agency_id
            )
        )
    )


def _managing_tasks(
    conn: Connection, referral_id: str, agency_id: str, received: set[str]
) -> list[str]:
    """The open tasks of the SOP's states that ``agency_id`` holds as the managing side: not
    those it holds as a receiving agency, nor its acknowledgements of a withdrawn consent
    (which are its own to give, for data disclosed to it)."""
    rows = conn.execute(
        select(_TK.c.id, _TK.c.state, _TK.c.agency_slot).where(
            _TK.c.referral_id == referral_id,
            _TK.c.agency_id == agency_id,
            _TK.c.status == "open",
        )
    ).all()
    return [r.id for r in rows if r.state is not None and r.agency_slot not in received]


def decline_transfer(
    services: Services,
    case_code: str,
    *,
    reason: str,
    actor: Actor,
    expected_version: int | None = None,
) -> TransferView:
    """The receiving agency declines, for one of the SOP's reasons; the case stays.

    :raises InvalidInput: ``reason`` is not one of the SOP's ``decline_reasons``.
    :raises TransitionNotAllowed, RoleNotAllowed, ConcurrentChange: as for accepting.
    """
    with services.db.begin() as conn:
        ref, spec, how, pending = _answering(services, conn, case_code, actor)
        if reason not in how.decline_reasons:
            raise InvalidInput(
                f"reason must be one of {', '.join(how.decline_reasons)}", field="reason"
            )
        check_version(ref, expected_version)
        now = services.clock.now()
        change = Change.open(conn, ref, spec, now)
        change.stop_transfer_deadline()
        change.close_transfer(pending.id, "declined", actor.id, reason)
        change.record(
            EntryDraft(
                kind="transfer_declined",
                actor=actor,
                from_state=ref.state,
                details={"transfer_id": pending.id, "reason": reason},
            )
        )
        change.notify(
            TRANSFER_TEMPLATES["decline"],
            pending.requested_role,
            ref.owner_agency_id,
            _context(ref, "transfer.decline", "", reason=reason),
        )
        version = change.write()
        return _view(pending, case_code, version, status="declined", answered_at=now, reason=reason)


def cancel_transfer(
    services: Services, case_code: str, *, actor: Actor, expected_version: int | None = None
) -> TransferView:
    """The managing agency withdraws its pending request before it is answered.

    :raises TransitionNotAllowed: no transfer is pending.
    :raises RoleNotAllowed: the actor is not of the managing agency in a requester role.
    :raises ConcurrentChange: as for every change.
    """
    with services.db.begin() as conn:
        ref = load_referral(conn, case_code)
        spec = services.sop(ref.sop_key, ref.sop_version).spec
        how = _how(spec)
        _requester(how, ref, actor)
        pending = _pending(conn, ref.id)
        if pending is None:
            raise TransitionNotAllowed(f"no transfer of referral {case_code} is pending")
        check_version(ref, expected_version)
        now = services.clock.now()
        change = Change.open(conn, ref, spec, now)
        change.stop_transfer_deadline()
        change.close_transfer(pending.id, "cancelled", actor.id, None)
        change.record(
            EntryDraft(
                kind="transfer_cancelled",
                actor=actor,
                from_state=ref.state,
                details={"transfer_id": pending.id},
            )
        )
        change.notify(
            TRANSFER_TEMPLATES["cancel"],
            how.role,
            pending.to_agency_id,
            _context(ref, "transfer.cancel", ""),
        )
        version = change.write()
        return _view(pending, case_code, version, status="cancelled", answered_at=now)


def list_transfers(services: Services, case_code: str, actor: Actor) -> list[TransferView]:
    """The transfers of a case, oldest first, for the managing agency or an agency a transfer
    was sent to (that one sees only its own); :class:`NotFound` for anyone else."""
    with read_transaction(services.db) as conn:
        ref = load_referral(conn, case_code)
        rows = conn.execute(
            select(_TR).where(_TR.c.referral_id == ref.id).order_by(_TR.c.requested_at)
        ).all()
    agency = actor.agency_id
    if agency == ref.owner_agency_id:
        shown = rows
    else:
        shown = [r for r in rows if r.to_agency_id == agency]
        if agency is None or not shown:
            raise NotFound(f"no referral {case_code}")
    return [_view(r, case_code, ref.version) for r in shown]
