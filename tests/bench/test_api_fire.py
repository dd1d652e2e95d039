"""The ``api_fire`` benchmark: its baseline fires what the API fires, a tiny run goes through
real uvicorn servers on both sides, and the servers it starts are gone afterwards, even when
a side fails.

No timing assertion here (see ``test_bench.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import bench.api_fire
from bench.api_fire import ApiPlan, bare_app, measure_api_fire
from bench.common import SOP_KEY, case_code, load_library, make_runtime, seed_referrals
from sop_engine.persistence.db import make_engine
from sop_engine.persistence.migrate import upgrade

TINY = ApiPlan(clients=2, referrals=1, warmup=4, events=6, repetitions=2)


def _servers_left() -> list[int]:
    """Processes started by this one that are still running a benchmark server."""
    me = str(os.getpid())
    left = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = (entry / "stat").read_text().rpartition(")")[2].split()[1]
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if parent == me and b"bench.api_fire" in command:
            left.append(int(entry.name))
    return left


def test_the_bare_endpoint_fires_the_event_without_a_token(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/bare.sqlite3")
    upgrade(engine)
    seed_referrals(engine, load_library().get(SOP_KEY), 1)
    runtime = make_runtime(engine)
    code = case_code(0)
    with TestClient(bare_app(runtime)) as client:
        fired = client.post(f"/referrals/{code}/events/volley")
        nothing = client.post(f"/referrals/{code}/events/nothing")
    assert fired.status_code == 200
    assert fired.json() == {"state": "pong", "version": 2}
    assert nothing.json() == {}
    assert runtime.read_referral(code).state == "pong"
    engine.dispose()


@pytest.mark.slow
def test_a_tiny_run_fires_through_both_servers_and_stops_them(tmp_path: Path) -> None:
    result = measure_api_fire(f"sqlite:///{tmp_path}/api.sqlite3", TINY)

    assert len(result.api_runs) == len(result.bare_runs) == TINY.repetitions
    assert all(rate > 0 for rate in [*result.api_runs, *result.bare_runs, result.ceiling])
    assert result.ratio == result.api / result.bare
    assert result.api_cpu_ms > 0
    assert result.bare_cpu_ms > 0
    assert result.timelines_verified == 2 * TINY.clients * TINY.referrals
    per_side = TINY.warmup + TINY.repetitions * TINY.events
    assert result.transitions == 2 * per_side
    assert _servers_left() == []


@pytest.mark.slow
def test_a_refused_request_stops_the_run_and_the_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench.api_fire, "_new_token", lambda engine, index: "not-a-token")

    with pytest.raises(RuntimeError, match="HTTP 401"):
        measure_api_fire(f"sqlite:///{tmp_path}/api.sqlite3", TINY)
    assert _servers_left() == []


@pytest.mark.slow
def test_a_server_that_cannot_start_is_reported_and_the_other_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench.api_fire, "SIDES", ("api", "no-such-side"))

    with pytest.raises(RuntimeError, match="the no-such-side server did not start"):
        measure_api_fire(f"sqlite:///{tmp_path}/api.sqlite3", TINY)
    assert _servers_left() == []
