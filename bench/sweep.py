"""Due timers claimed per second by the escalation sweep, among a million timer rows.

:func:`measure_sweep` fills the ``timers`` table of a freshly migrated database the way a
busy deployment's looks (:class:`SweepPlan`): a modest number of open referrals (seeded as
``create_referral`` leaves them), each holding about a hundred timer rows, of which most are
due in the coming weeks, some fired long ago and left as history, and a backlog of
``due`` timers that passed during the last two hours. (They are bulk-loaded: Core
``executemany`` in chunks on SQLite, ``COPY`` then ``VACUUM ANALYZE`` on PostgreSQL, as
autovacuum would leave a table that size; the migration's ``ix_timers_due`` on ``(fired_at,
due_at)`` is the index the claim uses.) It then times claiming the whole backlog, ``batch``
timers at a time:

- the engine: :meth:`Runtime.claim_due_timers` (the claim path of every sweep: select the due
  ids, lease them, read the leased rows back as
  :class:`~sop_engine.runtime.deadlines.TimerClaim`);
- the baseline: the least a hand-written claim must do, on the same engine and the same
  rows: in one transaction per batch, the same ``SELECT`` of due ids ordered by ``due_at``
  (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) with the same ``LIMIT``, and the same ``UPDATE``
  setting ``lease_until`` and ``claimed_by``, with SQLAlchemy Core statements built once.

Both sides claim the same backlog: the leases are cleared after every pass (and, on
PostgreSQL, the table vacuumed, as autovacuum would, so that dead row versions do not pile up
from pass to pass and slow whichever side comes later), the passes alternate (which side
goes first alternates too), each side has one untimed pass first, and each figure is the
median of the timed passes. Every pass must claim every due timer exactly once. Claimed
timers are not fired in these passes, so they stay in ``ix_timers_due``'s range (unfired,
due) until the pass ends, and each batch steps over the ones leased before it: that cost
falls on both sides alike.

Last, for information only, escalations per second through :meth:`Runtime.sweep` (claim a
batch, then :meth:`Runtime.fire_escalation` each timer: outbox rows for the level's roles and
a hash-chained timeline entry, one transaction per timer), claim included, over the first
``escalations`` timers of the backlog; every one must come out ``escalated`` and every
timeline must still verify.
"""

from __future__ import annotations

import itertools
import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BindParameter, Engine, and_, bindparam, func, or_, select, update

from bench.common import SOP_KEY, START, load_library, make_runtime, seed_referrals
from sop_engine.clock import ManualClock
from sop_engine.persistence import tables
from sop_engine.persistence.db import is_postgres
from sop_engine.persistence.migrate import upgrade
from sop_engine.runtime.engine import Runtime
from sop_engine.settings import Settings

__all__ = ["Sweep", "SweepPlan", "measure_sweep"]

_TM = tables.timers
BATCH = int(Settings.model_fields["batch_size"].default)
"""Timers claimed per batch: the sweep's own default (``SOP_ENGINE_BATCH_SIZE``)."""
NOW = START + timedelta(hours=6)
"""When the sweep runs: the seeded referrals' own timers are due a day after ``START``."""
WORKER = "bench-sweep:1"
OLD_WORKER = "sweep-host:4242"
_COLUMNS = (
    "referral_id",
    "state",
    "deadline",
    "level",
    "due_at",
    "deadline_due_at",
    "created_at",
    "lease_until",
    "claimed_by",
    "fired_at",
)


@dataclass(frozen=True)
class SweepPlan:
    referrals: int = 10_000
    timers: int = 1_000_000
    """Rows in ``timers`` in all, the seeded referrals' own two each included."""
    due: int = 10_000
    """Unfired timers due at ``NOW``: the backlog every pass claims."""
    fired: int = 100_000
    """Timers fired long ago (history); the rest are due in the coming 30 days."""
    batch: int = BATCH
    repetitions: int = 7
    """Timed passes per side, after one untimed."""
    escalations: int = 1_000
    """Fired through ``Runtime.sweep`` for the informational figure."""
    seed: int = 20_260_302


@dataclass(frozen=True)
class Sweep:
    engine: float
    baseline: float
    engine_runs: list[float]
    baseline_runs: list[float]
    escalations: float
    setup: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.engine / self.baseline


def measure_sweep(engine: Engine, plan: SweepPlan) -> Sweep:
    """Migrate ``engine``'s empty database, fill it and time both sides (module docstring)."""
    began = time.perf_counter()
    upgrade(engine)
    library = load_library()
    rt = make_runtime(engine, library)
    assert isinstance(rt.clock, ManualClock)
    rt.clock.set(NOW)
    seed_referrals(engine, library.get(SOP_KEY), plan.referrals)
    seeded = time.perf_counter()
    _fill_timers(engine, plan)
    filled = time.perf_counter()
    due_ids = _due_ids(engine)
    if len(due_ids) != plan.due:
        raise RuntimeError(f"{len(due_ids)} due timers seeded, {plan.due} planned")

    sides: dict[str, Callable[[], list[int]]] = {
        "engine": lambda: _engine_pass(rt, plan.batch),
        "baseline": _baseline_pass(engine, plan.batch),
    }
    runs: dict[str, list[float]] = {"engine": [], "baseline": []}
    for repetition in range(plan.repetitions + 1):
        order = ["engine", "baseline"] if repetition % 2 == 0 else ["baseline", "engine"]
        for side in order:
            _clear_leases(engine)
            started = time.perf_counter()
            claimed = sides[side]()
            elapsed = time.perf_counter() - started
            if len(claimed) != len(due_ids) or set(claimed) != due_ids:
                raise RuntimeError(
                    f"{side} claimed {len(claimed)} timers ({len(set(claimed))} distinct), "
                    f"not the {len(due_ids)} due"
                )
            if repetition > 0:  # the first pass of each side warms up
                runs[side].append(len(claimed) / elapsed)
    measured = time.perf_counter()

    _clear_leases(engine)
    escalations = _escalation_rate(rt, plan)
    return Sweep(
        statistics.median(runs["engine"]),
        statistics.median(runs["baseline"]),
        runs["engine"],
        runs["baseline"],
        escalations,
        {
            "timers": plan.timers,
            "due": plan.due,
            "fired": plan.fired,
            "referrals": plan.referrals,
            "batch": plan.batch,
            "escalations": plan.escalations,
            "seed_referrals_s": round(seeded - began, 1),
            "fill_timers_s": round(filled - seeded, 1),
            "claim_passes_s": round(measured - filled, 1),
        },
    )


def _timer_rows(plan: SweepPlan) -> Iterator[tuple[Any, ...]]:
    """The timers beyond the seeded referrals' own, as tuples in :data:`_COLUMNS` order.

    Spread round-robin over the referrals; which are due, fired or pending is drawn at
    random, and so are their times: due within the last two hours, fired 1 h to 90 days ago
    (each a minute after it was due, by a sweep long gone), pending over the next 30 days.
    """
    rng = random.Random(plan.seed)
    extra = plan.timers - 2 * plan.referrals
    picked = rng.sample(range(extra), plan.due + plan.fired)
    due = set(picked[: plan.due])
    fired = set(picked[plan.due :])
    referral_ids = [str(uuid.UUID(int=i + 1)) for i in range(plan.referrals)]
    day, four_hours = timedelta(days=1), timedelta(hours=4)
    for k in range(extra):
        level = 1 + (k & 1)
        state = "ping"
        lease_until = claimed_by = fired_at = None
        if k in due:
            due_at = NOW - timedelta(seconds=rng.uniform(0, 7_200))
        elif k in fired:
            state = "pong" if k % 3 else "ping"
            due_at = NOW - timedelta(seconds=rng.uniform(3_600, 90 * 86_400))
            fired_at = due_at + timedelta(seconds=rng.uniform(1, 60))
            lease_until, claimed_by = fired_at + timedelta(minutes=5), OLD_WORKER
        else:
            due_at = NOW + timedelta(seconds=rng.uniform(60, 30 * 86_400))
        deadline_due_at = due_at - four_hours if level == 2 else due_at
        yield (
            referral_ids[k % plan.referrals],
            state,
            "respond",
            level,
            due_at,
            deadline_due_at,
            deadline_due_at - day,
            lease_until,
            claimed_by,
            fired_at,
        )


def _fill_timers(engine: Engine, plan: SweepPlan, chunk: int = 50_000) -> None:
    rows = _timer_rows(plan)
    if is_postgres(engine):
        with engine.begin() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None, "a pooled connection always has its driver's connection"
            cursor = driver.cursor()
            columns = ", ".join(_COLUMNS)
            with cursor.copy(f"COPY timers ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE timers")
            conn.exec_driver_sql("ANALYZE referrals")
        return
    insert = _TM.insert()
    while True:
        batch = [dict(zip(_COLUMNS, row, strict=True)) for row in itertools.islice(rows, chunk)]
        if not batch:
            break
        with engine.begin() as conn:
            conn.execute(insert, batch)


def _due_ids(engine: Engine) -> set[int]:
    with engine.begin() as conn:
        return set(
            conn.scalars(select(_TM.c.id).where(_TM.c.fired_at.is_(None), _TM.c.due_at <= NOW))
        )


def _clear_leases(engine: Engine) -> None:
    """Give the backlog back; on PostgreSQL also vacuum away the row versions the last pass
    and this left, so that every pass starts from the same table (as autovacuum keeps it)."""
    with engine.begin() as conn:
        conn.execute(
            update(_TM)
            .where(_TM.c.fired_at.is_(None), _TM.c.due_at <= NOW, _TM.c.claimed_by.is_not(None))
            .values(lease_until=None, claimed_by=None)
        )
    if is_postgres(engine):
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM timers")


def _engine_pass(rt: Runtime, batch: int) -> list[int]:
    claimed: list[int] = []
    while claims := rt.claim_due_timers(NOW, batch, worker=WORKER):
        claimed.extend(c.timer_id for c in claims)
    return claimed


def _baseline_pass(engine: Engine, batch: int) -> Callable[[], list[int]]:
    # Statements built once, with bound parameters, as a hand-written hot path would be.
    now: BindParameter[datetime] = bindparam("now")
    due = and_(
        _TM.c.fired_at.is_(None),
        _TM.c.due_at <= now,
        or_(_TM.c.lease_until.is_(None), _TM.c.lease_until < now),
    )
    pick = select(_TM.c.id).where(due).order_by(_TM.c.due_at, _TM.c.id).limit(batch)
    if is_postgres(engine):
        pick = pick.with_for_update(skip_locked=True)
    lease = (
        update(_TM)
        .where(_TM.c.id.in_(bindparam("ids", expanding=True)), due)
        .values(lease_until=bindparam("until"), claimed_by=bindparam("worker"))
    )
    params = {"now": NOW}
    leased = {"now": NOW, "until": NOW + timedelta(minutes=5), "worker": WORKER}

    def run() -> list[int]:
        claimed: list[int] = []
        while True:
            with engine.begin() as conn:
                ids = list(conn.scalars(pick, params))
                if not ids:
                    return claimed
                conn.execute(lease, {**leased, "ids": ids})
            claimed.extend(ids)

    return run


def _escalation_rate(rt: Runtime, plan: SweepPlan) -> float:
    """Escalations per second through ``Runtime.sweep``, all of them ``escalated``; every
    timeline must still verify afterwards."""
    escalated = 0
    started = time.perf_counter()
    while escalated < plan.escalations:
        outcomes = rt.sweep(min(plan.batch, plan.escalations - escalated), worker=WORKER)
        if not outcomes:
            break
        odd = [o for o in outcomes if o.outcome != "escalated"]
        if odd:
            raise RuntimeError(f"the sweep did not escalate: {odd[:3]}")
        escalated += len(outcomes)
    rate = escalated / (time.perf_counter() - started)
    with rt.db.begin() as conn:
        fired = conn.scalar(
            select(func.count()).where(_TM.c.claimed_by == WORKER, _TM.c.fired_at.is_not(None))
        )
    if escalated != plan.escalations or fired != escalated:
        raise RuntimeError(f"{escalated} escalations, {fired} timers marked fired")
    broken = [c.case_code for c in rt.verify_timeline() if not c.ok]
    if broken:
        raise RuntimeError(f"the escalations broke timelines: {broken[:3]}")
    return rate
