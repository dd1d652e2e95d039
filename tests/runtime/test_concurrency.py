"""Concurrency: several OS processes (and threads) on one database, as when several API
processes and sweep workers run against one PostgreSQL server (ARCHITECTURE.md, "Beyond one
machine"), and as on a laptop, where several processes share one SQLite file.

Each child process is started with the ``forkserver`` method and builds its own engine and
runtime from the database URL; no engine crosses a process boundary. The fork server imports
this module (and with it SQLAlchemy and the runtime) once, and every child is forked from it
instead of importing them anew as ``spawn`` would; it holds no engine, connection or thread
of the test's. Children find this module by name, so the ``children`` fixture puts its top
folder on ``sys.path`` before the fork server starts.

What must hold: concurrent ``fire`` calls on one referral never lose an update (a loser gets
:class:`ConcurrentChange`), concurrent sweeps claim disjoint timers and every due timer is
escalated exactly once, a crashed sweep's claims come back when their lease ends, and a timer
whose state was left does nothing. All data is synthetic.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select

from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKeyring
from sop_engine.errors import ConcurrentChange
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.persistence.db import is_sqlite, make_engine
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from tests.agencies import agency_directory
from tests.handoffs import answer_payload

ROOT = Path(__file__).resolve().parents[2]
CORRIDOR = "example.corridor"
WAIT = 60.0
"""Seconds any barrier, pipe or event waits before the test fails instead of hanging."""
BLOCKED = 2.0
"""Seconds after which a thread that has not finished is taken to be blocked."""
CRASHED = 3
"""The exit code of a child that "crashes" on purpose."""

_T = tables.timeline_entries
_TM = tables.timers
_O = tables.outbox
_R = tables.referrals
_D = tables.disclosures


# -- in the child processes -------------------------------------------------------------------


@dataclass(frozen=True)
class Db:
    """What a child needs to build its own runtime: the database URL, the keys and the time
    its manual clock shows."""

    url: str
    keyring: MasterKeyring
    now: datetime


@functools.cache
def _library() -> SopLibrary:
    """The example SOPs only: every child compiles its own, and the corridor is all they fire."""
    return SopLibrary.load([ROOT / "sop_definitions" / "examples"])


_worker: dict[str, Any] = {}
"""Per process: the barrier the pool's initializer received."""


def _init_worker(barrier: Any) -> None:
    _worker["barrier"] = barrier


def _start_together() -> None:
    _worker["barrier"].wait(timeout=WAIT)


def _open(db: Db) -> Runtime:
    return Runtime(
        make_engine(db.url),
        _library(),
        db.keyring,
        ManualClock(db.now),
        directory=agency_directory(),
    )


def _fire_once(db: Db, code: str, event_name: str, actor: Actor) -> dict[str, Any]:
    """Read the referral's version, wait for the other process, fire at that version."""
    rt = _open(db)
    try:
        read = rt.read_referral(code).version
        _start_together()
        try:
            fired = rt.fire(code, event_name, actor, expected_version=read)
        except ConcurrentChange as exc:
            return {"pid": os.getpid(), "read": read, "won": False, "error": str(exc)}
        return {"pid": os.getpid(), "read": read, "won": True, "version": fired.version}
    finally:
        rt.db.dispose()


def _fire_repeatedly(
    db: Db, code: str, event_name: str, actor: Actor, times: int
) -> dict[str, Any]:
    """Fire ``times`` times without an expected version; count every conflict."""
    rt = _open(db)
    versions: list[int] = []
    conflicts = 0
    try:
        _start_together()
        for _ in range(times):
            try:
                versions.append(rt.fire(code, event_name, actor).version)
            except ConcurrentChange:
                conflicts += 1
    finally:
        rt.db.dispose()
    return {"pid": os.getpid(), "versions": versions, "conflicts": conflicts}


def _sweep_until_empty(rt: Runtime, now: datetime, worker: str, limit: int) -> dict[str, Any]:
    """Claim and fire batches until no due timer is left to claim."""
    claimed: list[int] = []
    outcomes: list[tuple[int, str]] = []
    while claims := rt.claim_due_timers(now, limit=limit, worker=worker):
        claimed += [c.timer_id for c in claims]
        outcomes += [(c.timer_id, rt.fire_escalation(c).outcome) for c in claims]
    return {"pid": os.getpid(), "worker": worker, "claimed": claimed, "outcomes": outcomes}


def _sweep_in_process(db: Db, worker: str, limit: int) -> dict[str, Any]:
    rt = _open(db)
    try:
        _start_together()
        return _sweep_until_empty(rt, db.now, worker, limit)
    finally:
        rt.db.dispose()


def _claim_fire_some_then_crash(
    db: Db, limit: int, lease: timedelta, fire: int, pipe: Connection
) -> None:
    """Claim a batch, fire its first ``fire`` timers, report, and die without cleaning up."""
    rt = _open(db)
    claims = rt.claim_due_timers(db.now, limit=limit, worker="crasher", lease=lease)
    outcomes = [rt.fire_escalation(c).outcome for c in claims[:fire]]
    pipe.send((claims, outcomes))
    pipe.close()
    os._exit(CRASHED)  # no rollback, no engine disposal, no lease release


def _fire_in_process(db: Db, code: str, event_name: str, actor: Actor, payload: Any) -> str:
    rt = _open(db)
    try:
        return rt.fire(code, event_name, actor, payload).state
    finally:
        rt.db.dispose()


# -- helpers of the tests ---------------------------------------------------------------------


@dataclass(frozen=True)
class Children:
    """Starts child processes on the database of ``runtime`` (see the module docstring)."""

    ctx: ForkServerContext
    runtime: Runtime
    keyring: MasterKeyring

    def db(self, now: datetime | None = None) -> Db:
        url = self.runtime.db.url.render_as_string(hide_password=False)
        return Db(url, self.keyring, now or self.runtime.clock.now())

    def pool(self, workers: int) -> ProcessPoolExecutor:
        """``workers`` processes; a task calling :func:`_start_together` waits for the others."""
        barrier = self.ctx.Barrier(workers)
        return ProcessPoolExecutor(
            workers, mp_context=self.ctx, initializer=_init_worker, initargs=(barrier,)
        )


@pytest.fixture
def children(runtime: Runtime, keyring: MasterKeyring, monkeypatch: pytest.MonkeyPatch) -> Children:
    """Children inherit ``sys.path``: put this module's top folder on it (pytest's importlib
    mode does not) so that they can import this module by name."""
    top = Path(__file__).resolve().parents[__name__.count(".")]
    monkeypatch.syspath_prepend(str(top))
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return Children(ctx, runtime, keyring)


def _results(futures: list[Future[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [f.result(timeout=WAIT) for f in futures]


def _count(runtime: Runtime, t: Any, *where: Any) -> int:
    with runtime.db.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(t).where(*where)) or 0)


def _new_referral(runtime: Runtime, actor: Actor) -> tuple[str, str]:
    view = runtime.create_referral(
        sop_key=CORRIDOR,
        sop_version=None,
        actor=actor,
        origin_country="TH",
        destination_country="LA",
        incident_at=runtime.clock.now() - timedelta(hours=30),
        facts={"survivor_age": 24},
    )
    return view.case_code, view.id


def _chain_ok(runtime: Runtime, code: str | None = None) -> bool:
    checks = runtime.verify_timeline(code)
    return bool(checks) and all(c.ok for c in checks)


def _escalations(runtime: Runtime) -> Counter[tuple[str, str, int]]:
    """Escalation entries on all timelines, per (referral id, deadline, level)."""
    with runtime.db.connect() as conn:
        rows = conn.execute(select(_T.c.referral_id, _T.c.details).where(_T.c.kind == "escalation"))
        return Counter((r.referral_id, r.details["deadline"], r.details["level"]) for r in rows)


def _notified_per_level(runtime: Runtime) -> dict[int, int]:
    """How many roles each level of the corridor's intake deadline notifies."""
    deadline = runtime.library.get(CORRIDOR).spec.states["intake"].deadlines["assign"]
    return {lv.level: len(lv.notify) for lv in deadline.escalation}


# -- 1. two processes, one referral, one version ----------------------------------------------


def test_two_processes_firing_at_the_same_version_one_wins_the_other_conflicts(
    runtime: Runtime,
    children: Children,
    referral_in_action_plan: str,
    caseworker: Actor,
    supervisor: Actor,
) -> None:
    code = referral_in_action_plan
    before = runtime.read_referral(code)
    entries_before = _count(runtime, _T, _T.c.referral_id == before.id)
    db = children.db()

    with children.pool(2) as pool:
        results = _results(
            [
                pool.submit(_fire_once, db, code, "close", caseworker),
                pool.submit(_fire_once, db, code, "close", supervisor),
            ]
        )

    assert len({r["pid"] for r in results} - {os.getpid()}) == 2
    assert [r["read"] for r in results] == [before.version, before.version]
    winners = [r for r in results if r["won"]]
    assert len(winners) == 1, results
    loser = next(r for r in results if not r["won"])
    assert code in loser["error"]
    assert winners[0]["version"] == before.version + 1
    after = runtime.read_referral(code)
    assert after.version == before.version + 1
    assert after.state == "closed"
    assert _count(runtime, _T, _T.c.referral_id == before.id) == entries_before + 1
    assert _chain_ok(runtime, code)


# -- 2. no lost update without an expected version --------------------------------------------

FEEDBACK_PROCESSES = 4
FEEDBACK_EACH = 12


def _in_follow_up(runtime: Runtime, code: str, caseworker: Actor, focal_point: Actor) -> None:
    runtime.grant_consent(code, scope="cross_border_return", actor=caseworker, given_by="survivor")
    runtime.fire(
        code, "refer_for_return", caseworker, {"recipient_agency_id": focal_point.agency_id}
    )
    for step in ("acknowledge", "accept", "deliver"):
        runtime.fire(code, f"return_referral.{step}", focal_point, answer_payload(step))
    assert runtime.read_referral(code).state == "follow_up"


def test_concurrent_self_loops_without_expected_version_lose_no_update(
    runtime: Runtime,
    children: Children,
    referral_in_action_plan: str,
    caseworker: Actor,
    focal_point: Actor,
) -> None:
    code = referral_in_action_plan
    _in_follow_up(runtime, code, caseworker, focal_point)
    before = runtime.read_referral(code)
    entries_before = _count(runtime, _T, _T.c.referral_id == before.id)
    outbox_before = _count(runtime, _O, _O.c.referral_id == before.id)
    disclosures_before = _count(runtime, _D, _D.c.referral_id == before.id)
    db = children.db()

    with children.pool(FEEDBACK_PROCESSES) as pool:
        results = _results(
            [
                pool.submit(_fire_repeatedly, db, code, "send_feedback", caseworker, FEEDBACK_EACH)
                for _ in range(FEEDBACK_PROCESSES)
            ]
        )

    assert len({r["pid"] for r in results}) == FEEDBACK_PROCESSES
    fired = sorted(v for r in results for v in r["versions"])
    conflicts = sum(r["conflicts"] for r in results)
    # Every attempt is accounted for: it fired or it was refused as a conflict.
    assert len(fired) + conflicts == FEEDBACK_PROCESSES * FEEDBACK_EACH
    # No lost update: each success got its own version, one after the other.
    assert fired == list(range(before.version + 1, before.version + 1 + len(fired)))
    after = runtime.read_referral(code)
    assert after.state == "follow_up"
    assert after.version == before.version + len(fired)
    entries = _count(runtime, _T, _T.c.referral_id == before.id)
    assert entries == entries_before + len(fired)
    with runtime.db.connect() as conn:
        seq = conn.scalar(select(_R.c.timeline_seq).where(_R.c.id == before.id))
    assert seq == entries
    # Each success disclosed once and notified the receiving focal point once.
    assert _count(runtime, _D, _D.c.referral_id == before.id) == disclosures_before + len(fired)
    assert _count(runtime, _O, _O.c.referral_id == before.id) == outbox_before + len(fired)
    assert _chain_ok(runtime, code)
    print(f"\n{len(fired)} fired, {conflicts} conflicts")
    if is_sqlite(runtime.db):
        # SQLite: every transaction starts with BEGIN IMMEDIATE, so it holds the one write lock
        # from its first read to its commit; the version read is always the latest one and
        # the conditional update never misses. Writers queue (busy timeout), none conflicts.
        assert conflicts == 0
    else:
        # PostgreSQL (READ COMMITTED): two transactions read the same version, the second
        # conditional update matches no row once the first commits, and the loser gets
        # ConcurrentChange; it was counted above, never silently dropped.
        assert len(fired) >= 1


# -- 3. concurrent sweeps ---------------------------------------------------------------------

SWEEP_REFERRALS = 150  # two due levels each: 300 due timers, a third level not due
SWEEP_WORKERS = 3
SWEEP_LIMIT = 10
"""Small batches, so that three sweeps take turns about thirty times over 300 timers: as many
chances to claim one timer twice as 2,000 timers in batches of 25 gave, in a fifth of the
time."""


@pytest.mark.parametrize("mode", ["processes", "threads"])
def test_concurrent_sweeps_escalate_every_due_timer_exactly_once(
    runtime: Runtime,
    clock: ManualClock,
    children: Children,
    caseworker: Actor,
    mode: str,
) -> None:
    ids = {_new_referral(runtime, caseworker)[1] for _ in range(SWEEP_REFERRALS)}
    # The corridor's intake deadline is 1 h with levels at +0 h, +1 h and +4 h: after 2.5 h
    # two levels of each referral are due and the third is not.
    clock.advance(timedelta(hours=2, minutes=30))
    with runtime.db.connect() as conn:
        timers = conn.execute(select(_TM.c.id, _TM.c.referral_id, _TM.c.level)).all()
    due = {t.id for t in timers if t.level <= 2}
    assert len(due) == 2 * SWEEP_REFERRALS
    assert {t.referral_id for t in timers} == ids
    lease = timedelta(minutes=5)  # claim_due_timers' default

    rounds: list[list[dict[str, Any]]] = []
    now = clock.now()
    with (
        children.pool(SWEEP_WORKERS)
        if mode == "processes"
        else ThreadPoolExecutor(SWEEP_WORKERS) as pool
    ):
        barrier = threading.Barrier(SWEEP_WORKERS)

        def in_thread(at: datetime, worker: str) -> dict[str, Any]:
            barrier.wait(timeout=WAIT)
            return _sweep_until_empty(runtime, at, worker, SWEEP_LIMIT)

        # A conflict (two levels of one referral fired at once) leaves its timer leased; a
        # later round, after the lease, retries it. Stop when a round claims nothing.
        for attempt in range(5):
            clock.set(now)
            db = children.db(now)
            names = [f"sweep-{attempt}-{i}" for i in range(SWEEP_WORKERS)]
            futures = [
                pool.submit(_sweep_in_process, db, name, SWEEP_LIMIT)
                if mode == "processes"
                else pool.submit(in_thread, now, name)
                for name in names
            ]
            results = _results(futures)
            rounds.append(results)
            if not any(r["claimed"] for r in results):
                break
            now += lease + timedelta(seconds=1)

    assert not any(r["claimed"] for r in rounds[-1]), "the sweeps never ran dry"
    if mode == "processes":
        assert len({r["pid"] for r in rounds[0]}) == SWEEP_WORKERS
        assert os.getpid() not in {r["pid"] for r in rounds[0]}
    # Concurrent sweeps claim disjoint timers: no timer is claimed twice in one round.
    for results in rounds:
        claimed = [i for r in results for i in r["claimed"]]
        assert len(claimed) == len(set(claimed))
    outcomes = [o for results in rounds for r in results for o in r["outcomes"]]
    kinds = Counter(kind for _, kind in outcomes)
    assert set(kinds) <= {"escalated", "conflict"}, kinds
    escalated = Counter(i for i, kind in outcomes if kind == "escalated")
    assert set(escalated) == due
    assert set(escalated.values()) == {1}
    # A timer was claimed again only after its first claim lost a conflict.
    assert len(outcomes) == len(due) + kinds["conflict"]

    with runtime.db.connect() as conn:
        rows = conn.execute(select(_TM)).all()
    assert all((r.fired_at is not None) == (r.id in due) for r in rows)
    assert all(r.claimed_by is None for r in rows if r.id not in due)
    per_timer = _escalations(runtime)
    assert per_timer == Counter(
        {(r.referral_id, r.deadline, r.level): 1 for r in rows if r.id in due}
    )
    notified = _notified_per_level(runtime)
    assert _count(runtime, _O) == sum(notified[r.level] for r in rows if r.id in due)
    with runtime.db.connect() as conn:
        versions = set(conn.scalars(select(_R.c.version)))
    assert versions == {3}  # created at 1, bumped once by each of the two escalations
    assert _chain_ok(runtime)
    per_worker = {r["worker"]: len(r["claimed"]) for r in rounds[0]}
    print(f"\n{mode}: {len(rounds)} rounds, {dict(kinds)}, first round claims {per_worker}")


# -- 4. a sweep killed mid-batch --------------------------------------------------------------

CRASH_REFERRALS = 12
CRASH_BATCH = 8
CRASH_FIRED = 3


def test_a_sweep_killed_mid_batch_leaves_its_rest_to_the_next_sweep_after_the_lease(
    runtime: Runtime,
    clock: ManualClock,
    children: Children,
    caseworker: Actor,
) -> None:
    for _ in range(CRASH_REFERRALS):
        _new_referral(runtime, caseworker)
    clock.advance(timedelta(hours=1, minutes=30))  # level 1 of each intake deadline is due
    start = clock.now()
    lease = timedelta(seconds=60)

    receive, send = children.ctx.Pipe(duplex=False)
    crasher = children.ctx.Process(
        target=_claim_fire_some_then_crash,
        args=(children.db(), CRASH_BATCH, lease, CRASH_FIRED, send),
    )
    crasher.start()
    send.close()
    assert receive.poll(WAIT), "the crashing sweep sent nothing"
    batch, fired = receive.recv()
    crasher.join(WAIT)
    assert crasher.exitcode == CRASHED
    batch_ids = {c.timer_id for c in batch}
    assert len(batch) == CRASH_BATCH
    assert fired == ["escalated"] * CRASH_FIRED
    done = {c.timer_id for c in batch[:CRASH_FIRED]}
    rest = batch_ids - done
    with runtime.db.connect() as conn:
        due = set(conn.scalars(select(_TM.c.id).where(_TM.c.level == 1)))
    assert len(due) == CRASH_REFERRALS

    # Within the lease, another sweep gets only the timers outside the crashed batch.
    clock.set(start + lease / 2)
    others = runtime.claim_due_timers(clock.now(), worker="second")
    assert {c.timer_id for c in others} == due - batch_ids
    assert [runtime.fire_escalation(c).outcome for c in others] == ["escalated"] * len(others)
    assert runtime.claim_due_timers(clock.now(), worker="second") == []

    # After the lease, a third sweep gets exactly the unfired rest of the batch.
    clock.set(start + lease + timedelta(seconds=1))
    retry = runtime.claim_due_timers(clock.now(), worker="third")
    assert {c.timer_id for c in retry} == rest

    # The crashed sweep's claims are worthless now: fired ones say so, the rest were lost.
    stale = {c.timer_id: runtime.fire_escalation(c).outcome for c in batch}
    assert stale == {i: "already_fired" if i in done else "lost_claim" for i in batch_ids}
    assert [runtime.fire_escalation(c).outcome for c in retry] == ["escalated"] * len(rest)
    assert {runtime.fire_escalation(c).outcome for c in (*batch, *retry)} == {"already_fired"}

    assert set(_escalations(runtime).values()) == {1}
    assert sum(_escalations(runtime).values()) == CRASH_REFERRALS
    assert _count(runtime, _O) == CRASH_REFERRALS * _notified_per_level(runtime)[1]
    assert _count(runtime, _TM, _TM.c.fired_at.is_not(None)) == CRASH_REFERRALS
    assert _chain_ok(runtime)


# -- 5. a transition racing a due timer -------------------------------------------------------


def test_a_transition_that_leaves_the_state_makes_a_claimed_timer_stale(
    runtime: Runtime,
    clock: ManualClock,
    children: Children,
    caseworker: Actor,
) -> None:
    code, referral_id = _new_referral(runtime, caseworker)
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    clock.advance(timedelta(hours=1, minutes=30))
    claims = runtime.claim_due_timers(clock.now(), worker="sweep")
    assert [(c.referral_id, c.state, c.level) for c in claims] == [(referral_id, "intake", 1)]
    entries = _count(runtime, _T, _T.c.referral_id == referral_id)

    # Another API process moves the referral on while the sweep holds the claim.
    payload = {"facts": {"safe_contact_method": "text_message"}}
    with ProcessPoolExecutor(1, mp_context=children.ctx) as pool:
        state = pool.submit(
            _fire_in_process, children.db(), code, "record_consent", caseworker, payload
        ).result(timeout=WAIT)
    assert state == "assessment"
    assert _count(runtime, _TM, _TM.c.referral_id == referral_id, _TM.c.state == "intake") == 0

    outcome = runtime.fire_escalation(claims[0])
    assert outcome.outcome == "stale"
    assert _count(runtime, _T, _T.c.referral_id == referral_id) == entries + 1  # the transition
    assert _count(runtime, _T, _T.c.kind == "escalation") == 0
    assert _count(runtime, _O, _O.c.referral_id == referral_id) == 0
    assert _chain_ok(runtime, code)


def test_a_claimed_timer_whose_state_was_left_is_stale_on_sqlite_too(
    sqlite_runtime: Runtime, clock: ManualClock, caseworker: Actor
) -> None:
    runtime = sqlite_runtime
    code, _ = _new_referral(runtime, caseworker)
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    clock.advance(timedelta(hours=1, minutes=30))
    (claim,) = runtime.claim_due_timers(worker="sweep")
    runtime.fire(
        code, "record_consent", caseworker, {"facts": {"safe_contact_method": "in_person"}}
    )
    with runtime.db.connect() as conn:
        now_named = conn.execute(select(_TM).where(_TM.c.id == claim.timer_id)).first()
    outcome = runtime.fire_escalation(claim)
    assert _count(runtime, _T, _T.c.kind == "escalation") == 0
    assert _count(runtime, _TM, _TM.c.fired_at.is_not(None)) == 0
    reused = (
        f"; its id now names ({now_named.state}, {now_named.deadline}, level {now_named.level})"
        if now_named is not None
        else ""
    )
    assert outcome.outcome == "stale", (
        f"timer {claim.timer_id} ({claim.state}, {claim.deadline}, level {claim.level}) was "
        f"deleted by the transition{reused}; fire_escalation said {outcome.outcome!r}"
    )


def test_a_transition_racing_an_escalation_goes_through_and_nothing_is_done_twice(
    runtime: Runtime, clock: ManualClock, caseworker: Actor
) -> None:
    """The race the other way round: the escalation has read the timer and the referral
    when a caseworker's transition leaves the state. The transition must go through, and
    the two must serialize: either the escalation went first (it holds SQLite's write lock,
    or PostgreSQL row locks) and is recorded before the transition, or the transition went
    first and the escalation wrote nothing ("conflict": its conditional version update or
    its lock failed). Never both, never an error, never a timer left to fire later."""
    code, referral_id = _new_referral(runtime, caseworker)
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    clock.advance(timedelta(hours=1, minutes=30))
    (claim,) = runtime.claim_due_timers(clock.now(), worker="sweep")
    payload = {"facts": {"safe_contact_method": "in_person"}}

    with _Pause(runtime.db, "UPDATE referrals") as sweeper:
        escalation = _Background(lambda: runtime.fire_escalation(claim).outcome)
        assert sweeper.reached()  # the escalation has read the timer and the referral
        transition = _Background(
            lambda: runtime.fire(code, "record_consent", caseworker, payload).state
        )
        # Let the transition commit, or queue for a lock the escalation holds.
        transition.wait(BLOCKED)
        sweeper.release()
        escalation.wait(WAIT)
        transition.wait(WAIT)

    assert transition.result() == "assessment"
    outcome = escalation.result()
    with runtime.db.connect() as conn:
        kinds = list(
            conn.scalars(
                select(_T.c.kind).where(_T.c.referral_id == referral_id).order_by(_T.c.seq)
            )
        )
    outbox = _count(runtime, _O, _O.c.referral_id == referral_id)
    if outcome == "escalated":
        assert kinds[-2:] == ["escalation", "transition"], kinds
        assert outbox == _notified_per_level(runtime)[1]
    else:
        assert outcome == "conflict"
        assert "escalation" not in kinds
        assert outbox == 0
    if is_sqlite(runtime.db):
        assert outcome == "escalated"  # BEGIN IMMEDIATE: the first transaction goes first
    # The timer went with the state; no later sweep finds anything to do.
    later = clock.now() + timedelta(minutes=10)
    assert runtime.claim_due_timers(later, worker="later") == []
    assert _chain_ok(runtime, code)
    print(f"\nescalation: {outcome}")


class _Background:
    """Runs ``work`` in a thread at once; keeps its result or its exception."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self._work = work
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._work()
        except BaseException as exc:
            self._error = exc

    def wait(self, seconds: float) -> bool:
        """Whether it finished within ``seconds``."""
        self._thread.join(seconds)
        return not self._thread.is_alive()

    def result(self) -> Any:
        assert not self._thread.is_alive(), "still running"
        if self._error is not None:
            raise self._error
        return self._value


# -- statement hooks for deterministic interleavings ------------------------------------------


class _Pause:
    """Stops the first statement of ``engine`` starting with ``prefix`` (before or after it
    runs) until released; ``reached`` waits for a thread to be stopped there."""

    def __init__(self, engine: Engine, prefix: str, *, after: bool = False) -> None:
        self.engine, self.prefix = engine, prefix
        self.hook = "after_cursor_execute" if after else "before_cursor_execute"
        self.armed = True
        self._reached = threading.Event()
        self._release = threading.Event()

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if self.armed and statement.lstrip().startswith(self.prefix):
            self.armed = False
            self._reached.set()
            if not self._release.wait(WAIT):
                raise TimeoutError(f"never released at {self.prefix!r}")

    def __enter__(self) -> _Pause:
        event.listen(self.engine, self.hook, self._on_execute)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._release.set()
        event.remove(self.engine, self.hook, self._on_execute)

    def reached(self, seconds: float = WAIT) -> bool:
        """Whether a thread stopped here within ``seconds``."""
        return self._reached.wait(seconds)

    def disarm(self) -> None:
        self.armed = False

    def release(self) -> None:
        self._release.set()


# -- a sweep that outlived its lease ----------------------------------------------------------


@pytest.mark.postgres
def test_a_sweep_that_outlived_its_lease_and_its_successor_escalate_only_once(
    postgres_engine: Engine,
    library: SopLibrary,
    keyring: MasterKeyring,
    clock: ManualClock,
    caseworker: Actor,
) -> None:
    slow = Runtime(postgres_engine, library, keyring, clock, directory=agency_directory())
    other_engine = make_engine(postgres_engine.url.render_as_string(hide_password=False))
    successor = Runtime(other_engine, library, keyring, clock, directory=agency_directory())
    try:
        _new_referral(slow, caseworker)
        clock.advance(timedelta(hours=1, minutes=30))
        lease = timedelta(seconds=60)
        (claim,) = slow.claim_due_timers(clock.now(), worker="slow", lease=lease)
        with (
            _Pause(postgres_engine, "UPDATE referrals") as slow_writes,
            _Pause(other_engine, "SELECT timers.id", after=True) as successor_reads,
        ):
            # The slow sweep has read the timer and the referral, then stalls past its lease.
            first = _Background(lambda: slow.fire_escalation(claim).outcome)
            assert slow_writes.reached()
            successor_reads.disarm()  # not the claim's own SELECTs
            clock.advance(lease + timedelta(seconds=1))
            again = successor.claim_due_timers(clock.now(), worker="successor")
            # (An engine that locked the timer while firing it would hand out nothing here.)
            assert [c.timer_id for c in again] in ([], [claim.timer_id])
            second = None
            if again:
                successor_reads.armed = True
                second = _Background(lambda: successor.fire_escalation(again[0]).outcome)
                # It reads the timer, unfired, and goes on (or waits for a lock of the slow
                # sweep, which an engine that locked the timer would make it do).
                successor_reads.reached(BLOCKED)
            slow_writes.release()
            first.wait(WAIT)
            successor_reads.release()
            if second is not None:
                second.wait(WAIT)
        outcomes = {"slow": first.result(), "successor": second.result() if second else None}
        escalations = sum(_escalations(slow).values())
        assert escalations == 1, f"{escalations} escalation entries for one timer: {outcomes}"
        assert list(outcomes.values()).count("escalated") == 1, outcomes
        assert _count(slow, _O) == _notified_per_level(slow)[1]
    finally:
        other_engine.dispose()
