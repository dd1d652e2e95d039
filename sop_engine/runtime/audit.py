"""What auditors read: referrals without their facts, and a referral's whole timeline with the
verification of its hash chain. Read-only: nothing here writes a table.

Both reads page by keyset (see ``api/pagination.py``): referrals by ``(created_at,
case_code)``, oldest first; timeline entries by ``seq``. A timeline page and its
verification are read in one snapshot, so the status describes the entries shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from sop_engine.errors import InvalidInput, NotFound
from sop_engine.persistence.db import is_postgres
from sop_engine.persistence.models import Referral, TimelineEntry, table
from sop_engine.runtime.services import Services
from sop_engine.timeline.entries import TimelineCheck, verify_referral_timeline

__all__ = [
    "REFERRAL_STATUSES",
    "ReferralSummary",
    "TimelinePage",
    "TimelineRecord",
    "list_referrals",
    "read_timeline",
]

_R = table(Referral)
_T = table(TimelineEntry)

REFERRAL_STATUSES = ("open", "closed")
"""``closed``: the referral reached a final state of its SOP (``closed_at`` is set)."""


@dataclass(frozen=True, slots=True)
class ReferralSummary:
    """A referral as auditors list it: where it stands and who takes part, never its facts."""

    case_code: str
    sop_key: str
    sop_version: int
    state: str
    origin_country: str
    destination_country: str
    owner_agency_id: str
    agencies: Mapping[str, str]
    """Agency slot of the SOP -> the agency filling it for this referral."""
    created_at: datetime
    closed_at: datetime | None
    timeline_length: int
    erased: bool


@dataclass(frozen=True, slots=True)
class TimelineRecord:
    """One timeline entry, as stored: field names, never values; override notes sealed."""

    seq: int
    at: datetime
    kind: str
    actor_id: str
    actor_role: str
    actor_agency_id: str | None
    event: str | None
    from_state: str | None
    to_state: str | None
    consent_grant_id: str | None
    disclosed_to: str | None
    disclosed_fields: tuple[str, ...]
    override: bool
    details: Mapping[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class TimelinePage:
    check: TimelineCheck
    """The whole chain's verification, not only this page's."""
    entries: list[TimelineRecord]
    """Up to ``limit`` entries after the cursor, by ``seq``."""


def list_referrals(
    services: Services,
    *,
    sop: str | None = None,
    sop_version: int | None = None,
    country: str | None = None,
    state: str | None = None,
    status: str | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = 50,
) -> list[ReferralSummary]:
    """Up to ``limit`` referrals oldest first, after the ``(created_at, case_code)`` key
    ``after``.

    ``country`` matches the origin or the destination; ``status`` is ``open`` or ``closed``.
    """
    query = select(_R).order_by(_R.c.created_at, _R.c.case_code).limit(limit)
    if sop is not None:
        query = query.where(_R.c.sop_key == sop)
    if sop_version is not None:
        query = query.where(_R.c.sop_version == sop_version)
    if country is not None:
        query = query.where(
            or_(_R.c.origin_country == country, _R.c.destination_country == country)
        )
    if state is not None:
        query = query.where(_R.c.state == state)
    if status is not None:
        if status not in REFERRAL_STATUSES:
            message = f"status must be one of {', '.join(REFERRAL_STATUSES)}"
            raise InvalidInput(message, field="status")
        closed = _R.c.closed_at.is_not(None)
        query = query.where(closed if status == "closed" else ~closed)
    if after is not None:
        at, code = after
        query = query.where(
            or_(_R.c.created_at > at, and_(_R.c.created_at == at, _R.c.case_code > code))
        )
    with services.db.connect() as conn:
        rows = conn.execute(query).all()
    return [
        ReferralSummary(
            case_code=r.case_code,
            sop_key=r.sop_key,
            sop_version=r.sop_version,
            state=r.state,
            origin_country=r.origin_country,
            destination_country=r.destination_country,
            owner_agency_id=r.owner_agency_id,
            agencies={str(k): str(v) for k, v in (r.agencies or {}).items()},
            created_at=r.created_at,
            closed_at=r.closed_at,
            timeline_length=r.timeline_seq,
            erased=r.erased_at is not None,
        )
        for r in rows
    ]


def read_timeline(
    services: Services, case_code: str, *, after_seq: int | None = None, limit: int = 50
) -> TimelinePage:
    """Up to ``limit`` entries of a referral's timeline after ``after_seq``, with the
    verification of its whole chain; :class:`NotFound` for an unknown case code."""
    with services.db.connect() as conn:
        if is_postgres(services.db):
            # One snapshot for the check and the page: an entry appended in between would
            # otherwise show on a page the check did not cover. (SQLite's transactions are
            # serialized already.)
            conn.execution_options(isolation_level="REPEATABLE READ")
        referral_id = conn.execute(
            select(_R.c.id).where(_R.c.case_code == case_code)
        ).scalar_one_or_none()
        if referral_id is None:
            raise NotFound(f"no referral {case_code}")
        check = verify_referral_timeline(conn, referral_id)
        entries = _entries(conn, referral_id, after_seq, limit)
    return TimelinePage(check, entries)


def _entries(
    conn: Connection, referral_id: str, after_seq: int | None, limit: int
) -> list[TimelineRecord]:
    query = select(_T).where(_T.c.referral_id == referral_id).order_by(_T.c.seq).limit(limit)
    if after_seq is not None:
        query = query.where(_T.c.seq > after_seq)
    return [
        TimelineRecord(
            seq=r.seq,
            at=r.at,
            kind=r.kind,
            actor_id=r.actor_id,
            actor_role=r.actor_role,
            actor_agency_id=r.actor_agency_id,
            event=r.event,
            from_state=r.from_state,
            to_state=r.to_state,
            consent_grant_id=r.consent_grant_id,
            disclosed_to=r.disclosed_to,
            disclosed_fields=tuple(str(f) for f in r.disclosed_fields or ()),
            override=bool(r.override),
            details=dict(r.details or {}),
            prev_hash=r.prev_hash,
            hash=r.hash,
        )
        for r in conn.execute(query)
    ]
