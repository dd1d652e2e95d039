"""The last full verification of each referral's timeline, kept so that an audit page, which
recomputes only its own stretch of a long chain, can say how the whole chain fared and when.

Whoever verifies a timeline in full records the result here (one row per referral, replaced
each time): ``GET /audit/referrals/{case_code}/timeline?verify=full`` and ``sop-engine
timeline verify``. A record is what one verification found at one time. It says nothing of
changes made since (``entries`` and ``head_hash`` say which chain it saw), and anyone able to
write the database can write it too: asking for ``verify=full`` recomputes the chain instead
of trusting a record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from sop_engine.persistence.models import TimelineVerification, table
from sop_engine.timeline.verify import TimelineCheck

__all__ = [
    "FullVerification",
    "last_verification",
    "record_verification",
    "record_verifications",
]

BATCH = 500
"""Records written per transaction by :func:`record_verifications`: a writer on SQLite
holds the one write lock, so a long run lets others write between its batches."""

_V = table(TimelineVerification)


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


def last_verification(conn: Connection, referral_id: str) -> FullVerification | None:
    row = conn.execute(select(_V).where(_V.c.referral_id == referral_id)).first()
    if row is None:
        return None
    return FullVerification(
        row.verified_at, row.entries, row.head_hash, row.ok, row.broken_seq, row.reason
    )
