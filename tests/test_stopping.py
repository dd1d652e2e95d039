"""Stopping ``sop-engine serve`` at any moment, cleanly or not, leaves no process behind.

Every process of the tree (serve, its worker, the worker's local Prefect server, the flow
runs) inherits a marker in its environment; a test finds them all by it in ``/proc``, even
those a killed parent left to init. SIGTERM at any moment ends the tree with exit code 0
within :data:`STOP_BOUND`; a SIGKILL of serve, of the worker or of the Prefect server ends
the rest of it within the same bound.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.serve import stop_bound
from sop_engine.settings import Settings
from tests.conftest import seed_prefect_home
from tests.test_serve import (
    PREFECT_SERVER_PID,
    WORKER_PID,
    Member,
    _environment,
    _free_port,
    _healthy,
    _launched,
    _tail,
    _tree,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc (Linux)"),
]

STOP_BOUND = stop_bound(Settings.model_fields["worker_stop_grace_seconds"].default)
FLOW_RUN = b"prefect.engine"
"""In a flow run's command line: ``python -m prefect.engine``."""


FIRST_START = b"starting a local Prefect server"
"""The one moment at which a test stops a local Prefect server that is migrating its
database, on its first start."""


@pytest.fixture(autouse=True)
def _migrated_prefect_database(
    request: pytest.FixtureRequest, tmp_path: Path, prefect_database: Path
) -> None:
    """The local Prefect server of each test's data folder starts on a migrated database
    (:func:`tests.conftest.prefect_database`), as every start after a machine's first does,
    except in the test stopping it at :data:`FIRST_START`."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is None or callspec.params.get("moment") != FIRST_START:
        seed_prefect_home(tmp_path / "data" / "prefect", prefect_database)


def _wait_for(check: Callable[[], object], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout:g} s; the output ends:\n{_tail(log)}")
        time.sleep(0.1)


@dataclass
class Tree:
    marker: str
    process: subprocess.Popen[bytes]
    log: Path
    base: str
    worker_health: str

    def members(self) -> list[Member]:
        return _tree(self.marker)

    def logged(self, text: bytes) -> bool:
        return text in self.log.read_bytes()

    def pid(self, pattern: re.Pattern[bytes]) -> int:
        found = pattern.search(self.log.read_bytes())
        assert found is not None, _tail(self.log)
        return int(found.group(1))

    def wait_serving(self) -> None:
        """Until the API answers and the worker's own health says it serves."""
        _wait_for(
            lambda: (
                (_healthy(self.base) and _healthy(self.worker_health))
                or self.process.poll() is not None
            ),
            120,
            "/health of the API and of the worker",
            self.log,
        )
        assert self.process.poll() is None, _tail(self.log)

    def assert_gone_within(self, bound: float) -> None:
        """Every process of the tree ends within ``bound`` seconds."""
        deadline = time.monotonic() + bound
        while (left := self.members()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"left behind after {bound:g} s: {left}\n{_tail(self.log)}"

    def exit_code_within(self, bound: float) -> int:
        try:
            return self.process.wait(bound)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve did not exit within {bound:g} s:\n{_tail(self.log)}")


@contextmanager
def _serve_tree(tmp_path: Path, **settings: str) -> Iterator[Tree]:
    """``sop-engine serve`` with the worker (its health on), its tree marked."""
    port, health, log = _free_port(), _free_port(), tmp_path / "serve.log"
    settings["SOP_ENGINE_WORKER_HEALTH_PORT"] = str(health)
    env = _environment(tmp_path, **settings)
    with _launched(env, log, "serve", "--port", str(port)) as (marker, process):
        base, worker = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{health}"
        yield Tree(marker, process, log, base, worker)


QUIET = {
    "SOP_ENGINE_SWEEP_INTERVAL_SECONDS": "86400",
    "SOP_ENGINE_DISPATCH_INTERVAL_SECONDS": "86400",
}
"""No flow run: they cost seconds of CPU each, and a test that does not stop one needs none."""

BUSY = {
    "SOP_ENGINE_SWEEP_INTERVAL_SECONDS": "3",
    "SOP_ENGINE_DISPATCH_INTERVAL_SECONDS": "86400",
    "PREFECT_RUNNER_POLL_FREQUENCY": "1",
}
"""A sweep starting every 3 s, the runner looking for it every second: a flow run lives
about as long, so one is in flight when the test stops serve. (Both flows every second
kept four runs going at once, a core and a half of CPU for the whole test.)"""


def test_sigterm_with_flow_runs_in_flight_stops_the_whole_tree(tmp_path: Path) -> None:
    with _serve_tree(tmp_path, **BUSY) as tree:
        tree.wait_serving()
        _wait_for(
            lambda: any(FLOW_RUN in m.command.encode() for m in tree.members()),
            60,
            "a flow run in flight",
            tree.log,
        )
        tree.process.send_signal(signal.SIGTERM)
        assert tree.exit_code_within(STOP_BOUND) == 0, _tail(tree.log)
        tree.assert_gone_within(1)
        assert tree.logged(b"worker stopped (exit code 0)"), _tail(tree.log)


@pytest.mark.parametrize(
    "moment",
    [b"worker started", FIRST_START, b"serving escalation-sweep"],
)
def test_sigterm_at_any_moment_of_start_up_stops_the_whole_tree(
    tmp_path: Path, moment: bytes
) -> None:
    with _serve_tree(tmp_path, **QUIET) as tree:
        _wait_for(
            lambda: tree.logged(moment) or tree.process.poll() is not None,
            120,
            moment.decode(),
            tree.log,
        )
        tree.process.send_signal(signal.SIGTERM)
        assert tree.exit_code_within(STOP_BOUND) == 0, _tail(tree.log)
        tree.assert_gone_within(1)


def test_sigkill_of_serve_stops_the_worker_and_its_prefect_server(tmp_path: Path) -> None:
    with _serve_tree(tmp_path, **QUIET) as tree:
        tree.wait_serving()
        worker = tree.pid(WORKER_PID)
        assert any(m.pid == worker for m in tree.members())
        tree.process.kill()
        tree.process.wait()
        tree.assert_gone_within(STOP_BOUND)


def test_sigkill_of_the_worker_stops_serve_and_the_prefect_server(tmp_path: Path) -> None:
    with _serve_tree(tmp_path, **QUIET) as tree:
        tree.wait_serving()
        os.kill(tree.pid(WORKER_PID), signal.SIGKILL)
        assert tree.exit_code_within(STOP_BOUND) == 1, _tail(tree.log)
        tree.assert_gone_within(STOP_BOUND)
        assert tree.logged(b"the worker exited with code -9")


@pytest.mark.parametrize("moment", ["registering", "serving"])
def test_sigkill_of_the_prefect_server_stops_the_worker_and_serve(
    tmp_path: Path, moment: str
) -> None:
    with _serve_tree(tmp_path, **QUIET) as tree:
        if moment == "serving":
            tree.wait_serving()
        else:  # logged just before the worker registers its deployments
            _wait_for(lambda: tree.logged(b"serving escalation-sweep"), 120, moment, tree.log)
        os.kill(tree.pid(PREFECT_SERVER_PID), signal.SIGKILL)
        assert tree.exit_code_within(STOP_BOUND) == 1, _tail(tree.log)
        tree.assert_gone_within(1)
        assert tree.logged(b"the local Prefect server exited (code -9); the worker stopped")
        assert not tree.logged(b"Traceback"), _tail(tree.log)


def test_a_worker_that_outlasts_its_grace_is_ended_with_its_prefect_server(
    tmp_path: Path,
) -> None:
    grace = 3
    with _serve_tree(tmp_path, **QUIET, SOP_ENGINE_WORKER_STOP_GRACE_SECONDS=str(grace)) as tree:
        tree.wait_serving()
        os.kill(tree.pid(PREFECT_SERVER_PID), signal.SIGSTOP)  # a hung server: stops no more
        tree.process.send_signal(signal.SIGTERM)
        assert tree.exit_code_within(stop_bound(grace)) == 0, _tail(tree.log)
        tree.assert_gone_within(1)
        assert tree.logged(f"the worker did not stop within {grace} s".encode())
        assert tree.logged(b"worker stopped (exit code 1)")


def test_sigkill_of_a_worker_on_its_own_ends_its_flow_runs_and_prefect_server(
    tmp_path: Path,
) -> None:
    """No serve above it to clean up: what the worker started ends by itself."""
    log = tmp_path / "worker.log"
    with _launched(_environment(tmp_path, **BUSY), log, "worker") as (marker, worker):
        tree = Tree(marker, worker, log, "", "")
        _wait_for(
            lambda: any(FLOW_RUN in m.command.encode() for m in tree.members()),
            120,
            "a flow run in flight",
            log,
        )
        worker.kill()
        worker.wait()
        tree.assert_gone_within(STOP_BOUND)
