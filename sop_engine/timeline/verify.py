"""Verifying a referral's timeline: all of it, or a stretch of it from the checkpoint before.

- :func:`verify_referral_timeline` (**full**): recompute every entry from the first; every
  entry must link to the one before and hash to its stored hash, every checkpoint must
  exist and equal the recomputed hash at its entry, and the referral's recorded head must be
  the last entry. Cost: the whole timeline.
- :func:`verify_range` (**range**): the same checks for entries ``first..last``, recomputed
  from the last checkpoint before ``first`` (entry ``C + 1`` must link to checkpoint ``C``'s
  hash), and the head. Cost: at most ``CHECKPOINT_EVERY - 1`` entries more than the range,
  wherever it lies.

What a range check does **not** show: an entry before its starting checkpoint that was
edited in place (its content or its stored hash, without rewriting the entries after it).
That is found only by recomputing the entry, by a full verification, whose last result the
audit answers report beside the range (:mod:`sop_engine.timeline.verifications`). What
neither shows: a rewrite of the whole chain from some entry on, with its checkpoints and
the referral's head (see :mod:`sop_engine.timeline.chain`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, Row, select

from sop_engine.persistence import tables
from sop_engine.timeline.chain import (
    GENESIS,
    HASH_MISMATCH,
    PREV_HASH_MISMATCH,
    ChainBreak,
    entry_hash,
)
from sop_engine.timeline.checkpoints import is_checkpoint
from sop_engine.timeline.entries import entry_content

__all__ = [
    "ANCHOR_MISMATCH",
    "CHECKPOINT_MISMATCH",
    "CHECKPOINT_MISSING",
    "HEAD_MISMATCH",
    "RangeCheck",
    "TimelineCheck",
    "verify_range",
    "verify_referral_timeline",
    "verify_timelines",
]

HEAD_MISMATCH: Final = (
    "the referral's recorded head does not match its last entry (entries cut off?)"
)
CHECKPOINT_MISMATCH: Final = (
    "the checkpoint at this entry does not match the chain (the chain or the checkpoint was "
    "rewritten)"
)
CHECKPOINT_MISSING: Final = "the checkpoint at this entry is missing (deleted?)"
ANCHOR_MISMATCH: Final = (
    "prev_hash does not match the checkpoint before this entry (the chain or the checkpoint "
    "was rewritten)"
)

_R = tables.referrals
_T = tables.timeline_entries
_C = tables.timeline_checkpoints


@dataclass(frozen=True, slots=True)
class TimelineCheck:
    """The result of verifying one referral's whole timeline."""

    referral_id: str
    case_code: str
    entries: int
    """How many entries were recomputed: all the timeline holds."""
    broken: ChainBreak | None
    """``entry_id`` is the seq of the first entry that does not fit."""
    head_hash: str = GENESIS
    """The chain's head as the referral records it (the last entry's hash, if intact)."""

    @property
    def ok(self) -> bool:
        return self.broken is None


@dataclass(frozen=True, slots=True)
class RangeCheck:
    """What :func:`verify_range` recomputed, and the first break it found."""

    entries: int
    """The chain's length, as the referral records it."""
    checked_from: int | None
    """The first entry recomputed (the one after ``anchor``); None when none was."""
    checked_to: int | None
    anchor: int
    """The checkpoint the recomputation started from; 0 for the chain's start."""
    broken: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.broken is None


def verify_referral_timeline(conn: Connection, referral_id: str) -> TimelineCheck:
    """Recompute one referral's chain from its first entry (module docstring)."""
    head = _head(conn, referral_id)
    rows = conn.execute(select(_T).where(_T.c.referral_id == referral_id).order_by(_T.c.seq)).all()
    checkpoints = _checkpoints(conn, referral_id, 0, head.timeline_seq)
    broken = _walk(rows, 0, GENESIS, checkpoints)
    if broken is None and _last(rows) != (head.timeline_seq, head.head_hash):
        broken = ChainBreak(len(rows), rows[-1].seq if rows else None, HEAD_MISMATCH)
    return TimelineCheck(referral_id, head.case_code, len(rows), broken, head.head_hash)


def verify_timelines(conn: Connection, case_code: str | None = None) -> list[TimelineCheck]:
    """Verify every referral's timeline in full, or one referral's by case code."""
    query = select(_R.c.id).order_by(_R.c.created_at, _R.c.id)
    if case_code is not None:
        query = query.where(_R.c.case_code == case_code)
    return [verify_referral_timeline(conn, rid) for rid in conn.scalars(query)]


def verify_range(conn: Connection, referral_id: str, first: int, last: int) -> RangeCheck:
    """Verify entries ``first..last`` (``last`` cut to the chain's length) from the
    checkpoint before them, and the recorded head (module docstring). A range holding no
    entry checks the head only."""
    head = _head(conn, referral_id)
    first, last = max(first, 1), min(last, head.timeline_seq)
    if first > last:
        return RangeCheck(head.timeline_seq, None, None, 0, _head_break(conn, referral_id, head))
    anchor = conn.execute(
        select(_C.c.seq, _C.c.hash)
        .where(_C.c.referral_id == referral_id, _C.c.seq < first)
        .order_by(_C.c.seq.desc())
        .limit(1)
    ).first()
    anchor_seq, anchor_hash = (anchor.seq, anchor.hash) if anchor is not None else (0, GENESIS)
    rows = conn.execute(
        select(_T)
        .where(_T.c.referral_id == referral_id, _T.c.seq > anchor_seq, _T.c.seq <= last)
        .order_by(_T.c.seq)
    ).all()
    checkpoints = _checkpoints(conn, referral_id, anchor_seq, last)
    broken = _walk(rows, anchor_seq, anchor_hash, checkpoints)
    if broken is None and (not rows or rows[-1].seq != last):
        broken = ChainBreak(len(rows), last, PREV_HASH_MISMATCH)
    if broken is None:
        broken = _head_break(conn, referral_id, head)
    return RangeCheck(head.timeline_seq, anchor_seq + 1, last, anchor_seq, broken)


def _walk(
    rows: Sequence[Row[Any]], anchor_seq: int, anchor_hash: str, checkpoints: Mapping[int, str]
) -> ChainBreak | None:
    """The first of ``rows`` (the entries after ``anchor_seq``, by seq) that does not fit."""
    expected_seq, expected_prev = anchor_seq + 1, anchor_hash
    for index, r in enumerate(rows):
        if r.seq != expected_seq or r.prev_hash != expected_prev:
            reason = ANCHOR_MISMATCH if index == 0 and anchor_seq else PREV_HASH_MISMATCH
            return ChainBreak(index, r.seq, reason)
        if entry_hash(r.prev_hash, entry_content(dict(r._mapping))) != r.hash:
            return ChainBreak(index, r.seq, HASH_MISMATCH)
        if is_checkpoint(r.seq):
            stored = checkpoints.get(r.seq)
            if stored is None:
                return ChainBreak(index, r.seq, CHECKPOINT_MISSING)
            if stored != r.hash:
                return ChainBreak(index, r.seq, CHECKPOINT_MISMATCH)
        expected_seq, expected_prev = r.seq + 1, r.hash
    return None


def _head(conn: Connection, referral_id: str) -> Any:
    return conn.execute(
        select(_R.c.case_code, _R.c.timeline_seq, _R.c.head_hash).where(_R.c.id == referral_id)
    ).one()


def _checkpoints(conn: Connection, referral_id: str, after: int, last: int) -> dict[int, str]:
    rows = conn.execute(
        select(_C.c.seq, _C.c.hash).where(
            _C.c.referral_id == referral_id, _C.c.seq > after, _C.c.seq <= last
        )
    )
    return {r.seq: r.hash for r in rows}


def _last(rows: Sequence[Row[Any]]) -> tuple[int, str]:
    return (rows[-1].seq, rows[-1].hash) if rows else (0, GENESIS)


def _head_break(conn: Connection, referral_id: str, head: Any) -> ChainBreak | None:
    """A break when the referral's recorded head is not its last entry (one indexed read)."""
    last = conn.execute(
        select(_T.c.seq, _T.c.hash)
        .where(_T.c.referral_id == referral_id)
        .order_by(_T.c.seq.desc())
        .limit(1)
    ).first()
    found = (last.seq, last.hash) if last is not None else (0, GENESIS)
    if found == (head.timeline_seq, head.head_hash):
        return None
    return ChainBreak(0, last.seq if last is not None else None, HEAD_MISMATCH)
