"""The outbox's life after ``fire`` wrote it: claimed by a dispatcher, sent (with a
``delivered`` entry on the referral's timeline), retried with backoff, or, when it keeps
failing or fails for good, declared dead with a ``delivery_failed`` incident on the
referral's timeline and a notice to the coordinators. Never a silent loss.

A failure is *retryable* (a busy server, a timeout: a later attempt may pass) or not (a
refused address, a rejected request: it would fail the same way again). A retryable failure
waits :func:`backoff` and is tried again, up to :data:`MAX_ATTEMPTS`; a final one declares
the message dead on that attempt.

Both timeline entries are written through :class:`~sop_engine.runtime.change.Change` in the
transaction that changes the message's status, so the hash chain and the outbox agree. Such
an entry moves the referral's version, like any change: a ``fire`` that read the referral
before it retries, as it does after any concurrent change, and :func:`mark_sent` itself
tries again when a ``fire`` got in first.

The dispatcher (``notifications.dispatch``) renders and sends; these functions are the only
writers of the outbox's status, as ``fire`` is the only writer of its rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, and_, or_, select, update

from sop_engine.errors import ConcurrentChange, NotFound
from sop_engine.persistence import tables
from sop_engine.persistence.db import is_postgres
from sop_engine.runtime.actors import SYSTEM
from sop_engine.runtime.change import Change
from sop_engine.runtime.services import Services
from sop_engine.timeline.entries import EntryDraft

__all__ = [
    "DELIVERED",
    "DELIVERY_FAILED_TEMPLATE",
    "MAX_ATTEMPTS",
    "OutboxClaim",
    "backoff",
    "claim_outbox",
    "mark_failed_attempt",
    "mark_sent",
    "renew_outbox_claims",
]

_O = tables.outbox
_R = tables.referrals

MAX_ATTEMPTS = 8
"""Attempts before a message is declared dead (about a day with :func:`backoff`)."""
DELIVERY_FAILED_TEMPLATE = "delivery_failed"
DELIVERED = "delivered"
"""The kind of the timeline entry that records a message sent."""
COORDINATOR = "coordinator"
_SENT_TRIES = 3
"""Transactions :func:`mark_sent` tries while ``fire`` calls keep changing the referral."""


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
    sop_timezone: str | None = None
    """The time zone the referral's SOP declares, if it declares one (for recipients who
    have none of their own)."""


def claim_outbox(
    services: Services,
    now: datetime | None = None,
    limit: int = 50,
    *,
    worker: str,
    lease: timedelta,
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
            select(_O, _R.c.sop_key, _R.c.sop_version)
            .join(_R, _R.c.id == _O.c.referral_id)
            .where(_O.c.id.in_(ids), _O.c.lease_until == lease_until)
        ).all()
    zones = {
        (r.sop_key, r.sop_version): _sop_timezone(services, r.sop_key, r.sop_version) for r in rows
    }
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
            zones[r.sop_key, r.sop_version],
        )
        for r in sorted(rows, key=lambda r: (r.next_attempt_at, r.id))
    ]


def renew_outbox_claims(
    services: Services, claims: list[OutboxClaim], lease: timedelta
) -> list[OutboxClaim]:
    """Extend the leases of ``claims`` still pending by ``lease`` from now; the claims still
    ours, with their new lease (one whose lease ran out and that another dispatcher took, or
    that is marked meanwhile, is left out)."""
    if not claims:
        return []
    lease_until = services.clock.now() + lease
    renewed = set()
    with services.db.begin() as conn:
        for claim in claims:
            changed = conn.execute(
                update(_O)
                .where(
                    _O.c.id == claim.id,
                    _O.c.status == "pending",
                    _O.c.lease_until == claim.lease_until,
                )
                .values(lease_until=lease_until)
            ).rowcount
            if changed:
                renewed.add(claim.id)
    return [replace(c, lease_until=lease_until) for c in claims if c.id in renewed]


def _sop_timezone(services: Services, key: str, version: int) -> str | None:
    try:
        return services.sop(key, version).spec.timezone
    except NotFound:  # a version this process's library lacks: recipients' own zones, or UTC
        return None


def mark_sent(
    services: Services,
    claim: OutboxClaim,
    *,
    channels: Iterable[str],
    users: int = 0,
    refused_users: Mapping[str, str] | None = None,
) -> bool:
    """Record a successful delivery and, in the same transaction, a ``delivered`` entry on
    the referral's timeline: the message id, template, recipient role and agency, the
    ``channels`` it left by, how many ``users`` of the role got their own e-mail copy, whose
    copy was refused for good (``refused_users``: user id -> code), and the attempts. Never
    an address.

    False when the message was no longer ours to mark (its lease ran out, or another
    dispatcher marked it). A ``fire`` that changes the referral meanwhile makes the
    transaction start over, a few times; after that :class:`ConcurrentChange` is raised
    with nothing recorded, and the message is sent again after its lease.
    """
    details = {
        "channels": sorted(set(channels)),
        "users": users,
        "refused_users": dict(refused_users or {}),
        "attempts": claim.attempts + 1,
    }
    for _ in range(_SENT_TRIES - 1):
        try:
            return _mark_sent_once(services, claim, details)
        except ConcurrentChange:
            continue
    return _mark_sent_once(services, claim, details)


def _mark_sent_once(services: Services, claim: OutboxClaim, details: dict[str, Any]) -> bool:
    now = services.clock.now()
    attempts = claim.attempts + 1
    with services.db.begin() as conn:
        done = conn.execute(
            update(_O)
            .where(
                _O.c.id == claim.id, _O.c.status == "pending", _O.c.lease_until == claim.lease_until
            )
            .values(status="sent", sent_at=now, attempts=attempts, lease_until=None)
        ).rowcount
        if not done:
            return False
        _record(services, conn, claim, now, kind=DELIVERED, details=details)
    return True


def _record(
    services: Services,
    conn: Connection,
    claim: OutboxClaim,
    now: datetime,
    *,
    kind: str,
    details: dict[str, Any],
    notify: bool = False,
) -> None:
    """Append a ``kind`` entry about ``claim`` to its referral's timeline (and, with
    ``notify``, tell the coordinators it could not be delivered), in ``conn``'s transaction."""
    ref = conn.execute(select(_R).where(_R.c.id == claim.referral_id)).one()
    spec = services.sop(ref.sop_key, ref.sop_version).spec
    change = Change.open(conn, ref, spec, now)
    about = {
        "message_id": claim.id,
        "template": claim.template,
        "recipient_role": claim.recipient_role,
        "recipient_agency_id": claim.recipient_agency_id,
    }
    change.record(EntryDraft(kind=kind, actor=SYSTEM, details={**about, **details}))
    if notify and claim.template != DELIVERY_FAILED_TEMPLATE:
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


def mark_failed_attempt(
    services: Services, claim: OutboxClaim, error: str, *, retryable: bool
) -> Literal["pending", "dead"]:
    """Record a failed attempt. A ``retryable`` one is tried again after :func:`backoff`;
    a final one, or the :data:`MAX_ATTEMPTS`-th, declares the message dead, appends a
    ``delivery_failed`` incident to the referral's timeline and tells the coordinators.
    ``error`` names the failure (an exception class and code), never a recipient's address
    or the message's text. Returns the new status ("pending" also when the message was no
    longer ours to mark).

    :raises ConcurrentChange: the referral changed while the incident was being written;
        nothing was recorded, and the next claim after the lease tries again.
    """
    now = services.clock.now()
    attempts = claim.attempts + 1
    ours = and_(
        _O.c.id == claim.id, _O.c.status == "pending", _O.c.lease_until == claim.lease_until
    )
    with services.db.begin() as conn:
        if retryable and attempts < MAX_ATTEMPTS:
            conn.execute(
                update(_O)
                .where(ours)
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
            .where(ours)
            .values(status="dead", attempts=attempts, last_error=error[:500], lease_until=None)
        ).rowcount
        if not dead:
            return "pending"
        details = {"attempts": attempts, "error": error[:200], "final": not retryable}
        _record(services, conn, claim, now, kind="delivery_failed", details=details, notify=True)
    return "dead"
