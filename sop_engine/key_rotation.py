"""Master key rotation: move every stored case key onto the ring's current master key, so that
an old master key can be retired (``sop-engine keys rotate``).

A rotation starts once every process runs with the new key listed first and the old one
after it (docs/runtime.md, "Master keys"): from then on new case keys are wrapped under the
new key, and :func:`rotate_case_keys` re-wraps the ones already stored. It is built to run
while the API and the workers write:

- **Online.** Each batch is read in a read transaction of its own, re-wrapped in memory, and
  written in one short write transaction where every row is a guarded
  ``UPDATE case_keys ... WHERE referral_id = ? AND master_key_id = <old> AND wrapped_key =
  <old bytes>``. A row erased meanwhile (its referral crypto-shredded) or changed meanwhile
  (another rotation got there first) matches nothing and is counted as skipped, never
  written back: an erased case key is not brought back, and a key changed since it was read
  is not overwritten with what it used to be. No lock is held between the read and the write.
- **Resumable.** What is left to do is simply every row not under the current key; a run
  keeps no state outside the rows. Killed at any point (SIGKILL included), a batch's write
  transaction has either committed or not; started again, the run picks up what is left.
- **Concurrent runs** (two operators, or a retry while the first still runs) are safe: both
  visit the same rows in the same order (by referral id, which also keeps PostgreSQL's row
  locks from deadlocking), and the guard lets exactly one of them re-wrap each row.
- **Unreadable case keys** (a wrapped key that fails its integrity check: tampered, or
  written under another key with the same id) are counted by key id and left as they are;
  the run goes on and its report says they are left (:attr:`Rotation.done` is false).

A pass walks the rows in referral-id order from the start; one made by a process still
running with the old ring behind the pass's position is found by the next pass, and passes
repeat until one finds nothing left to re-wrap. Case keys and master keys never appear in
anything this module returns or raises: only key ids and counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, select

from sop_engine.crypto import MasterKeyring, rewrap_case_key
from sop_engine.errors import ConfigurationError, TamperedData
from sop_engine.master_keys import case_key_usage, check_keyring
from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Rotation",
    "RotationTally",
    "StoredCaseKey",
    "pending_case_keys",
    "rewrap_batch",
    "rotate_case_keys",
]

DEFAULT_BATCH_SIZE = 500
"""Case keys per write transaction: short enough not to hold SQLite's write lock for long."""

_K = tables.case_keys


@dataclass(frozen=True, slots=True)
class StoredCaseKey:
    """A ``case_keys`` row as it was read, to be re-wrapped only if it is still so."""

    referral_id: str
    master_key_id: str
    wrapped_key: bytes = field(repr=False)


@dataclass(slots=True)
class RotationTally:
    """Counts by the master key id a case key was found under."""

    rewrapped: Counter[str] = field(default_factory=Counter)
    """Moved onto the current key."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Erased or changed between the read and the write: left to whoever changed them."""
    unreadable: Counter[str] = field(default_factory=Counter)
    """Failed to unwrap (tampered, or under a key the ring lacks): left as they are."""

    def add(self, other: RotationTally) -> None:
        self.rewrapped.update(other.rewrapped)
        self.skipped.update(other.skipped)
        self.unreadable.update(other.unreadable)


@dataclass(slots=True)
class Rotation:
    """A run of :func:`rotate_case_keys`, as it goes and when it ends."""

    current: str
    """The id of the key everything is moved onto."""
    at_start: dict[str, int]
    """Case keys under each other key id when the run started."""
    tally: RotationTally = field(default_factory=RotationTally)
    left: dict[str, int] | None = None
    """Case keys still under each other key id once the run ended (``None`` until then)."""

    @property
    def done(self) -> bool:
        """The run ended and no case key is left under a key other than the current one."""
        return self.left is not None and not self.left


def pending_case_keys(
    db: Engine, keyring: MasterKeyring, *, after: str = "", limit: int = DEFAULT_BATCH_SIZE
) -> list[StoredCaseKey]:
    """Up to ``limit`` case keys not under the ring's current key, by referral id, those
    after ``after`` only; read in a read transaction of their own."""
    with read_transaction(db) as conn:
        rows = conn.execute(
            select(_K.c.referral_id, _K.c.master_key_id, _K.c.wrapped_key)
            .where(_K.c.master_key_id != keyring.current.key_id, _K.c.referral_id > after)
            .order_by(_K.c.referral_id)
            .limit(limit)
        ).all()
    return [StoredCaseKey(r.referral_id, r.master_key_id, bytes(r.wrapped_key)) for r in rows]


def rewrap_batch(
    db: Engine, keyring: MasterKeyring, batch: Sequence[StoredCaseKey]
) -> RotationTally:
    """Re-wrap ``batch`` under the ring's current key in one write transaction, each row
    only if it still holds what was read (see the module docstring)."""
    return _rewrap(db, keyring, batch)[0]


def _rewrap(
    db: Engine, keyring: MasterKeyring, batch: Sequence[StoredCaseKey]
) -> tuple[RotationTally, set[str]]:
    """:func:`rewrap_batch`, and the referral ids of the case keys that failed to unwrap."""
    tally = RotationTally()
    unreadable: set[str] = set()
    rewrapped: list[tuple[StoredCaseKey, str, bytes]] = []
    for stored in batch:
        try:
            new_id, new_wrapped = rewrap_case_key(keyring, stored.master_key_id, stored.wrapped_key)
        except (TamperedData, ConfigurationError):
            tally.unreadable[stored.master_key_id] += 1
            unreadable.add(stored.referral_id)
            continue
        rewrapped.append((stored, new_id, new_wrapped))
    if not rewrapped:
        return tally, unreadable
    with db.begin() as conn:
        for stored, new_id, new_wrapped in rewrapped:
            result = conn.execute(
                _K.update()
                .where(
                    _K.c.referral_id == stored.referral_id,
                    _K.c.master_key_id == stored.master_key_id,
                    _K.c.wrapped_key == stored.wrapped_key,
                )
                .values(master_key_id=new_id, wrapped_key=new_wrapped)
            )
            counts = tally.rewrapped if result.rowcount == 1 else tally.skipped
            counts[stored.master_key_id] += 1
    return tally, unreadable


def rotate_case_keys(
    db: Engine,
    keyring: MasterKeyring,
    now: datetime,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[Rotation], None] | None = None,
) -> Rotation:
    """Re-wrap every case key not under the ring's current key, in batches of
    ``batch_size``, calling ``on_batch`` after each; see the module docstring.

    :raises ConfigurationError: the ring fails :func:`~sop_engine.master_keys.check_keyring`
        (a wrong key under a recorded id, or a key id that stored case keys use missing),
        before anything is written; or ``batch_size`` is below 1.
    """
    if batch_size < 1:
        raise ConfigurationError(f"the batch size must be at least 1, not {batch_size}")
    check_keyring(db, keyring, now)
    current = keyring.current.key_id
    rotation = Rotation(current, _others(case_key_usage(db), current))
    unreadable: set[str] = set()  # counted once, however many passes meet them
    moved = True
    while moved:
        moved = False
        after = ""
        while batch := pending_case_keys(db, keyring, after=after, limit=batch_size):
            after = batch[-1].referral_id
            fresh = [s for s in batch if s.referral_id not in unreadable]
            tally, failed = _rewrap(db, keyring, fresh)
            unreadable |= failed
            moved = moved or bool(tally.rewrapped or tally.skipped)
            rotation.tally.add(tally)
            if on_batch is not None:
                on_batch(rotation)
    rotation.left = _others(case_key_usage(db), current)
    return rotation


def _others(usage: dict[str, int], current: str) -> dict[str, int]:
    return {key_id: n for key_id, n in sorted(usage.items()) if key_id != current}
