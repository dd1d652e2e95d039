"""Writing and verifying a referral's timeline in the database.

Each entry is appended in the transaction of the change it records, chained to the one
before by SHA-256 (:mod:`chain`). The referral row keeps the chain's head (``head_hash``,
``timeline_seq``), so appending needs no extra read, and verification also notices entries
cut off the end, unless the referral row was rewritten too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from sop_engine.persistence.models import Referral, TimelineEntry, table
from sop_engine.runtime.actors import Actor
from sop_engine.timeline.chain import GENESIS, ChainBreak, verify_chain

__all__ = [
    "EntryDraft",
    "TimelineCheck",
    "entry_content",
    "entry_row",
    "verify_referral_timeline",
    "verify_timelines",
]

_T = table(TimelineEntry)
_R = table(Referral)

HEAD_MISMATCH = "the referral's recorded head does not match its last entry (entries cut off?)"


@dataclass(frozen=True, slots=True)
class EntryDraft:
    """What one timeline entry says, before it is numbered and chained."""

    kind: str
    actor: Actor
    event: str | None = None
    from_state: str | None = None
    to_state: str | None = None
    consent_grant_id: str | None = None
    disclosed_to: str | None = None
    disclosed_fields: Sequence[str] = ()
    override: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def entry_content(row: Mapping[str, Any]) -> dict[str, Any]:
    """The hashed content of an entry, from a row or the values about to be inserted."""
    return {
        "referral_id": row["referral_id"],
        "seq": row["seq"],
        "at": _iso(row["at"]),
        "kind": row["kind"],
        "actor_id": row["actor_id"],
        "actor_role": row["actor_role"],
        "actor_agency_id": row["actor_agency_id"],
        "event": row["event"],
        "from_state": row["from_state"],
        "to_state": row["to_state"],
        "consent_grant_id": row["consent_grant_id"],
        "disclosed_to": row["disclosed_to"],
        "disclosed_fields": list(row["disclosed_fields"] or ()),
        "override": bool(row["override"]),
        "details": dict(row["details"] or {}),
    }


def entry_row(referral_id: str, seq: int, at: datetime, draft: EntryDraft) -> dict[str, Any]:
    """The column values of entry number ``seq``, before it is chained (``prev_hash`` and
    ``hash`` are added by whoever appends it: ``Change.record``)."""
    return {
        "referral_id": referral_id,
        "seq": seq,
        "at": at,
        "kind": draft.kind,
        "actor_id": draft.actor.id,
        "actor_role": draft.actor.role,
        "actor_agency_id": draft.actor.agency_id,
        "event": draft.event,
        "from_state": draft.from_state,
        "to_state": draft.to_state,
        "consent_grant_id": draft.consent_grant_id,
        "disclosed_to": draft.disclosed_to,
        "disclosed_fields": list(draft.disclosed_fields),
        "override": draft.override,
        "details": dict(draft.details),
    }


@dataclass(frozen=True, slots=True)
class TimelineCheck:
    """The result of verifying one referral's timeline."""

    referral_id: str
    case_code: str
    entries: int
    broken: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.broken is None


def verify_referral_timeline(conn: Connection, referral_id: str) -> TimelineCheck:
    """Recompute one referral's chain; name the first entry (by ``seq``) that does not match."""
    head = conn.execute(
        select(_R.c.case_code, _R.c.timeline_seq, _R.c.head_hash).where(_R.c.id == referral_id)
    ).one()
    rows = conn.execute(select(_T).where(_T.c.referral_id == referral_id).order_by(_T.c.seq)).all()
    entries = [(r.seq, entry_content(dict(r._mapping)), r.prev_hash, r.hash) for r in rows]
    broken = verify_chain(entries)
    if broken is not None:
        broken = ChainBreak(broken.index, broken.entry_id, broken.reason)
    elif (rows[-1].seq if rows else 0) != head.timeline_seq or (
        rows[-1].hash if rows else GENESIS
    ) != head.head_hash:
        broken = ChainBreak(len(rows), rows[-1].seq if rows else None, HEAD_MISMATCH)
    return TimelineCheck(referral_id, head.case_code, len(rows), broken)


def verify_timelines(conn: Connection, case_code: str | None = None) -> list[TimelineCheck]:
    """Verify every referral's timeline, or one referral's by case code."""
    query = select(_R.c.id).order_by(_R.c.created_at, _R.c.id)
    if case_code is not None:
        query = query.where(_R.c.case_code == case_code)
    return [verify_referral_timeline(conn, rid) for rid in conn.scalars(query)]
