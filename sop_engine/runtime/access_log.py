"""The access log: who read which protected data of which referral, and when.

A read is made in a read-only transaction (:func:`~sop_engine.persistence.db.read_transaction`)
and logged afterwards in a short write transaction of its own, before the data leaves the
engine; if the log cannot be written the read fails. The reader thus never turns into a
writer half-way (which on SQLite fails whenever another writer committed meanwhile), and
holds the write lock only for the one insert, so that a reader never makes a writer fail.
Refused attempts (a referral another agency cannot see, data
withheld after a withdrawal) are logged too, with ``outcome="refused"``: auditors look for
them, and so are refused authentications (``auth.*``, with the client's address; see
:mod:`api.auth_limits`). Rows hold field names, never values, and ids, never names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.services import Services

__all__ = [
    "OUTCOMES",
    "AccessRecord",
    "append_access",
    "list_access",
    "log_access",
    "record_access",
]

_A = tables.access_log
_R = tables.referrals

OUTCOMES = ("granted", "refused")


@dataclass(frozen=True, slots=True)
class AccessRecord:
    id: int
    at: datetime
    actor_id: str
    actor_role: str
    actor_agency_id: str | None
    action: str
    case_code: str | None
    fields: tuple[str, ...]
    outcome: str
    client: str | None = None
    """The client's address, for refused authentications only."""


def record_access(
    conn: Connection,
    at: datetime,
    actor: Actor,
    action: str,
    *,
    referral_id: str | None = None,
    fields: Sequence[str] = (),
    outcome: str = "granted",
    client: str | None = None,
) -> None:
    """Append one row, in the caller's transaction."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}")
    conn.execute(
        _A.insert().values(
            at=at,
            actor_id=actor.id,
            actor_role=actor.role,
            actor_agency_id=actor.agency_id,
            action=action,
            referral_id=referral_id,
            fields=sorted(set(fields)),
            outcome=outcome,
            client=client,
        )
    )


def append_access(
    services: Services,
    at: datetime,
    actor: Actor,
    action: str,
    *,
    referral_id: str | None = None,
    fields: Sequence[str] = (),
    outcome: str = "granted",
) -> None:
    """Append one row in a write transaction of its own: what a read made in a read-only
    transaction calls once it knows what it read, before the answer leaves."""
    with services.db.begin() as conn:
        record_access(
            conn, at, actor, action, referral_id=referral_id, fields=fields, outcome=outcome
        )


def log_access(
    services: Services,
    actor: Actor,
    action: str,
    *,
    case_code: str | None = None,
    fields: Sequence[str] = (),
    outcome: str = "granted",
) -> None:
    """Append one row in a transaction of its own; ``case_code`` may name no referral (an
    attempt on a code that does not exist is logged without one)."""
    with services.db.begin() as conn:
        referral_id = None
        if case_code is not None:
            referral_id = conn.execute(
                select(_R.c.id).where(_R.c.case_code == case_code)
            ).scalar_one_or_none()
        record_access(
            conn,
            services.clock.now(),
            actor,
            action,
            referral_id=referral_id,
            fields=fields,
            outcome=outcome,
        )


def list_access(
    services: Services,
    *,
    case_code: str | None = None,
    actor_id: str | None = None,
    agency_id: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int | None = None,
    limit: int = 50,
) -> list[AccessRecord]:
    """Entries oldest first, filtered, from after ``after_id`` (keyset pagination)."""
    query = (
        select(_A, _R.c.case_code)
        .select_from(_A.outerjoin(_R, _R.c.id == _A.c.referral_id))
        .order_by(_A.c.id)
        .limit(limit)
    )
    if case_code is not None:
        query = query.where(_R.c.case_code == case_code)
    if actor_id is not None:
        query = query.where(_A.c.actor_id == actor_id)
    if agency_id is not None:
        query = query.where(_A.c.actor_agency_id == agency_id)
    if outcome is not None:
        query = query.where(_A.c.outcome == outcome)
    if since is not None:
        query = query.where(_A.c.at >= since)
    if until is not None:
        query = query.where(_A.c.at < until)
    if after_id is not None:
        query = query.where(_A.c.id > after_id)
    with read_transaction(services.db) as conn:
        rows = conn.execute(query).all()
    return [
        AccessRecord(
            id=r.id,
            at=r.at,
            actor_id=r.actor_id,
            actor_role=r.actor_role,
            actor_agency_id=r.actor_agency_id,
            action=r.action,
            case_code=r.case_code,
            fields=tuple(r.fields or ()),
            outcome=r.outcome,
            client=r.client,
        )
        for r in rows
    ]
