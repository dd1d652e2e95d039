"""The worker's own ``GET /health``: 200 while it polls Prefect for runs, 503 while it starts,
when its polls stop (its Prefect server killed) and while it stops. The rules on a clock the
test moves; then a real worker whose local Prefect server is killed under it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import seed_prefect_home
from workflows.health import DEFAULT_TOLERANCE, HealthServer, Watch

from .test_worker import _environment, _wait_for, _worker

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


class _Now:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at


def _get(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_healthy_only_while_serving_and_polling_within_the_tolerance() -> None:
    now = _Now()
    watch = Watch(now=now)
    assert watch.health().status == "starting"
    polled: list[datetime | None] = [None]
    watch.serving(lambda: polled[0])
    assert watch.health().status == "ok"  # the first poll has the tolerance to come
    now.at += DEFAULT_TOLERANCE + timedelta(seconds=1)
    assert watch.health().status == "unresponsive"
    polled[0] = now.at
    assert watch.health().healthy
    now.at += DEFAULT_TOLERANCE
    assert watch.health().healthy
    assert watch.health().last_polled_seconds_ago == DEFAULT_TOLERANCE.total_seconds()
    now.at += timedelta(seconds=1)
    assert watch.health().status == "unresponsive"
    polled[0] = now.at
    watch.stopping()
    assert watch.health().status == "stopping"


def test_a_poll_from_before_serving_began_does_not_count() -> None:
    now = _Now()
    watch = Watch(now=now)
    stale = T0 - timedelta(hours=1)
    watch.serving(lambda: stale)
    assert watch.health().healthy  # measured from when serving began
    now.at += DEFAULT_TOLERANCE + timedelta(seconds=1)
    assert watch.health().status == "unresponsive"


def test_a_slow_poller_widens_the_tolerance_to_three_polls() -> None:
    now = _Now()
    watch = Watch(now=now)
    watch.serving(lambda: T0, timedelta(seconds=20))
    assert watch.tolerance == timedelta(seconds=60)
    now.at += timedelta(seconds=60)
    assert watch.health().healthy
    now.at += timedelta(seconds=1)
    assert not watch.health().healthy


def test_the_server_answers_health_only_and_nothing_else() -> None:
    now = _Now()
    watch = Watch(now=now)
    server = HealthServer(watch, "127.0.0.1", 0).start()
    port = server.port
    try:
        assert _get(port) == (
            503,
            {"status": "starting", "last_polled_seconds_ago": None, "tolerance_seconds": 10.0},
        )
        watch.serving(lambda: T0)
        assert _get(port)[0] == 200
        for path, method in (("/shutdown", "POST"), ("/", "GET"), ("/health/../x", "GET")):
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert refused.value.code in (404, 501), path
    finally:
        server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_real_worker_turns_unhealthy_when_its_prefect_server_dies(
    tmp_path: Path, prefect_database: Path
) -> None:
    seed_prefect_home(tmp_path / "data" / "prefect", prefect_database)
    port = _free_port()
    env = _environment(
        tmp_path,
        SOP_ENGINE_WORKER_HEALTH_PORT=str(port),
        PREFECT_RUNNER_POLL_FREQUENCY="2",  # tolerance: the 10 s floor
    )
    log = tmp_path / "worker.log"
    answers: list[str] = []

    def status() -> str:
        try:
            code, body = _get(port)
        except OSError:
            return "down"
        answers.append(f"{code} {body['status']}")
        return str(body["status"])

    with _worker(env, log) as worker:
        _wait_for(lambda: status() == "ok", 90, "a healthy worker", log)
        assert set(answers) <= {"503 starting", "200 ok"}, answers
        found = re.search(rb"local Prefect server \(pid (\d+)\)", log.read_bytes())
        assert found is not None
        os.killpg(int(found.group(1)), signal.SIGKILL)
        killed = time.monotonic()
        _wait_for(lambda: status() in ("unresponsive", "down"), 30, "an unhealthy worker", log)
        assert time.monotonic() - killed <= 10 + 2 + 5  # tolerance, one poll, slack
        assert worker.poll() is None or status() == "down"


def test_a_health_port_in_use_stops_the_worker_with_one_line(tmp_path: Path) -> None:
    import subprocess

    from .test_worker import SOP_ENGINE

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _environment(tmp_path, SOP_ENGINE_WORKER_HEALTH_PORT=str(port))
        done = subprocess.run(
            [str(SOP_ENGINE), "worker"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 1
    assert f"SOP_ENGINE_WORKER_HEALTH_PORT: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
