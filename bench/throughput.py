"""Events per second through ``Runtime.fire``, against a hand-written baseline.

Both sides fire the ``volley`` event of ``bench.pingpong`` round-robin over their own set of
identical, freshly seeded referrals, on the same engine (so the same pool, pragmas and
``BEGIN IMMEDIATE`` on SQLite, the same ``pool_pre_ping`` on PostgreSQL), one transaction
per event. Their repetitions alternate, so that drift in the database (the WAL growing,
checkpoints, autovacuum) falls on both alike, and each figure is the median.

The baseline is the least a hand-written transaction must do to make the same change on the
same tables: read the referral's state, version and chain head by case code; update its
state, version, ``updated_at`` and chain head under the version check; insert the timeline
entry with the same content and hash chain; delete the unfired timers of the state left;
insert the timers of the state entered. It checks no roles, guards, facts or consent,
writes no unchanged columns, and builds its statements once, with bound parameters, as a
hand-written hot path would.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, delete, select, update

from bench.common import (
    ACTOR,
    EVENT,
    SOP_KEY,
    case_code,
    load_library,
    make_runtime,
    seed_referrals,
)
from sop_engine.clock import ManualClock
from sop_engine.persistence import tables
from sop_engine.persistence.migrate import upgrade
from sop_engine.runtime.engine import Runtime
from sop_engine.timeline.chain import entry_hash
from sop_engine.timeline.entries import entry_content

__all__ = ["Plan", "Throughput", "measure_throughput"]

_R = tables.referrals
_T = tables.timeline_entries
_TM = tables.timers


@dataclass(frozen=True)
class Plan:
    referrals: int = 50
    """Per side; events go round-robin over them."""
    warmup: int = 200
    events: int = 300
    """Per repetition."""
    repetitions: int = 11


@dataclass(frozen=True)
class Throughput:
    engine: float
    baseline: float
    engine_runs: list[float]
    baseline_runs: list[float]
    timelines_verified: int

    @property
    def ratio(self) -> float:
        return self.engine / self.baseline


def measure_throughput(engine: Engine, plan: Plan) -> Throughput:
    """Migrate ``engine``'s empty database, seed it and time both sides (module docstring)."""
    upgrade(engine)
    library = load_library()
    rt = make_runtime(engine, library)
    sop = library.get(SOP_KEY)
    seed_referrals(engine, sop, plan.referrals, first=0)
    seed_referrals(engine, sop, plan.referrals, first=plan.referrals)
    through_engine = _engine_side(rt, range(plan.referrals))
    through_baseline = _baseline_side(rt, range(plan.referrals, 2 * plan.referrals))

    through_engine(plan.warmup)
    through_baseline(plan.warmup)
    engine_runs: list[float] = []
    baseline_runs: list[float] = []
    for _ in range(plan.repetitions):
        engine_runs.append(_rate(through_engine, plan.events))
        baseline_runs.append(_rate(through_baseline, plan.events))

    checks = rt.verify_timeline()
    broken = [c.case_code for c in checks if not c.ok]
    if broken or len(checks) != 2 * plan.referrals:
        raise RuntimeError(f"the benchmark broke timelines: {broken[:3]}")
    return Throughput(
        statistics.median(engine_runs),
        statistics.median(baseline_runs),
        engine_runs,
        baseline_runs,
        len(checks),
    )


def _rate(run: Callable[[int], None], events: int) -> float:
    began = time.perf_counter()
    run(events)
    return events / (time.perf_counter() - began)


def _engine_side(rt: Runtime, indices: range) -> Callable[[int], None]:
    codes = [case_code(i) for i in indices]
    clock = rt.clock
    assert isinstance(clock, ManualClock)
    position = 0

    def run(events: int) -> None:
        nonlocal position
        for _ in range(events):
            clock.advance(timedelta(seconds=1))
            rt.fire(codes[position % len(codes)], EVENT, ACTOR)
            position += 1

    return run


def _baseline_side(rt: Runtime, indices: range) -> Callable[[int], None]:
    codes = [case_code(i) for i in indices]
    db, clock = rt.db, rt.clock
    assert isinstance(clock, ManualClock)
    spec = rt.library.get(SOP_KEY).spec
    other = {"ping": "pong", "pong": "ping"}
    # The timers of each state, as the SOP says: deadline, level, delay to due, to level.
    ladders = {
        name: [
            (d.name, lv.level, d.after, lv.after)
            for d in spec.states[name].deadlines.values()
            for lv in d.escalation
        ]
        for name in other
    }
    # Statements built once, with bound parameters, as a hand-written hot path would be.
    read = select(_R.c.id, _R.c.state, _R.c.version, _R.c.timeline_seq, _R.c.head_hash).where(
        _R.c.case_code == bindparam("code")
    )
    claim = (
        update(_R)
        .where(_R.c.id == bindparam("ref_id"), _R.c.version == bindparam("read_version"))
        .values(
            state=bindparam("target"),
            version=bindparam("new_version"),
            updated_at=bindparam("now"),
            timeline_seq=bindparam("seq"),
            head_hash=bindparam("digest"),
        )
    )
    append = _T.insert()
    stop_timers = delete(_TM).where(
        _TM.c.referral_id == bindparam("ref_id"),
        _TM.c.state == bindparam("left"),
        _TM.c.fired_at.is_(None),
    )
    start_timers = _TM.insert()
    position = 0

    def fire_one(code: str) -> None:
        now = clock.advance(timedelta(seconds=1))
        with db.begin() as conn:
            ref = conn.execute(read, {"code": code}).one()
            target = other[ref.state]
            entry: dict[str, Any] = {
                "referral_id": ref.id,
                "seq": ref.timeline_seq + 1,
                "at": now,
                "kind": "transition",
                "actor_id": ACTOR.id,
                "actor_role": ACTOR.role,
                "actor_agency_id": ACTOR.agency_id,
                "event": EVENT,
                "from_state": ref.state,
                "to_state": target,
                "consent_grant_id": None,
                "disclosed_to": None,
                "disclosed_fields": [],
                "override": False,
                "details": {},
            }
            digest = entry_hash(ref.head_hash, entry_content(entry))
            claimed = conn.execute(
                claim,
                {
                    "ref_id": ref.id,
                    "read_version": ref.version,
                    "target": target,
                    "new_version": ref.version + 1,
                    "now": now,
                    "seq": entry["seq"],
                    "digest": digest,
                },
            )
            if claimed.rowcount != 1:
                raise RuntimeError(f"baseline lost a race on {code}")
            conn.execute(append, {**entry, "prev_hash": ref.head_hash, "hash": digest})
            conn.execute(stop_timers, {"ref_id": ref.id, "left": ref.state})
            conn.execute(
                start_timers,
                [
                    {
                        "referral_id": ref.id,
                        "state": target,
                        "deadline": deadline,
                        "level": level,
                        "due_at": now + after + level_after,
                        "deadline_due_at": now + after,
                        "created_at": now,
                    }
                    for deadline, level, after, level_after in ladders[target]
                ],
            )

    def run(events: int) -> None:
        nonlocal position
        for _ in range(events):
            fire_one(codes[position % len(codes)])
            position += 1

    return run
