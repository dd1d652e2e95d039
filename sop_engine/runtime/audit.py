"""What auditors read: referrals without their facts, and a referral's timeline with the
verification of its hash chain. Reads run in read-only transactions; the one write is the
record of a full verification asked for (``verify="full"``), in a transaction of its own
after the read.

Both reads page by keyset (see ``api/pagination.py``): referrals by ``(created_at,
case_code)``, oldest first; timeline entries by ``seq``. A timeline page and its
verification are read in one snapshot, so the status describes the entries shown.

**What a page's verification recomputes** (:mod:`sop_engine.timeline.verify`), so that
reading a timeline page by page costs each page the same, however long the timeline:

- a timeline of at most :data:`FULL_VERIFY_LIMIT` entries: all of it, on every page
  (``scope="full"``);
- a longer one: the page's entries, from the checkpoint before the page, and the recorded
  head (``scope="page"``), with the last recorded full verification beside it;
- with ``verify="full"``: all of it, whatever its length, and the result is recorded as the
  referral's last full verification (:mod:`sop_engine.timeline.verifications`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from sqlalchemy import Connection, and_, or_, select

from sop_engine.errors import InvalidInput, NotFound
from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction
from sop_engine.runtime.services import Services
from sop_engine.timeline.chain import ChainBreak
from sop_engine.timeline.verifications import (
    FullVerification,
    last_verification,
    record_verification,
)
from sop_engine.timeline.verify import verify_range, verify_referral_timeline

__all__ = [
    "FULL_VERIFY_LIMIT",
    "REFERRAL_STATUSES",
    "PageVerification",
    "ReferralSummary",
    "TimelinePage",
    "TimelineRecord",
    "list_referrals",
    "read_timeline",
]

_R = tables.referrals
_T = tables.timeline_entries

FULL_VERIFY_LIMIT: Final = 500
"""A timeline of at most this many entries is recomputed whole on every page."""

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
class PageVerification:
    """What the answer recomputed of the referral's chain, and the last full verification."""

    entries: int
    """The chain's length, as the referral records it."""
    scope: Literal["full", "page"]
    """``full``: every entry was recomputed for this answer; ``page``: the page's stretch."""
    checked_from: int | None
    """The first entry recomputed; None when none was (an empty page: the head only)."""
    checked_to: int | None
    broken: ChainBreak | None
    """The first break the recomputation found (``entry_id`` is its seq)."""
    last_full: FullVerification | None
    """The referral's last recorded full verification (this one's, with ``verify="full"``)."""

    @property
    def ok(self) -> bool:
        """No break found: by this answer's recomputation and, when it covered only the
        page, by the last full verification either."""
        if self.broken is not None:
            return False
        if self.scope == "page" and self.last_full is not None:
            return self.last_full.ok
        return True


@dataclass(frozen=True, slots=True)
class TimelinePage:
    verification: PageVerification
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
    with read_transaction(services.db) as conn:
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
    services: Services,
    case_code: str,
    *,
    after_seq: int | None = None,
    limit: int = 50,
    verify: Literal["page", "full"] = "page",
    full_limit: int = FULL_VERIFY_LIMIT,
) -> TimelinePage:
    """Up to ``limit`` entries of a referral's timeline after ``after_seq``, with what the
    module docstring says is verified (``full_limit``: :data:`FULL_VERIFY_LIMIT`);
    :class:`NotFound` for an unknown case code."""
    with read_transaction(services.db) as conn:
        ref = conn.execute(
            select(_R.c.id, _R.c.timeline_seq).where(_R.c.case_code == case_code)
        ).first()
        if ref is None:
            raise NotFound(f"no referral {case_code}")
        entries = _entries(conn, ref.id, after_seq, limit)
        last_full = last_verification(conn, ref.id)
        scope: Literal["full", "page"]
        checked: tuple[int | None, int | None]
        if verify == "full" or ref.timeline_seq <= full_limit:
            full = verify_referral_timeline(conn, ref.id)
            scope, checked, broken = "full", (1, full.entries), full.broken
            if not full.entries:
                checked = (None, None)
        else:
            first = (after_seq or 0) + 1
            last = entries[-1].seq if entries else first - 1
            stretch = verify_range(conn, ref.id, first, last)
            scope, checked = "page", (stretch.checked_from, stretch.checked_to)
            broken = stretch.broken
    if verify == "full":
        with services.db.begin() as conn:
            last_full = record_verification(conn, full, services.clock.now())
    verification = PageVerification(
        entries=ref.timeline_seq,
        scope=scope,
        checked_from=checked[0],
        checked_to=checked[1],
        broken=broken,
        last_full=last_full,
    )
    return TimelinePage(verification, entries)


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
