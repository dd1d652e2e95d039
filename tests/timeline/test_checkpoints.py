"""Checkpoints and the verification of a stretch of a long timeline, attacked as someone with
write access to the database would attack them: an entry edited in place, the chain rewritten
from an entry on (hashes and head recomputed), a checkpoint changed, deleted or forged, the
tail cut off. Each attack is found by the checks that can find it, and the one no check inside
the database can find (everything rewritten, checkpoints included) is pinned down too.

The timelines are written by the engine's own writer (``Change``), on SQLite and on
PostgreSQL: ``bench.pingpong`` volleyed through ``fire`` for the writer's test, and 249
entries recorded in one change for the others (the same code path, in one transaction).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select, update

from bench.common import ACTOR, EVENT, SOP_KEY, case_code, load_library, seed_referrals
from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction
from sop_engine.runtime import audit
from sop_engine.runtime.change import Change
from sop_engine.runtime.engine import Runtime
from sop_engine.timeline.chain import GENESIS, HASH_MISMATCH, PREV_HASH_MISMATCH, entry_hash
from sop_engine.timeline.checkpoints import CHECKPOINT_EVERY
from sop_engine.timeline.entries import EntryDraft, entry_content
from sop_engine.timeline.verify import (
    ANCHOR_MISMATCH,
    CHECKPOINT_MISMATCH,
    CHECKPOINT_MISSING,
    HEAD_MISMATCH,
    RangeCheck,
    verify_range,
    verify_referral_timeline,
)

START = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)

LENGTH = 250
"""Entries: 1 created + 249 volleys; checkpoints at 100 and 200."""

_T = tables.timeline_entries
_C = tables.timeline_checkpoints
_R = tables.referrals


@dataclass
class Long:
    runtime: Runtime
    code: str
    referral_id: str

    def range(self, first: int, last: int) -> RangeCheck:
        with read_transaction(self.runtime.db) as conn:
            return verify_range(conn, self.referral_id, first, last)

    def full(self) -> Any:
        with read_transaction(self.runtime.db) as conn:
            return verify_referral_timeline(conn, self.referral_id)

    def page(self, after: int | None, limit: int, **options: Any) -> audit.TimelinePage:
        return audit.read_timeline(
            self.runtime.services, self.code, after_seq=after, limit=limit, **options
        )

    def execute(self, statement: Any) -> None:
        with self.runtime.db.begin() as conn:
            conn.execute(statement)

    def entry(self, seq: int) -> Any:
        return self.entries(seq, seq)[0]

    def entries(self, first: int, last: int) -> list[Any]:
        with self.runtime.db.connect() as conn:
            return list(
                conn.execute(
                    select(_T)
                    .where(_T.c.referral_id == self.referral_id, _T.c.seq.between(first, last))
                    .order_by(_T.c.seq)
                )
            )

    def rewrite_from(self, seq: int, *, checkpoints: bool = False) -> None:
        """Edit entry ``seq`` and recompute every hash after it and the referral's head, as
        an attacker covering their tracks would; with ``checkpoints``, those too."""
        with self.runtime.db.begin() as conn:
            prev = conn.execute(
                select(_T.c.hash).where(_T.c.referral_id == self.referral_id, _T.c.seq == seq - 1)
            ).scalar_one()
            rows = conn.execute(
                select(_T)
                .where(_T.c.referral_id == self.referral_id, _T.c.seq >= seq)
                .order_by(_T.c.seq)
            ).all()
            for r in rows:
                values = dict(r._mapping)
                if r.seq == seq:
                    values["actor_id"] = "someone-else"
                digest = entry_hash(prev, entry_content(values))
                conn.execute(
                    update(_T)
                    .where(_T.c.id == r.id)
                    .values(actor_id=values["actor_id"], prev_hash=prev, hash=digest)
                )
                if checkpoints and r.seq % CHECKPOINT_EVERY == 0:
                    conn.execute(
                        update(_C)
                        .where(_C.c.referral_id == self.referral_id, _C.c.seq == r.seq)
                        .values(hash=digest)
                    )
                prev = digest
            conn.execute(update(_R).where(_R.c.id == self.referral_id).values(head_hash=prev))


def _seeded(engine: Engine) -> Long:
    library = load_library()
    runtime = Runtime(
        engine, library, MasterKeyring(MasterKey.generate("test")), ManualClock(START)
    )
    seed_referrals(engine, library.get(SOP_KEY), 1)
    code = case_code(0)
    return Long(runtime, code, runtime.read_referral(code).id)


@pytest.fixture
def long(engine: Engine) -> Long:
    timeline = _seeded(engine)
    spec = timeline.runtime.library.get(SOP_KEY, 1).spec
    with engine.begin() as conn:
        ref = conn.execute(select(_R).where(_R.c.id == timeline.referral_id)).one()
        change = Change.open(conn, ref, spec, START)
        for _ in range(LENGTH - 1):
            change.record(EntryDraft(kind="transition", actor=ACTOR, event=EVENT))
        change.write()
    return timeline


def test_the_writer_keeps_a_checkpoint_at_every_hundredth_entry(engine: Engine) -> None:
    timeline = _seeded(engine)
    for _ in range(LENGTH - 1):
        timeline.runtime.fire(timeline.code, EVENT, ACTOR)
    with engine.connect() as conn:
        stored = conn.execute(
            select(_C.c.seq, _C.c.hash).where(_C.c.referral_id == timeline.referral_id)
        ).all()
    assert sorted(stored) == [(100, timeline.entry(100).hash), (200, timeline.entry(200).hash)]
    assert timeline.full().ok
    assert timeline.full().entries == LENGTH


def test_a_stretch_is_recomputed_from_the_checkpoint_before_it(long: Long) -> None:
    assert long.range(201, 250) == RangeCheck(LENGTH, 201, 250, 200, None)
    assert long.range(120, 180) == RangeCheck(LENGTH, 101, 180, 100, None)
    assert long.range(1, 50) == RangeCheck(LENGTH, 1, 50, 0, None)
    assert long.range(100, 100) == RangeCheck(LENGTH, 1, 100, 0, None)
    assert long.range(101, 999) == RangeCheck(LENGTH, 101, 250, 100, None)
    assert long.range(251, 300) == RangeCheck(LENGTH, None, None, 0, None)  # the head only


def test_reading_a_long_timeline_page_by_page_costs_each_page_the_same(long: Long) -> None:
    """Every page recomputes at most CHECKPOINT_EVERY - 1 entries besides its own, and the
    pages together show every entry once, each verified."""
    after, seen = None, []
    while True:
        page = long.page(after, 30, full_limit=10)
        if not page.entries:
            break
        v = page.verification
        assert (v.scope, v.ok, v.entries, v.last_full) == ("page", True, LENGTH, None)
        assert v.checked_to == page.entries[-1].seq
        assert v.checked_from is not None
        assert v.checked_from <= page.entries[0].seq
        assert v.checked_to - v.checked_from + 1 <= CHECKPOINT_EVERY - 1 + len(page.entries)
        seen += [e.seq for e in page.entries]
        after = page.entries[-1].seq
    assert seen == list(range(1, LENGTH + 1))


def test_an_entry_edited_in_place_is_found_by_its_page_and_by_a_full_verification(
    long: Long,
) -> None:
    long.execute(
        update(_T).where(_T.c.referral_id == long.referral_id, _T.c.seq == 150).values(kind="x")
    )
    edited = long.range(141, 160).broken
    assert edited is not None
    assert (edited.entry_id, edited.reason) == (150, HASH_MISMATCH)
    # A page after the next checkpoint recomputes only its stretch: it cannot see entry 150,
    # and says so (scope "page", no full verification recorded yet).
    later = long.page(200, 50, full_limit=10).verification
    assert (later.scope, later.ok, later.checked_from, later.last_full) == ("page", True, 201, None)
    # A full verification finds it, is recorded, and from then on every page reports it.
    full = long.page(200, 50, verify="full").verification
    assert (full.scope, full.ok, full.checked_from, full.checked_to) == ("full", False, 1, 250)
    assert full.broken is not None
    assert (full.broken.entry_id, full.broken.reason) == (150, HASH_MISMATCH)
    assert full.last_full is not None
    assert (full.last_full.ok, full.last_full.broken_seq) == (False, 150)
    later = long.page(200, 50, full_limit=10).verification
    assert later.broken is None
    assert later.last_full == full.last_full
    assert not later.ok


def test_a_rewrite_covering_its_tracks_is_found_at_the_next_checkpoint(long: Long) -> None:
    long.rewrite_from(150)
    # Every hash after 150 fits again, up to the referral's head, but checkpoint 200 still
    # holds the old hash at entry 200.
    full = long.full()
    assert full.broken is not None
    assert (full.broken.entry_id, full.broken.reason) == (200, CHECKPOINT_MISMATCH)
    crossing = long.range(151, 210).broken
    assert crossing is not None
    assert (crossing.entry_id, crossing.reason) == (200, CHECKPOINT_MISMATCH)
    after = long.range(201, 250).broken
    assert after is not None
    assert (after.entry_id, after.reason) == (201, ANCHOR_MISMATCH)
    # A stretch between the edit and the next checkpoint, and one before the edit, fit: only
    # a check that recomputes entry 150 or passes checkpoint 200 can tell.
    assert long.range(160, 190).ok
    assert long.range(1, 100).ok


def test_a_changed_checkpoint_is_found_by_every_check_that_uses_it(long: Long) -> None:
    long.execute(
        update(_C)
        .where(_C.c.referral_id == long.referral_id, _C.c.seq == 200)
        .values(hash="f" * 64)
    )
    breaks = [long.range(201, 250).broken, long.range(151, 200).broken, long.full().broken]
    assert [(b.entry_id, b.reason) for b in breaks if b is not None] == [
        (201, ANCHOR_MISMATCH),
        (200, CHECKPOINT_MISMATCH),
        (200, CHECKPOINT_MISMATCH),
    ]


def test_a_deleted_checkpoint_is_found(long: Long) -> None:
    long.execute(delete(_C).where(_C.c.referral_id == long.referral_id, _C.c.seq == 200))
    # The page starts from checkpoint 100 instead, passes entry 200 and misses its checkpoint.
    stretch = long.range(201, 250)
    assert (stretch.anchor, stretch.checked_from) == (100, 101)
    assert stretch.broken is not None
    assert (stretch.broken.entry_id, stretch.broken.reason) == (200, CHECKPOINT_MISSING)
    full = long.full().broken
    assert full is not None
    assert (full.entry_id, full.reason) == (200, CHECKPOINT_MISSING)


def test_a_forged_checkpoint_is_found_and_a_true_copy_is_harmless(long: Long) -> None:
    long.execute(_C.insert().values(referral_id=long.referral_id, seq=150, hash="e" * 64))
    forged = long.range(151, 160).broken
    assert forged is not None
    assert (forged.entry_id, forged.reason) == (151, ANCHOR_MISMATCH)
    long.execute(
        update(_C)
        .where(_C.c.referral_id == long.referral_id, _C.c.seq == 150)
        .values(hash=long.entry(150).hash)
    )
    assert long.range(151, 160) == RangeCheck(LENGTH, 151, 160, 150, None)
    assert long.full().ok


def test_a_removed_entry_and_a_cut_off_tail_are_found_from_any_page(long: Long) -> None:
    long.execute(delete(_T).where(_T.c.referral_id == long.referral_id, _T.c.seq == 230))
    gap = long.range(221, 240).broken
    assert gap is not None
    assert (gap.entry_id, gap.reason) == (231, PREV_HASH_MISMATCH)
    long.execute(delete(_T).where(_T.c.referral_id == long.referral_id, _T.c.seq >= 229))
    # The referral's head still names entry 250: even the first page sees the cut.
    head = long.range(1, 50).broken
    assert head is not None
    assert (head.entry_id, head.reason) == (228, HEAD_MISMATCH)
    assert long.page(None, 50, full_limit=10).verification.broken == head


def test_a_rewrite_of_everything_inside_the_database_is_not_found(long: Long) -> None:
    """The limit, stated in ``sop_engine.timeline.chain``: entries, checkpoints and head all
    rewritten verify. Only a head anchored outside the database can show this rewrite."""
    long.rewrite_from(150, checkpoints=True)
    assert long.full().ok
    assert long.range(201, 250).ok
    assert long.entry(150).actor_id == "someone-else"


def test_an_empty_timeline_verifies_and_its_page_checks_the_head(engine: Engine) -> None:
    """A referral row with no entry (head at the genesis hash), as no writer leaves one."""
    library = load_library()
    runtime = Runtime(engine, library, MasterKeyring(MasterKey.generate("t")), ManualClock(START))
    seed_referrals(engine, library.get(SOP_KEY), 1)
    referral_id = runtime.read_referral(case_code(0)).id
    with engine.begin() as conn:
        conn.execute(delete(_T).where(_T.c.referral_id == referral_id))
        conn.execute(
            update(_R).where(_R.c.id == referral_id).values(timeline_seq=0, head_hash=GENESIS)
        )
    with read_transaction(engine) as conn:
        assert verify_range(conn, referral_id, 1, 50) == RangeCheck(0, None, None, 0, None)
        assert verify_referral_timeline(conn, referral_id).ok
