"""Memory of a process firing events on a few open referrals among many: it must stay flat.

The engine keeps no object per referral (one machine per SOP version, a referral attached
only for the length of one ``fire``), so firing on randomly chosen referrals among 100,000
open ones must cost the same memory as among 10,000. :func:`measure_memory` seeds one SQLite
database with the smaller number of open referrals, measures, tops it up to the larger
number, and measures again. Each measurement runs in a fresh process (``python -m
bench.memory URL COUNT EVENTS``), so that nothing from seeding or from the other
measurement is counted, and reports:

- ``traced_peak_kib``: the peak of memory allocated by Python (tracemalloc) while firing,
  above what was allocated when firing began (after a warm-up);
- ``retained_kib``: what of it is still allocated after the firing and a garbage
  collection (a per-referral cache or leak shows here);
- ``rss_mib`` and ``rss_growth_mib``: the process's resident set at the end of an untraced
  firing phase of the same length, and how much it grew during it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import tracemalloc
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

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
from sop_engine.persistence.db import make_engine
from sop_engine.persistence.migrate import upgrade

__all__ = ["MemoryPlan", "measure_memory"]

ROOT = Path(__file__).resolve().parents[1]
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class MemoryPlan:
    small: int = 10_000
    large: int = 100_000
    warmup: int = 300
    events: int = 2_000
    """Fired in each of the two measured phases (untraced for RSS, then traced)."""
    seed: int = 20_260_302


def measure_memory(plan: MemoryPlan) -> dict[int, dict[str, Any]]:
    """The measurements at ``plan.small`` and ``plan.large`` open referrals."""
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="sop-engine-bench-") as folder:
        url = f"sqlite:///{folder}/memory.sqlite3"
        engine = make_engine(url)
        try:
            upgrade(engine)
            sop = load_library().get(SOP_KEY)
            seeded = 0
            for count in (plan.small, plan.large):
                seed_referrals(engine, sop, count - seeded, first=seeded)
                seeded = count
                results[count] = _in_fresh_process(url, count, plan)
        finally:
            engine.dispose()
    return results


def _in_fresh_process(url: str, count: int, plan: MemoryPlan) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    args = [str(a) for a in (url, count, plan.events, plan.warmup, plan.seed)]
    done = subprocess.run(
        [sys.executable, "-m", "bench.memory", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement at {count} referrals failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def _measure(url: str, count: int, events: int, warmup: int, seed: int) -> dict[str, Any]:
    """Fire on random referrals among ``count``: warm up, an untraced phase, a traced one."""
    engine = make_engine(url)
    rt = make_runtime(engine)
    clock = rt.clock
    assert isinstance(clock, ManualClock)
    # Every referral to fire on is chosen up front, so that the harness allocates nothing
    # while memory is traced.
    pick = random.Random(seed)
    codes = [case_code(pick.randrange(count)) for _ in range(warmup + 2 * events)]
    fired = iter(codes)
    step = timedelta(seconds=1)

    def fire(n: int, sample: list[int] | None = None) -> None:
        for i in range(n):
            clock.advance(step)
            rt.fire(next(fired), EVENT, ACTOR)
            if sample is not None and i % 50 == 0:
                sample.append(_rss())

    fire(warmup)
    gc.collect()
    rss_before = _rss()
    samples = [rss_before]
    fire(events, samples)
    samples.append(_rss())

    gc.collect()
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    fire(events)
    _, peak = tracemalloc.get_traced_memory()
    gc.collect()
    end, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    engine.dispose()
    return {
        "open_referrals": count,
        "events": events,
        "distinct_referrals_fired": len(set(codes)),
        "traced_peak_kib": (peak - start) / 1024,
        "retained_kib": (end - start) / 1024,
        "rss_mib": samples[-1] / 2**20,
        "rss_growth_mib": (max(samples) - rss_before) / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one memory measurement (see bench.memory)")
    parser.add_argument("url")
    parser.add_argument("count", type=int)
    parser.add_argument("events", type=int)
    parser.add_argument("warmup", type=int)
    parser.add_argument("seed", type=int)
    a = parser.parse_args(argv)
    print(json.dumps(_measure(a.url, a.count, a.events, a.warmup, a.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
