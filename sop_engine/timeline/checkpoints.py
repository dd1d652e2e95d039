"""Checkpoints of a timeline's hash chain: a copy of the chain's hash at every
:data:`CHECKPOINT_EVERY`-th entry, written with that entry.

Whoever appends entry number ``seq``, ``seq`` a multiple of :data:`CHECKPOINT_EVERY`, also
writes ``(referral, seq, hash)`` to ``timeline_checkpoints`` in the same transaction
(``Change.write``). A checkpoint vouches for nothing by itself: it is what the chain said at
that entry when it was appended. It serves twice (:mod:`sop_engine.timeline.verify`):

- **Where to start.** A page of a long timeline is verified by recomputing the chain from
  the last checkpoint before the page, not from the first entry: at most
  ``CHECKPOINT_EVERY - 1`` entries more than the page, for the first page as for the last.
- **A second copy.** Rewriting an entry and every hash after it, so that the chain verifies
  again, leaves the checkpoints after the edit naming the old hashes; every check that
  passes one of them finds the mismatch. Every multiple of ``CHECKPOINT_EVERY`` up to the
  chain's length has its checkpoint (migration 0007 copied those of older timelines), so a
  deleted checkpoint is found too. A rewrite that also rewrites the checkpoints and the
  referral's head is not: no check inside the database can find that (see
  :mod:`sop_engine.timeline.chain`).
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["CHECKPOINT_EVERY", "checkpoint_row", "is_checkpoint"]

CHECKPOINT_EVERY: Final = 100
"""Entries between checkpoints (migration 0007 copied the existing ones at this spacing)."""


def is_checkpoint(seq: int) -> bool:
    """Whether entry ``seq`` has a checkpoint."""
    return seq > 0 and seq % CHECKPOINT_EVERY == 0


def checkpoint_row(referral_id: str, seq: int, digest: str) -> dict[str, Any]:
    """The ``timeline_checkpoints`` row of entry ``seq``, whose hash is ``digest``."""
    return {"referral_id": referral_id, "seq": seq, "hash": digest}
