"""Escalations recover without a person, against a real Prefect server: from a run that died
holding the sweep's lease (and that Prefect still shows running), from both workers killed
with SIGKILL while a sweep runs (as kill -9 of ``serve`` does), and from a kill and restart of
the Prefect server while a sweep runs; each deadline escalates once, within two sweep
intervals plus one timer lease. (With Prefect's deployment concurrency slot, which this
replaced, the killed run kept the slot for minutes, and after the restart for good.)

Every name, agency and fact here is synthetic.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from sop_engine.clock import SystemClock
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.persistence.db import default_database_url, make_engine
from sop_engine.runtime import periodic
from tests.conftest import seed_prefect_home
from tests.test_serve import LOOPBACK_HTTP
from tests.workflows.test_worker import _environment, _referral_already_due, _worker
from workflows.server import LocalPrefectServer

T, OUT = tables.timeline_entries, tables.outbox
INTERVAL, LEASE = 15, 5
BOUND = 2 * INTERVAL + LEASE
"""Seconds from a failure (or from a deadline falling due) to its escalation."""


def _escalations(engine: Engine, referral: str) -> int:
    with engine.connect() as conn:
        query = select(func.count()).select_from(T)
        where = (T.c.referral_id == referral, T.c.kind == "escalation")
        return int(conn.scalar(query.where(*where)) or 0)


def _outbox(engine: Engine, referral: str) -> int:
    with engine.connect() as conn:
        query = select(func.count()).select_from(OUT).where(OUT.c.referral_id == referral)
        return int(conn.scalar(query) or 0)


def _seconds_until(
    check: Callable[[], object], timeout: float, what: str, logs: list[Path]
) -> float:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            tails = "\n".join(
                f"--- {log.name}:\n"
                + "\n".join(log.read_text("utf-8", errors="replace").splitlines()[-25:])
                for log in logs
                if log.exists()
            )
            pytest.fail(f"{what} not within {timeout:g} s; the logs end:\n{tails}")
        time.sleep(0.25)
    return time.monotonic() - began


def _create(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``body``; a freshly started Prefect server on SQLite, under the load of the whole
    suite, may answer 5xx for its first writes: tried again for up to 30 s."""
    deadline = time.monotonic() + 30
    while True:
        answer = LOOPBACK_HTTP.post(url, json=body, timeout=10)
        if answer.status_code < 500 or time.monotonic() > deadline:
            answer.raise_for_status()
            made: dict[str, Any] = answer.json()
            return made
        time.sleep(0.5)


def _serving(log: Path, logs: list[Path]) -> None:
    _seconds_until(lambda: b"serving escalation-sweep" in log.read_bytes(), 120, "serving", logs)


def _runs(api: str, *states: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = LOOPBACK_HTTP.post(
        f"{api}/flow_runs/filter",
        json={"flow_runs": {"state": {"type": {"any_": list(states)}}}},
        timeout=10,
    ).json()
    return found


def _sweeps_running(api: str, sweep: str) -> bool:
    """A scheduled run of the sweep (flow id ``sweep``) is running."""
    return any(r["deployment_id"] and r["flow_id"] == sweep for r in _runs(api, "RUNNING"))


def _run_state(api: str, run_id: str) -> str:
    return str(LOOPBACK_HTTP.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state"]["type"])


@pytest.mark.slow
def test_escalations_resume_after_a_dead_run_a_killed_worker_and_a_restarted_prefect_server(
    tmp_path: Path, library: SopLibrary, prefect_database: Path
) -> None:
    data = tmp_path / "data"
    first, _ = _referral_already_due(data, library)
    engine = make_engine(default_database_url(data))
    server = LocalPrefectServer(seed_prefect_home(tmp_path / "prefect-server", prefect_database))
    server.start()
    api = server.api_url
    logs = [tmp_path / f"worker-{n}.log" for n in (1, 2, 3)]
    try:
        # A sweep run died holding the lease: Prefect still shows it running.
        flow = _create(f"{api}/flows/", {"name": "escalation-sweep"})
        dead = _create(
            f"{api}/flow_runs/",
            {
                "flow_id": flow["id"],
                "name": "synthetic-dead-run",
                "state": {"type": "RUNNING", "name": "Running"},
            },
        )["id"]
        held = periodic.begin(
            engine,
            SystemClock(),
            "escalation-sweep",
            holder="a-dead-host:1",
            length=timedelta(seconds=LEASE),
            run_id=dead,
        )
        assert isinstance(held, periodic.Lease)
        env = _environment(
            tmp_path,
            PREFECT_API_URL=api,
            PREFECT_RUNNER_POLL_FREQUENCY="2",
            SOP_ENGINE_SWEEP_INTERVAL_SECONDS=str(INTERVAL),
            SOP_ENGINE_DISPATCH_INTERVAL_SECONDS=str(INTERVAL),
            SOP_ENGINE_TIMER_LEASE_SECONDS=str(LEASE),
        )
        with _worker(env, logs[0]) as one, _worker(env, logs[1]) as two:
            for log in logs[:2]:
                _serving(log, logs)
            # 1. The dead run's lease runs out; the next run escalates and marks it crashed.
            waited = _seconds_until(lambda: _escalations(engine, first), 120, "escalation 1", logs)
            assert waited <= BOUND
            _seconds_until(lambda: _run_state(api, dead) == "CRASHED", BOUND, "crashed", logs)

            # 2. Both workers are killed (as with kill -9 of serve) while a sweep runs.
            _seconds_until(lambda: _sweeps_running(api, flow["id"]), 120, "a sweep running", logs)
            for worker in (one, two):
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        second, _ = _referral_already_due(data, library)
        with _worker(env, logs[2]) as three:
            _serving(logs[2], logs)
            waited = _seconds_until(lambda: _escalations(engine, second), 120, "escalation 2", logs)
            assert waited <= BOUND

            # 3. The Prefect server is killed while a sweep runs, and started again.
            _seconds_until(lambda: _sweeps_running(api, flow["id"]), 120, "a sweep running", logs)
            assert server.pid is not None
            os.killpg(server.pid, signal.SIGKILL)
            server.stop()
            time.sleep(3)
            server = LocalPrefectServer(tmp_path / "prefect-server", server.port)
            server.start()
            back = datetime.now(UTC)
            third, _ = _referral_already_due(data, library)
            waited = _seconds_until(lambda: _escalations(engine, third), 120, "escalation 3", logs)
            assert waited <= BOUND, f"{waited:.0f} s after the server came back at {back}"
            assert three.poll() is None

            # The killed workers' runs do not stay "running" in the Prefect UI.
            def left_running() -> list[str]:
                cutoff = datetime.now(UTC) - timedelta(seconds=BOUND)
                return [
                    r["name"]
                    for r in _runs(api, "RUNNING", "PENDING")
                    if datetime.fromisoformat(r["state"]["timestamp"]) < cutoff
                ]

            _seconds_until(lambda: not left_running(), 2 * BOUND, "no stale running runs", logs)
            assert _runs(api, "CRASHED")  # the killed ones, marked
            three.send_signal(signal.SIGTERM)
            assert three.wait(60) == 0
        for referral in (first, second, third):
            assert _escalations(engine, referral) == 1
            assert _outbox(engine, referral) == 1
    finally:
        engine.dispose()
        server.stop()
