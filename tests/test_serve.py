"""``sop-engine serve`` as an operator runs it: the API (and the worker) on embedded defaults,
a clean stop on SIGTERM, no process left behind. Each test cleans up every process it starts.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

SOP_ENGINE = Path(sys.executable).parent / "sop-engine"
PREFECT_SERVER_PID = re.compile(rb"local Prefect server \(pid (\d+)\)")
WORKER_PID = re.compile(rb"worker started \(pid (\d+)\)")


def _environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This machine's environment without any SOP_ENGINE_* or PREFECT_* setting of its own,
    with the data folder and Prefect's home in ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOP_ENGINE_", "PREFECT_"))}
    env.update(
        {
            "SOP_ENGINE_DATA_DIR": str(tmp_path / "data"),
            "PREFECT_HOME": str(tmp_path / "prefect-client"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _tail(log: Path) -> str:
    return "\n".join(log.read_text("utf-8", errors="replace").splitlines()[-40:])


def _wait_for(check: Callable[[], object], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout:g} s; the output ends:\n{_tail(log)}")
        time.sleep(0.25)


LOOPBACK_HTTP = httpx.Client(timeout=2)
"""One client for every poll: a new one builds a TLS context each time, 24 ms of CPU, which
at ten polls a second was a quarter of a core per waiting test."""


def _healthy(base: str) -> bool:
    try:
        return LOOPBACK_HTTP.get(f"{base}/health").status_code == httpx.codes.OK
    except httpx.TransportError:
        return False


TREE_MARKER = "SOP_ENGINE_TEST_TREE"
"""A variable every process a test starts passes on to its own children, and to theirs:
what finds the whole tree in ``/proc``, orphans included."""


@dataclass(frozen=True, slots=True)
class Member:
    pid: int
    command: str


def _tree(marker: str) -> list[Member]:
    """The live (not zombie) processes carrying ``marker``."""
    found: list[Member] = []
    if not Path("/proc").is_dir():  # not Linux: the tree cannot be found, only its root
        return found
    needle = f"{TREE_MARKER}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:  # gone meanwhile, or not ours
            continue
        if state not in {"Z", "X"}:
            found.append(Member(int(entry.name), command.decode(errors="replace")))
    return found


@contextmanager
def _launched(
    env: dict[str, str], log: Path, *args: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``sop-engine ARGS`` with its whole tree marked, its output in ``log``: the marker and
    the process. Whatever the test leaves alive of the tree is killed."""
    marker = uuid.uuid4().hex
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(SOP_ENGINE), *args],
            env={**env, TREE_MARKER: marker},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield marker, process
        finally:
            for member in _tree(marker):
                with suppress(ProcessLookupError):
                    os.kill(member.pid, signal.SIGKILL)
            if process.poll() is None:
                process.kill()
            process.wait()


@contextmanager
def _serve(env: dict[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``sop-engine serve ARGS``, its output in ``log``; killed, with all it started, if the
    test leaves it running."""
    with _launched(env, log, "serve", *args) as (_, process):
        yield process


def _stop(process: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve did not stop within {timeout:g} s; the output ends:\n{_tail(log)}")


def test_serve_without_worker_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    port, log = _free_port(), tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    with _serve(_environment(tmp_path), log, "--port", str(port), "--no-worker") as process:
        _wait_for(lambda: _healthy(base) or process.poll() is not None, 30, "/health", log)
        assert process.poll() is None, _tail(log)
        openapi = httpx.get(f"{base}/openapi.json", timeout=5)
        assert openapi.status_code == httpx.codes.OK
        assert "/health" in openapi.json()["paths"]
        assert _stop(process, log) == 0, _tail(log)
    text = log.read_text("utf-8")
    assert f"API docs at {base}/docs" in text
    assert "worker started" not in text
    assert (tmp_path / "data" / "sop_engine.sqlite3").is_file()


def test_serve_refuses_a_broken_sop_library(tmp_path: Path) -> None:
    library = tmp_path / "sops"
    library.mkdir()
    (library / "broken.sop.yaml").write_text("key: broken\nversion: 1\n", encoding="utf-8")
    env = _environment(tmp_path, SOP_ENGINE_SOP_DIR=str(library))
    result = subprocess.run(
        [str(SOP_ENGINE), "serve", "--port", str(_free_port()), "--no-worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "broken.sop.yaml:1:" in result.stderr
    assert "'title' is a required property" in result.stderr


WALKTHROUGH = re.compile(r"<!-- walkthrough: [^>]*-->\n```sh\n(.*?)```", re.DOTALL)


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's walkthrough uses curl")
def test_the_readmes_curl_walkthrough_runs_against_serve(tmp_path: Path) -> None:
    """The README's block, as a newcomer would paste it, against ``sop-engine serve``."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")
    found = WALKTHROUGH.search(readme)
    assert found is not None, "the README has lost its walkthrough block"
    script = found.group(1).replace(".venv/bin/sop-engine", str(SOP_ENGINE))
    port, log = _free_port(), tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    env = _environment(tmp_path, API=base)
    with _serve(env, log, "--port", str(port), "--no-worker") as process:
        _wait_for(lambda: _healthy(base) or process.poll() is not None, 30, "/health", log)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert _stop(process, log) == 0, _tail(log)
    out = result.stdout
    assert '"state":"return_referral.acknowledged"' in out
    assert '"safe_contact_method":"text_message"' in out  # the disclosed read
    assert "'ok': True" in out  # the timeline verified
    assert '"action":"disclosed.read"' in out
