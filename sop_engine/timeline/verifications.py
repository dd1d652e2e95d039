"""The last full verification of each referral's timeline, kept so that an audit page, which
recomputes only its own stretch of a long chain, can say how the whole chain fared and when.

Whoever verifies a timeline in full records the result here (one row per referral, replaced
each time): ``GET /audit/referrals/{case_code}/timeline?verify=full``, ``sop-engine
timeline verify``, and the scheduled ``timeline-verification`` flow, which verifies the
timelines :func:`due_for_verification` names: never verified in full, changed since, or
last verified :data:`STALE_AFTER` ago or more.

A record is what one verification found at one time. It says nothing of changes made since
(``head_hash``, the head the referral recorded then, says which chain it saw), and anyone
able to write the database can write it too: asking for ``verify=full`` recomputes the
chain instead of trusting a record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import Connection, Engine, case, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from sop_engine.persistence import tables
from sop_engine.timeline.verify import TimelineCheck

__all__ = [
    "STALE_AFTER",
    "FullVerification",
    "due_for_verification",
    "last_verification",
    "record_verification",
    "record_verifications",
]

BATCH = 500
"""Records written per transaction by :func:`record_verifications`: a writer on SQLite
holds the one write lock, so a long run lets others write between its batches."""

_V = tables.timeline_verifications
_R = tables.referrals

STALE_AFTER: Final = timedelta(days=1)
"""A full verification older than this is due again, even if the chain did not change."""


@dataclass(frozen=True, slots=True)
class FullVerification:
    """One full verification of a referral's timeline, as recorded."""

    verified_at: datetime
    entries: int
    """How many entries it recomputed."""
    head_hash: str
    ok: bool
    broken_seq: int | None
    reason: str | None

    @classmethod
    def of(cls, check: TimelineCheck, at: datetime) -> FullVerification:
        broken = check.broken
        return cls(
            verified_at=at,
            entries=check.entries,
            head_hash=check.head_hash,
            ok=check.ok,
            broken_seq=broken.entry_id if broken is not None else None,
            reason=broken.reason if broken is not None else None,
        )


def record_verification(conn: Connection, check: TimelineCheck, at: datetime) -> FullVerification:
    """Keep ``check`` as the referral's last full verification, in the caller's (write)
    transaction; two verifiers at once leave one of their records, whole."""
    record = FullVerification.of(check, at)
    values = {
        "verified_at": record.verified_at,
        "entries": record.entries,
        "head_hash": record.head_hash,
        "ok": record.ok,
        "broken_seq": record.broken_seq,
        "reason": record.reason,
    }
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    upsert = dialect.insert(_V).values(referral_id=check.referral_id, **values)
    conn.execute(upsert.on_conflict_do_update(index_elements=[_V.c.referral_id], set_=values))
    return record


def record_verifications(db: Engine, checks: Sequence[TimelineCheck], at: datetime) -> None:
    """Keep every check of ``checks`` as its referral's last full verification, in short
    write transactions of :data:`BATCH` records."""
    for start in range(0, len(checks), BATCH):
        with db.begin() as conn:
            for check in checks[start : start + BATCH]:
                record_verification(conn, check, at)


def due_for_verification(
    conn: Connection, now: datetime, *, limit: int, stale_after: timedelta = STALE_AFTER
) -> list[str]:
    """Up to ``limit`` referral ids whose timeline is due for a full verification: never
    verified in full first, then by their last verification, oldest first. Due means never
    verified, grown or rewritten since (the referral's recorded head is not the one the
    record saw: every entry appended changes it), or last verified at or before
    ``now - stale_after``."""
    query = (
        select(_R.c.id)
        .select_from(_R.outerjoin(_V, _V.c.referral_id == _R.c.id))
        .where(
            or_(
                _V.c.referral_id.is_(None),
                _V.c.head_hash != _R.c.head_hash,
                _V.c.verified_at <= now - stale_after,
            )
        )
        .order_by(case((_V.c.verified_at.is_(None), 0), else_=1), _V.c.verified_at, _R.c.id)
        .limit(limit)
    )
    return list(conn.scalars(query))


def last_verification(conn: Connection, referral_id: str) -> FullVerification | None:
    row = conn.execute(select(_V).where(_V.c.referral_id == referral_id)).first()
    if row is None:
        return None
    return FullVerification(
        row.verified_at, row.entries, row.head_hash, row.ok, row.broken_seq, row.reason
    )
