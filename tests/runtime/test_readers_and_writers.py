"""Readers and writers at once, on a real SQLite file and on PostgreSQL: writers (threads, or
processes as when several API processes share the database) fire events while readers in
other threads page a long timeline that one of the writers keeps extending, count deadline
compliance by every grouping, list referrals and tasks and read the access log.

What must hold: no writer fails (no "database is locked", no lost event), no reader fails,
every page's verification holds and the pages show each entry once, in order; afterwards
every timeline verifies in full. Reads take no write lock (``read_transaction``); the only
writes of a read are its access-log row, in a short transaction of its own. All data is
synthetic (``bench.pingpong``).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from bench.common import ACTOR, EVENT, SOP_KEY, case_code, seed_referrals
from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.persistence.db import make_engine
from sop_engine.runtime.audit import FULL_VERIFY_LIMIT
from sop_engine.runtime.change import Change
from sop_engine.runtime.compliance import GROUPINGS
from sop_engine.runtime.engine import Runtime
from sop_engine.timeline.entries import EntryDraft

START = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
WAIT = 120.0
WRITERS = 4
FIRES = 40
"""Events per writer; one writer fires on the long timeline, which readers page meanwhile."""
LONG = FULL_VERIFY_LIMIT + 150
"""Entries of the long timeline at the start: long enough to be verified page by page."""
TASKS = 300

_T = tables.timeline_entries
_TK = tables.tasks
_R = tables.referrals


@functools.cache
def _library() -> SopLibrary:
    return SopLibrary.load([Path(__file__).resolve().parents[2] / "bench"])


def _codes(writer: int) -> list[str]:
    """Writer 0 fires on the long timeline (referral 0) and its own; the others on theirs."""
    own = [case_code(1 + writer * 2), case_code(2 + writer * 2)]
    return [case_code(0), *own] if writer == 0 else own


def _fire(runtime: Runtime, writer: int, start: Callable[[], object]) -> dict[str, Any]:
    """Fire ``FIRES`` events round-robin over the writer's referrals; any failure is kept."""
    codes = _codes(writer)
    fired, failures = 0, []
    start()
    for index in range(FIRES):
        try:
            runtime.fire(codes[index % len(codes)], EVENT, ACTOR)
            fired += 1
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
    return {"pid": os.getpid(), "fired": fired, "failures": failures}


_barrier: dict[str, Any] = {}


def _init_process(barrier: Any) -> None:
    _barrier["it"] = barrier


def _fire_in_process(url: str, key: str, writer: int) -> dict[str, Any]:
    keyring = MasterKeyring.from_setting(key)
    runtime = Runtime(make_engine(url), _library(), keyring, ManualClock(START))
    try:
        return _fire(runtime, writer, lambda: _barrier["it"].wait(timeout=WAIT))
    finally:
        runtime.db.dispose()


# -- the test's side --------------------------------------------------------------------------


@dataclass
class Reads:
    """What the readers did and met."""

    rounds: int = 0
    pages: int = 0
    errors: list[str] | None = None

    def __post_init__(self) -> None:
        self.errors = []


def _seed(engine: Engine, runtime: Runtime) -> None:
    """Referral 0 with a long timeline; two referrals per writer; tasks to count."""
    sop = _library().get(SOP_KEY)
    seed_referrals(engine, sop, 1 + 2 * WRITERS)
    with engine.begin() as conn:
        ref = conn.execute(select(_R).where(_R.c.case_code == case_code(0))).one()
        change = Change.open(conn, ref, sop.spec, START)
        for _ in range(LONG - 1):
            change.record(EntryDraft(kind="note", actor=ACTOR))
        change.write()
        ids = conn.scalars(select(_R.c.id)).all()
        conn.execute(
            _TK.insert(),
            [
                {
                    "id": str(uuid.uuid4()),
                    "referral_id": ids[i % len(ids)],
                    "state": "ping",
                    "name": "respond",
                    "role": "caseworker",
                    "agency_slot": "case_agency",
                    "agency_id": ACTOR.agency_id,
                    "ask": "Respond",
                    "status": ("open", "done", "cancelled")[i % 3],
                    "due_at": START + timedelta(hours=i % 48 - 24),
                    "created_at": START - timedelta(days=1),
                    "closed_at": START if i % 3 else None,
                }
                for i in range(TASKS)
            ],
        )


def _read_until(runtime: Runtime, done: threading.Event, reads: Reads) -> None:
    assert reads.errors is not None
    while not done.is_set() or reads.rounds == 0:
        try:
            seen: list[int] = []
            after = None
            while True:
                page = runtime.read_timeline(case_code(0), after_seq=after, limit=100)
                reads.pages += 1
                if not page.verification.ok:
                    reads.errors.append(f"page after {after}: {page.verification}")
                if not page.entries:
                    break
                seen += [e.seq for e in page.entries]
                after = page.entries[-1].seq
            if seen != list(range(1, len(seen) + 1)) or len(seen) < LONG:
                reads.errors.append(f"the pages showed {len(seen)} entries out of order")
            for grouping in GROUPINGS:
                runtime.compliance(grouping)
            runtime.list_referrals(limit=20)
            runtime.access_log(limit=20)
            runtime.list_tasks(ACTOR, limit=20)
            runtime.read_referral(case_code(1), actor=ACTOR)
        except Exception as exc:
            reads.errors.append(f"{type(exc).__name__}: {exc}")
        reads.rounds += 1


@pytest.mark.slow
@pytest.mark.parametrize("writers", ["threads", "processes"])
def test_readers_never_make_writers_fail_nor_fail_themselves(
    engine: Engine, writers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyring = MasterKeyring(MasterKey.generate("test"))
    runtime = Runtime(engine, _library(), keyring, ManualClock(START))
    _seed(engine, runtime)
    done = threading.Event()
    reads = [Reads() for _ in range(3)]
    readers = [threading.Thread(target=_read_until, args=(runtime, done, r)) for r in reads]
    for reader in readers:
        reader.start()
    try:
        if writers == "threads":
            barrier = threading.Barrier(WRITERS)
            with ThreadPoolExecutor(WRITERS) as pool:
                futures = [
                    pool.submit(_fire, runtime, w, lambda: barrier.wait(WAIT))
                    for w in range(WRITERS)
                ]
                results = [f.result(timeout=WAIT) for f in futures]
        else:
            top = Path(__file__).resolve().parents[__name__.count(".")]
            monkeypatch.syspath_prepend(str(top))
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload([__name__])
            url = engine.url.render_as_string(hide_password=False)
            with ProcessPoolExecutor(
                WRITERS, mp_context=ctx, initializer=_init_process, initargs=(ctx.Barrier(WRITERS),)
            ) as pool:
                futures = [
                    pool.submit(_fire_in_process, url, keyring.to_setting(), w)
                    for w in range(WRITERS)
                ]
                results = [f.result(timeout=WAIT) for f in futures]
    finally:
        done.set()
        for reader in readers:
            reader.join(WAIT)

    assert [r["failures"] for r in results] == [[]] * WRITERS
    assert sum(r["fired"] for r in results) == WRITERS * FIRES
    assert [r.errors for r in reads] == [[]] * len(reads)
    assert all(r.rounds >= 1 and r.pages >= 1 for r in reads)
    with engine.connect() as conn:
        transitions = conn.scalar(
            select(func.count()).select_from(_T).where(_T.c.kind == "transition")
        )
    assert transitions == WRITERS * FIRES
    checks = runtime.verify_timeline()
    assert [c.case_code for c in checks if not c.ok] == []
    assert len(checks) == 1 + 2 * WRITERS
