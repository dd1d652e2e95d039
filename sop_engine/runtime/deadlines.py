"""Deadline timers for the escalation sweep: claim due timers exactly once, fire each level.

Timers are rows written by the transition that enters a state (one per escalation level of
each deadline) and deleted by the one that leaves it. A sweep :func:`claim_due_timers`
leases a batch of due rows; concurrent sweeps get disjoint batches (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL; on SQLite the claim runs inside ``BEGIN IMMEDIATE``, which admits one
writer at a time). A claim whose sweep died comes back once its lease runs out; the lease is
short (``SOP_ENGINE_TIMER_LEASE_SECONDS``, a minute by default), and a sweep still working
on its batch extends it (:func:`renew_claims`) so that a slow batch is not fired twice.
:func:`fire_escalation` then notifies the level's roles, records it on the timeline and, if
the level says so, fires an event, all in one transaction that also marks the timer fired;
it does nothing if the timer was fired already or the referral has left the state.

A pending case transfer's answer deadline runs whatever state the case is in: its timers
carry the pseudo-state :data:`~sop_engine.runtime.change.TRANSFER_TIMERS`, and each level
notifies its roles while the transfer is pending (stale once it is answered or cancelled);
an escalation never answers a transfer.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, Update, and_, or_, select, update

from sop_engine.errors import ConcurrentChange, SopEngineError
from sop_engine.language.spec import TRANSFER_DEADLINE
from sop_engine.persistence import tables
from sop_engine.persistence.db import is_postgres
from sop_engine.runtime.actors import SYSTEM
from sop_engine.runtime.change import TRANSFER_TIMERS, Change, recipient_agency
from sop_engine.runtime.clock_escalation import fire_clock_level, is_clock_timer
from sop_engine.runtime.fire import fire_as_system
from sop_engine.runtime.services import Services
from sop_engine.timeline.entries import EntryDraft

__all__ = [
    "DEFAULT_LEASE",
    "EscalationOutcome",
    "TimerClaim",
    "claim_due_timers",
    "default_worker",
    "fire_escalation",
    "renew_claims",
    "sweep_batch",
]

_TM = tables.timers
_R = tables.referrals
_TR = tables.transfers

DEFAULT_LEASE = timedelta(seconds=60)
"""How long a claim is a sweep's own; :func:`renew_claims` extends it while it works."""


def default_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class TimerClaim:
    """A due timer leased to one worker until ``lease_until``."""

    timer_id: int
    referral_id: str
    state: str
    deadline: str
    level: int
    due_at: datetime
    worker: str
    lease_until: datetime


@dataclass(frozen=True, slots=True)
class EscalationOutcome:
    """What firing one claimed timer did: ``escalated``, ``stale`` (the referral had left the
    state), ``already_fired`` or ``lost_claim`` (another worker holds it now)."""

    timer_id: int
    outcome: str
    case_code: str | None = None
    fired_event: str | None = None
    note: str | None = None


def claim_due_timers(
    services: Services,
    now: datetime | None = None,
    limit: int = 100,
    *,
    worker: str | None = None,
    lease: timedelta = DEFAULT_LEASE,
) -> list[TimerClaim]:
    """Lease up to ``limit`` due timers to ``worker``; each due timer goes to one caller."""
    now = now or services.clock.now()
    worker = worker or default_worker()
    lease_until = now + lease
    due = and_(
        _TM.c.fired_at.is_(None),
        _TM.c.due_at <= now,
        or_(_TM.c.lease_until.is_(None), _TM.c.lease_until < now),
    )
    query = select(_TM.c.id).where(due).order_by(_TM.c.due_at, _TM.c.id).limit(limit)
    if is_postgres(services.db):
        query = query.with_for_update(skip_locked=True)
    with services.db.begin() as conn:
        ids = list(conn.scalars(query))
        if not ids:
            return []
        conn.execute(
            update(_TM)
            .where(_TM.c.id.in_(ids), due)
            .values(lease_until=lease_until, claimed_by=worker)
        )
        rows = conn.execute(
            select(_TM).where(
                _TM.c.id.in_(ids), _TM.c.claimed_by == worker, _TM.c.lease_until == lease_until
            )
        ).all()
    return [
        TimerClaim(r.id, r.referral_id, r.state, r.deadline, r.level, r.due_at, worker, lease_until)
        for r in sorted(rows, key=lambda r: (r.due_at, r.id))
    ]


def renew_claims(
    services: Services, claims: list[TimerClaim], lease: timedelta = DEFAULT_LEASE
) -> list[TimerClaim]:
    """Extend the leases of ``claims`` not fired yet by ``lease`` from now; the claims still
    ours, with their new lease (a claim whose lease ran out and that another sweep took is
    left out: it is that sweep's now)."""
    if not claims:
        return []
    now = services.clock.now()
    lease_until = now + lease
    worker = claims[0].worker
    with services.db.begin() as conn:
        renewed = set()
        for claim in claims:
            changed = conn.execute(
                update(_TM)
                .where(
                    _TM.c.id == claim.timer_id,
                    _TM.c.fired_at.is_(None),
                    _TM.c.claimed_by == worker,
                    _TM.c.lease_until == claim.lease_until,
                )
                .values(lease_until=lease_until)
            ).rowcount
            if changed:
                renewed.add(claim.timer_id)
    return [
        TimerClaim(
            c.timer_id, c.referral_id, c.state, c.deadline, c.level, c.due_at, worker, lease_until
        )
        for c in claims
        if c.timer_id in renewed
    ]


def sweep_batch(
    services: Services,
    fire: Callable[[TimerClaim], EscalationOutcome],
    limit: int = 100,
    *,
    worker: str | None = None,
    lease: timedelta = DEFAULT_LEASE,
) -> list[EscalationOutcome]:
    """Claim up to ``limit`` due timers and ``fire`` each; when half the lease has gone by
    before the batch is done, the rest of the batch's leases are renewed first."""
    claims = claim_due_timers(services, limit=limit, worker=worker, lease=lease)
    outcomes: list[EscalationOutcome] = []
    while claims:
        if services.clock.now() >= claims[0].lease_until - lease / 2:
            kept = renew_claims(services, claims, lease)
            ours = {c.timer_id for c in kept}
            outcomes += [
                EscalationOutcome(c.timer_id, "lost_claim")
                for c in claims
                if c.timer_id not in ours
            ]
            claims = kept
            if not claims:
                break
        outcomes.append(fire(claims.pop(0)))
    return outcomes


def fire_escalation(services: Services, claim: TimerClaim) -> EscalationOutcome:
    """Apply one claimed escalation level, idempotently (see the module docstring)."""
    with services.db.begin() as conn:
        # Locks are taken in the order every transition takes them, referral then timers, so
        # a sweep and a caseworker never deadlock. On PostgreSQL the sweep does not wait for
        # a referral someone is changing (NOWAIT): it gives the claim back to a later sweep.
        # Holding the timer's lock also makes a sweep that re-claims it after our lease ran
        # out wait for us, and then find it fired. (SQLite's BEGIN IMMEDIATE already admits
        # one writer at a time.)
        locking = is_postgres(services.db)
        ref_query = select(_R).where(_R.c.id == claim.referral_id)
        timer_query = select(_TM).where(_TM.c.id == claim.timer_id)
        if locking:
            ref_query = ref_query.with_for_update(nowait=True)
            timer_query = timer_query.with_for_update()
        ref = conn.execute(ref_query).first()
        timer = conn.execute(timer_query).first()
        if timer is None or ref is None:
            return EscalationOutcome(claim.timer_id, "stale", note="the state was left; timer gone")
        if timer.fired_at is not None:
            return EscalationOutcome(claim.timer_id, "already_fired")
        if timer.claimed_by != claim.worker or timer.lease_until != claim.lease_until:
            return EscalationOutcome(claim.timer_id, "lost_claim")
        now = services.clock.now()
        mark_fired = (
            update(_TM)
            .where(
                _TM.c.id == timer.id,
                _TM.c.fired_at.is_(None),
                _TM.c.claimed_by == claim.worker,
                _TM.c.lease_until == claim.lease_until,
            )
            .values(fired_at=now)
        )
        if timer.state == TRANSFER_TIMERS:
            return _transfer_escalation(
                services, conn, claim, ref=ref, timer=timer, mark_fired=mark_fired, now=now
            )
        if is_clock_timer(timer):
            return _fire_clock(services, conn, ref, timer, claim=claim, mark_fired=mark_fired)
        if not _timer_live(ref, timer.state):
            conn.execute(mark_fired)
            return EscalationOutcome(
                claim.timer_id, "stale", ref.case_code, note="the referral left the state"
            )
        sop = services.sop(ref.sop_key, ref.sop_version)
        spec = sop.spec
        state = spec.states[timer.state]
        deadline = state.deadlines[timer.deadline]
        level = deadline.escalation[timer.level - 1]
        change = Change.open(conn, ref, spec, now)
        details: dict[str, Any] = {
            "deadline": deadline.name,
            "level": level.level,
            "due_at": timer.deadline_due_at.isoformat(),
            "notified": list(level.notify),
        }
        ask = next((t.ask for t in state.tasks.values()), deadline.description)
        for role in level.notify:
            change.notify(
                level.template,
                role,
                recipient_agency(spec, state, role, change.agencies, ref.owner_agency_id),
                {
                    "event": "escalation",
                    "state": state.handoff or state.name,
                    "deadline": deadline.name,
                    "level": level.level,
                    "ask": ask,
                    "due_at": timer.deadline_due_at.isoformat(),
                },
            )
        fired_event = None
        note = None
        if level.fire is not None:
            try:
                fired_event = fire_as_system(
                    conn, services, change, sop=sop, event=level.fire, details=details
                )
            except SopEngineError as exc:
                note = f"could not fire {level.fire!r}: {exc}"
                details["fire_refused"] = note
        if fired_event is None:
            change.record(
                EntryDraft(kind="escalation", actor=SYSTEM, from_state=ref.state, details=details)
            )
        change.write()
        marked = conn.execute(mark_fired).rowcount
        if marked != 1 and fired_event is None:
            # Never escalate twice: if the claim is no longer ours, undo everything.
            raise ConcurrentChange(f"timer {timer.id} was claimed by another sweep")
        return EscalationOutcome(claim.timer_id, "escalated", ref.case_code, fired_event, note)


def _timer_live(ref: Row[Any], timer_state: str) -> bool:
    """Whether a timer of ``timer_state`` still counts: the case is in that state, or a
    parallel handoff of it is at that stage, and the case was not erased."""
    if ref.erased_at is not None:
        return False
    return timer_state == ref.state or timer_state in (ref.handoffs or {}).values()


def _transfer_escalation(
    services: Services,
    conn: Connection,
    claim: TimerClaim,
    *,
    ref: Row[Any],
    timer: Row[Any],
    mark_fired: Update,
    now: datetime,
) -> EscalationOutcome:
    """A pending transfer's answer is late: notify the level's roles (the answering role at
    the receiving agency, the others where their slot places them). Stale once the transfer
    was answered or cancelled. An escalation never answers a transfer."""
    pending = conn.execute(
        select(_TR).where(_TR.c.referral_id == ref.id, _TR.c.status == "pending")
    ).first()
    spec = services.sop(ref.sop_key, ref.sop_version).spec
    how = spec.transfer
    if pending is None or how is None or ref.erased_at is not None:
        conn.execute(mark_fired)
        return EscalationOutcome(
            claim.timer_id, "stale", ref.case_code, note="the transfer was answered"
        )
    level = how.escalation[timer.level - 1]
    change = Change.open(conn, ref, spec, now)
    for role in level.notify:
        agency = (
            pending.to_agency_id
            if role == how.role
            else recipient_agency(spec, None, role, change.agencies, ref.owner_agency_id)
        )
        change.notify(
            level.template,
            role,
            agency,
            {
                "event": "escalation",
                "state": "transfer",
                "deadline": TRANSFER_DEADLINE,
                "level": level.level,
                "ask": "Accept or decline the transfer of this case",
                "due_at": timer.deadline_due_at.isoformat(),
            },
        )
    change.record(
        EntryDraft(
            kind="escalation",
            actor=SYSTEM,
            from_state=ref.state,
            details={
                "deadline": TRANSFER_DEADLINE,
                "transfer_id": pending.id,
                "level": level.level,
                "due_at": timer.deadline_due_at.isoformat(),
                "notified": list(level.notify),
            },
        )
    )
    change.write()
    if conn.execute(mark_fired).rowcount != 1:
        raise ConcurrentChange(f"timer {timer.id} was claimed by another sweep")
    return EscalationOutcome(claim.timer_id, "escalated", ref.case_code)


def _fire_clock(
    services: Services,
    conn: Connection,
    ref: Row[Any],
    timer: Row[Any],
    *,
    claim: TimerClaim,
    mark_fired: Update,
) -> EscalationOutcome:
    """A case clock's level: live whatever the state (:mod:`clock_escalation`)."""
    done = fire_clock_level(services, conn, ref, timer)
    marked = conn.execute(mark_fired).rowcount
    if done.outcome == "escalated" and marked != 1 and done.fired_event is None:
        raise ConcurrentChange(f"timer {timer.id} was claimed by another sweep")
    return EscalationOutcome(
        claim.timer_id, done.outcome, ref.case_code, done.fired_event, done.note
    )
