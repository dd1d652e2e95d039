"""``python -m bench [--quick] [--json OUT]``: measure, print one line per figure, and
optionally write the figures as a JSON list of ``{"name", "value", "unit", "baseline",
"ratio"}`` objects (see README, "Performance").

A figure that could not be measured (``fire_postgres``, ``api_fire_postgres``,
``sweep_postgres`` and ``escalate_postgres`` when the server cannot be reached) is printed
as ``skipped: why`` and written with ``null`` value, baseline and ratio and a ``skipped``
reason. The informational figures (``escalate_*``) have no baseline: they are written with
``null`` baseline and ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from bench.api_fire import ApiFire, ApiPlan, measure_api_fire
from bench.common import POSTGRES_URL, Figure, postgres_schema
from bench.memory import MemoryPlan, measure_memory
from bench.reads import GOAL_MS, ReadPlan, Reads, measure_reads, summary
from bench.sop_check import SopCheckPlan, measure_sop_check
from bench.sweep import Sweep, SweepPlan, measure_sweep
from bench.throughput import Plan, Throughput, measure_throughput
from sop_engine.persistence.db import make_engine

FULL = (
    Plan(referrals=50, warmup=200, events=300, repetitions=11),
    ApiPlan(),
    MemoryPlan(),
    SweepPlan(),
    SopCheckPlan(),
    ReadPlan(),
)
QUICK = (
    Plan(referrals=10, warmup=20, events=60, repetitions=3),
    ApiPlan(clients=8, referrals=2, warmup=16, events=48, repetitions=3),
    MemoryPlan(small=300, large=3_000, warmup=30, events=100),
    SweepPlan(referrals=200, timers=20_000, due=500, fired=2_000, repetitions=3, escalations=100),
    SopCheckPlan(repetitions=1),
    ReadPlan(referrals=2_000, timeline=1_000, rounds=2),
)
"""Scaled down to check that every figure can be measured (about 30 s), not to judge it."""
FIRE_GOAL = 0.5
"""``Runtime.fire`` should run at half the baseline's speed or better."""
API_FIRE_GOAL = 0.5
"""The API's fire route should serve half as many events as a bare endpoint, or more."""
SWEEP_GOAL = 0.5
"""``Runtime.claim_due_timers`` too."""
SOP_CHECK_GOAL = 2.0
"""Checking the costliest SOP the language's bounds accept takes at most 2 s of CPU."""
FLAT = 0.8
"""Memory is flat when the larger database costs at most 1/0.8 = 1.25 times the smaller."""
_GOALS = {"fire_": FIRE_GOAL, "api_fire_": API_FIRE_GOAL, "sweep_": SWEEP_GOAL}
"""The ratio each figure should reach, by the start of its name; the others must be flat."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmarks of the referral runtime."
    )
    parser.add_argument(
        "--quick", action="store_true", help="scaled down: about 30 s instead of about 4.5 min"
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the figures here")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("SOP_ENGINE_TEST_POSTGRES_URL", POSTGRES_URL),
        help="server for the *_postgres figures; each uses a fresh schema (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    plan, api_plan, memory_plan, sweep_plan, sop_plan, read_plan = QUICK if args.quick else FULL

    began = time.perf_counter()
    print(
        f"# {datetime.now(UTC):%Y-%m-%d} Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs"
        + (" (quick)" if args.quick else ""),
        flush=True,
    )
    figures = [
        _timed("fire_sqlite", lambda: _fire_sqlite(plan)),
        _timed("fire_postgres", lambda: _fire_postgres(plan, args.postgres_url)),
        _timed("api_fire_sqlite", lambda: _api_fire_sqlite(api_plan)),
        _timed("api_fire_postgres", lambda: _api_fire_postgres(api_plan, args.postgres_url)),
        _timed("memory_open_referrals", lambda: _memory(memory_plan)),
        *_timed_many("sweep_sqlite", lambda: _sweep_sqlite(sweep_plan)),
        *_timed_many("sweep_postgres", lambda: _sweep_postgres(sweep_plan, args.postgres_url)),
        _timed("sop_check_worst", lambda: _sop_check(sop_plan)),
        _timed("reads_sqlite", lambda: _reads_sqlite(read_plan)),
        _timed("reads_postgres", lambda: _reads_postgres(read_plan, args.postgres_url)),
    ]
    _print_goals(figures)
    print(f"# {time.perf_counter() - began:.0f} s in all")
    if args.json is not None:
        args.json.write_text(json.dumps([f.to_json() for f in figures], indent=2) + "\n")
    return 0


def _timed(name: str, measure: Callable[[], Figure]) -> Figure:
    print(f"# measuring {name} ...", file=sys.stderr, flush=True)
    began = time.perf_counter()
    figure = measure()
    print(figure.line(), flush=True)
    _took(name, began)
    return figure


def _timed_many(name: str, measure: Callable[[], list[Figure]]) -> list[Figure]:
    print(f"# measuring {name} ...", file=sys.stderr, flush=True)
    began = time.perf_counter()
    figures = measure()
    for figure in figures:
        print(figure.line(), flush=True)
    _took(name, began)
    return figures


def _took(name: str, began: float) -> None:
    print(f"# {name} took {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)


def _fire_figure(name: str, result: Throughput) -> Figure:
    return Figure(
        name,
        round(result.engine, 1),
        "events/s",
        baseline=round(result.baseline, 1),
        ratio=round(result.ratio, 3),
        details={
            "engine_runs": [round(r, 1) for r in result.engine_runs],
            "baseline_runs": [round(r, 1) for r in result.baseline_runs],
            "timelines_verified": result.timelines_verified,
        },
    )


def _fire_sqlite(plan: Plan) -> Figure:
    with tempfile.TemporaryDirectory(prefix="sop-engine-bench-") as folder:
        engine = make_engine(f"sqlite:///{folder}/fire.sqlite3")
        try:
            return _fire_figure("fire_sqlite", measure_throughput(engine, plan))
        finally:
            engine.dispose()


def _fire_postgres(plan: Plan, url: str) -> Figure:
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        with postgres_schema(url) as schema_url:
            engine = make_engine(schema_url)
            try:
                return _fire_figure("fire_postgres", measure_throughput(engine, plan))
            finally:
                engine.dispose()
    except SQLAlchemyError as exc:
        reason = f"PostgreSQL at {shown}: {_first_line(exc)}"
        return Figure("fire_postgres", None, "events/s", skipped=reason)


def _api_fire_figure(name: str, plan: ApiPlan, result: ApiFire) -> Figure:
    return Figure(
        name,
        round(result.api, 1),
        "events/s",
        baseline=round(result.bare, 1),
        ratio=round(result.ratio, 3),
        details={
            "clients": plan.clients,
            "api_runs": [round(r, 1) for r in result.api_runs],
            "bare_runs": [round(r, 1) for r in result.bare_runs],
            "api_cpu_ms_per_event": round(result.api_cpu_ms, 3),
            "bare_cpu_ms_per_event": round(result.bare_cpu_ms, 3),
            "ceiling_requests_per_s": round(result.ceiling, 1),
            "timelines_verified": result.timelines_verified,
            "transitions": result.transitions,
        },
        notes=[
            f"  {plan.clients} clients on loopback; server CPU per event: "
            f"API {result.api_cpu_ms:.2f} ms, bare {result.bare_cpu_ms:.2f} ms; "
            f"an endpoint doing nothing: {result.ceiling:.0f} requests/s"
        ],
    )


def _api_fire_sqlite(plan: ApiPlan) -> Figure:
    with tempfile.TemporaryDirectory(prefix="sop-engine-bench-") as folder:
        url = f"sqlite:///{folder}/api.sqlite3"
        return _api_fire_figure("api_fire_sqlite", plan, measure_api_fire(url, plan))


def _api_fire_postgres(plan: ApiPlan, url: str) -> Figure:
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        with postgres_schema(url) as schema_url:
            result = measure_api_fire(schema_url, plan)
            return _api_fire_figure("api_fire_postgres", plan, result)
    except SQLAlchemyError as exc:
        reason = f"PostgreSQL at {shown}: {_first_line(exc)}"
        return Figure("api_fire_postgres", None, "events/s", skipped=reason)


def _sweep_figures(backend: str, result: Sweep) -> list[Figure]:
    setup = result.setup
    return [
        Figure(
            f"sweep_{backend}",
            round(result.engine, 1),
            "timers/s",
            baseline=round(result.baseline, 1),
            ratio=round(result.ratio, 3),
            details={
                "engine_runs": [round(r, 1) for r in result.engine_runs],
                "baseline_runs": [round(r, 1) for r in result.baseline_runs],
                **setup,
            },
            notes=[
                f"  {setup['due']:,} due timers among {setup['timers']:,} "
                f"({setup['fired']:,} fired, {setup['referrals']:,} referrals), "
                f"claimed {setup['batch']} at a time; "
                f"filled in {setup['fill_timers_s']:.0f} s"
            ],
        ),
        Figure(
            f"escalate_{backend}",
            round(result.escalations, 1),
            "escalations/s",
            details={"escalations": setup["escalations"], "batch": setup["batch"]},
        ),
    ]


def _sweep_sqlite(plan: SweepPlan) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="sop-engine-bench-") as folder:
        engine = make_engine(f"sqlite:///{folder}/sweep.sqlite3")
        try:
            return _sweep_figures("sqlite", measure_sweep(engine, plan))
        finally:
            engine.dispose()


def _sweep_postgres(plan: SweepPlan, url: str) -> list[Figure]:
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        with postgres_schema(url) as schema_url:
            engine = make_engine(schema_url)
            try:
                return _sweep_figures("postgres", measure_sweep(engine, plan))
            finally:
                engine.dispose()
    except SQLAlchemyError as exc:
        reason = f"PostgreSQL at {shown}: {_first_line(exc)}"
        return [
            Figure("sweep_postgres", None, "timers/s", skipped=reason),
            Figure("escalate_postgres", None, "escalations/s", skipped=reason),
        ]


def _first_line(exc: SQLAlchemyError) -> str:
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0]


def _memory(plan: MemoryPlan) -> Figure:
    results = measure_memory(plan)
    small, large = results[plan.small], results[plan.large]
    notes = [
        f"  peak traced while firing: value at {plan.large} open referrals, "
        f"baseline at {plan.small}",
        f"  {'open referrals':>14} {'distinct fired':>14} {'traced peak KiB':>15} "
        f"{'retained KiB':>12} {'RSS MiB':>8} {'RSS growth MiB':>14}",
    ]
    notes.extend(
        f"  {count:>14} {r['distinct_referrals_fired']:>14} {r['traced_peak_kib']:>15.1f} "
        f"{r['retained_kib']:>12.1f} {r['rss_mib']:>8.1f} {r['rss_growth_mib']:>14.1f}"
        for count, r in results.items()
    )
    return Figure(
        "memory_open_referrals",
        round(large["traced_peak_kib"], 1),
        "KiB",
        baseline=round(small["traced_peak_kib"], 1),
        ratio=round(small["traced_peak_kib"] / large["traced_peak_kib"], 3),
        details={str(count): result for count, result in results.items()},
        notes=notes,
    )


def _sop_check(plan: SopCheckPlan) -> Figure:
    result = measure_sop_check(plan)
    return Figure(
        "sop_check_worst",
        round(result.worst, 3),
        "s CPU",
        baseline=round(result.baseline, 3),
        ratio=round(result.ratio, 3),
        details={"shapes_s": result.shapes, "values": result.values},
        notes=[
            f"  {name}: {seconds:.3f} s, {result.values[name]:,} values"
            for name, seconds in result.shapes.items()
        ]
        + ["  baseline: the largest shipped SOP (a corridor with the baseline it extends)"],
    )


def _reads_figure(name: str, plan: ReadPlan, result: Reads) -> Figure:
    loaded_route, loaded = result.loaded.worst_p99()
    baseline_route, baseline = result.baseline.worst_p99()
    errors = [*result.baseline.errors, *result.loaded.errors, *result.loaded.write_errors]
    return Figure(
        name,
        round(loaded, 1),
        "ms p99",
        baseline=round(baseline, 1),
        ratio=round(baseline / loaded, 3),
        details={
            "referrals": plan.referrals,
            "timeline_entries": plan.timeline,
            "writers": plan.writers,
            "readers": plan.readers,
            "read_calls": result.calls,
            "errors": result.errors,
            "error_samples": errors[:5],
            "events_fired_while_reading": result.loaded.fired,
            "events_per_s_while_reading": round(result.loaded.fired / result.loaded.seconds, 1),
            "setup_s": round(result.setup_s, 1),
            "loaded": summary(result.loaded),
            "baseline": summary(result.baseline),
        },
        notes=[
            f"  slowest route at p99: {loaded_route} with {plan.writers} clients firing "
            f"({result.loaded.fired / result.loaded.seconds:.0f} events/s), {baseline_route} "
            f"alone; {plan.referrals:,} referrals, a {plan.timeline:,}-entry timeline, "
            f"{result.calls} read calls x {plan.rounds} rounds x {plan.readers} readers; "
            f"{result.errors} error(s)",
            *(f"  error: {e}" for e in errors[:5]),
        ],
    )


def _reads_sqlite(plan: ReadPlan) -> Figure:
    with tempfile.TemporaryDirectory(prefix="sop-engine-bench-") as folder:
        url = f"sqlite:///{folder}/reads.sqlite3"
        return _reads_figure("reads_sqlite", plan, measure_reads(url, plan))


def _reads_postgres(plan: ReadPlan, url: str) -> Figure:
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        with postgres_schema(url) as schema_url:
            return _reads_figure("reads_postgres", plan, measure_reads(schema_url, plan))
    except SQLAlchemyError as exc:
        reason = f"PostgreSQL at {shown}: {_first_line(exc)}"
        return Figure("reads_postgres", None, "ms p99", skipped=reason)


def _print_goals(figures: list[Figure]) -> None:
    for f in figures:
        if f.name == "sop_check_worst" and f.value is not None:
            verdict = "met" if f.value <= SOP_CHECK_GOAL else "NOT met"
            print(f"# goal {f.name}: at most {SOP_CHECK_GOAL} s of CPU: {verdict}")
            continue
        if f.ratio is None:
            continue
        if f.name.startswith("reads_"):
            met = f.value is not None and f.value <= GOAL_MS and not f.details["errors"]
            verdict = "met" if met else "NOT met"
            print(f"# goal {f.name}: every read route p99 <= {GOAL_MS:.0f} ms, 0 errors: {verdict}")
            continue
        goal = next((g for prefix, g in _GOALS.items() if f.name.startswith(prefix)), None)
        if goal is not None:
            verdict = "met" if f.ratio >= goal else "NOT met"
            print(f"# goal {f.name}: ratio >= {goal}: {verdict}")
        else:
            verdict = "met" if f.ratio >= FLAT else "NOT met"
            print(f"# goal {f.name}: flat (ratio >= {FLAT}): {verdict}")


if __name__ == "__main__":
    raise SystemExit(main())
