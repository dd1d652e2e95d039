"""The outbox's life after ``fire`` wrote it: claimed by a dispatcher, sent, retried with
backoff, or, when it keeps failing, declared dead with an incident on the referral's timeline
and a notice to the coordinators. Never a silent loss.

The dispatcher (``notifications.dispatch``) renders and sends; these functions are the only
writers of the outbox's status, as ``fire`` is the only writer of its rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update

from sop_engine.persistence.db import is_postgres
from sop_engine.persistence.models import OutboxMessage, Referral, table
from sop_engine.runtime.actors import SYSTEM
from sop_engine.runtime.change import Change
from sop_engine.runtime.services import Services
from sop_engine.timeline.entries import EntryDraft

__all__ = [
    "DELIVERY_FAILED_TEMPLATE",
    "MAX_ATTEMPTS",
    "OutboxClaim",
    "backoff",
    "claim_outbox",
    "mark_failed_attempt",
    "mark_sent",
]

_O = table(OutboxMessage)
_R = table(Referral)

MAX_ATTEMPTS = 8
"""Attempts before a message is declared dead (about a day with :func:`backoff`)."""
DELIVERY_FAILED_TEMPLATE = "delivery_failed"
COORDINATOR = "coordinator"


def backoff(attempts: int) -> timedelta:
    """Wait before attempt ``attempts + 1``: 1, 2, 4, ... minutes, at most 6 hours."""
    return timedelta(minutes=min(2 ** max(attempts - 1, 0), 360))


@dataclass(frozen=True, slots=True)
class OutboxClaim:
    """A pending message leased to one dispatcher until ``lease_until``."""

    id: str
    referral_id: str
    template: str
    recipient_role: str
    recipient_agency_id: str | None
    context: dict[str, Any]
    attempts: int
    worker: str
    lease_until: datetime


def claim_outbox(
    services: Services,
    now: datetime | None = None,
    limit: int = 50,
    *,
    worker: str,
    lease: timedelta = timedelta(minutes=5),
) -> list[OutboxClaim]:
    """Lease up to ``limit`` messages due for an attempt; concurrent dispatchers get
    disjoint batches, and a dispatcher that died gives its batch back when the lease ends."""
    now = now or services.clock.now()
    lease_until = now + lease
    due = and_(
        _O.c.status == "pending",
        _O.c.next_attempt_at <= now,
        or_(_O.c.lease_until.is_(None), _O.c.lease_until < now),
    )
    query = select(_O.c.id).where(due).order_by(_O.c.next_attempt_at, _O.c.id).limit(limit)
    if is_postgres(services.db):
        query = query.with_for_update(skip_locked=True)
    with services.db.begin() as conn:
        ids = list(conn.scalars(query))
        if not ids:
            return []
        conn.execute(
            update(_O).where(_O.c.id.in_(ids), due).values(lease_until=lease_until, last_error=None)
        )
        rows = conn.execute(
            select(_O).where(_O.c.id.in_(ids), _O.c.lease_until == lease_until)
        ).all()
    return [
        OutboxClaim(
            r.id,
            r.referral_id,
            r.template,
            r.recipient_role,
            r.recipient_agency_id,
            dict(r.context or {}),
            r.attempts,
            worker,
            lease_until,
        )
        for r in sorted(rows, key=lambda r: (r.next_attempt_at, r.id))
    ]


def mark_sent(services: Services, claim: OutboxClaim) -> bool:
    """Record a successful delivery; False when the message was no longer ours to mark."""
    now = services.clock.now()
    with services.db.begin() as conn:
        done = conn.execute(
            update(_O)
            .where(
                _O.c.id == claim.id, _O.c.status == "pending", _O.c.lease_until == claim.lease_until
            )
            .values(status="sent", sent_at=now, attempts=claim.attempts + 1, lease_until=None)
        ).rowcount
    return bool(done)


def mark_failed_attempt(services: Services, claim: OutboxClaim, error: str) -> str:
    """Record a failed attempt: retry later with backoff, or after :data:`MAX_ATTEMPTS`
    declare the message dead, append a ``delivery_failed`` incident to the referral's
    timeline and tell the coordinators. ``error`` names the failure (an exception class
    and code), never a recipient's address or the message's text. Returns the new status."""
    now = services.clock.now()
    attempts = claim.attempts + 1
    with services.db.begin() as conn:
        if attempts < MAX_ATTEMPTS:
            conn.execute(
                update(_O)
                .where(
                    _O.c.id == claim.id,
                    _O.c.status == "pending",
                    _O.c.lease_until == claim.lease_until,
                )
                .values(
                    attempts=attempts,
                    next_attempt_at=now + backoff(attempts),
                    last_error=error[:500],
                    lease_until=None,
                )
            )
            return "pending"
        dead = conn.execute(
            update(_O)
            .where(
                _O.c.id == claim.id, _O.c.status == "pending", _O.c.lease_until == claim.lease_until
            )
            .values(status="dead", attempts=attempts, last_error=error[:500], lease_until=None)
        ).rowcount
        if not dead:
            return "pending"
        ref = conn.execute(select(_R).where(_R.c.id == claim.referral_id)).one()
        spec = services.sop(ref.sop_key, ref.sop_version).spec
        change = Change.open(conn, ref, spec, now)
        change.record(
            EntryDraft(
                kind="delivery_failed",
                actor=SYSTEM,
                details={
                    "message_id": claim.id,
                    "template": claim.template,
                    "recipient_role": claim.recipient_role,
                    "recipient_agency_id": claim.recipient_agency_id,
                    "attempts": attempts,
                    "error": error[:200],
                },
            )
        )
        if claim.template != DELIVERY_FAILED_TEMPLATE:
            # A notice about a notice that failed would only fail the same way, forever.
            change.notify(
                DELIVERY_FAILED_TEMPLATE,
                COORDINATOR,
                None,
                {
                    "event": "delivery_failed",
                    "state": ref.state,
                    "ask": "A notification could not be delivered: reach the recipient another way",
                },
            )
        change.write()
    return "dead"
