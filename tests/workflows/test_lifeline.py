"""Children that end with their parent (:mod:`workflows.lifeline`), tried with real processes:
a parent started by the test starts a child, the test kills the parent with SIGKILL and
watches the child. A child started without the lifeline is the control: it stays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest

from workflows.lifeline import WORKER_PID_VARIABLE, main

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="parent-death signals are Linux's"
)

SLEEPER = "import time; print('up', flush=True); time.sleep(60)"

PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from workflows.lifeline import WORKER_PID_VARIABLE, bound_to_this_process
    how, child = sys.argv[1], [sys.executable, "-c", sys.argv[2]]
    env = dict(os.environ, **{WORKER_PID_VARIABLE: str(os.getpid())})
    if how == "bound":
        child = bound_to_this_process(child)
    process = subprocess.Popen(child, env=env, stdout=sys.stdout)
    print(process.pid, flush=True)
    time.sleep(60)
    """
)
"""Starts ``argv[2]`` (Python) as a child, ``bound`` or not, the way serve and the worker do
(and sets the worker's variable for it, as the worker does for its flow runs)."""

BINDS_ITSELF = "from workflows.lifeline import bind_to_worker; bind_to_worker(); " + SLEEPER


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in {"Z", "X"}
    except FileNotFoundError:
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@contextmanager
def _family(how: str, child: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """The parent and its child's pid, once the child is up; both killed afterwards."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, how, child],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    try:
        assert parent.stdout.readline().strip() == "up"
        yield parent, pid
    finally:
        for each in (parent.pid, pid):
            with suppress(ProcessLookupError):
                os.kill(each, signal.SIGKILL)
        parent.wait()


@pytest.mark.parametrize(
    ("how", "child"),
    [("bound", SLEEPER), ("binds itself", BINDS_ITSELF)],
    ids=["launched bound", "flow run binding itself"],
)
def test_a_bound_child_ends_when_its_parent_is_killed(how: str, child: str) -> None:
    with _family(how, child) as (parent, pid):
        parent.kill()
        parent.wait()
        assert _gone_within(pid, 5), "the child outlived its parent"


def test_an_unbound_child_outlives_its_parent_which_is_what_the_lifeline_prevents() -> None:
    with _family("plain", SLEEPER) as (parent, pid):
        parent.kill()
        parent.wait()
        assert not _gone_within(pid, 1)


def test_the_launcher_keeps_the_pid_and_the_command() -> None:
    """serve logs the worker's pid, the worker its server's: the launcher becomes the child."""
    program = (
        "import os, subprocess, sys\n"
        "from workflows.lifeline import bound_to_this_process\n"
        "command = bound_to_this_process([sys.executable, '-c', 'import os; print(os.getpid())'])\n"
        "process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)\n"
        "print(process.pid, process.communicate()[0].strip(), process.returncode)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=30
    )
    launched, reported, code = done.stdout.split()
    assert launched == reported
    assert code == "0"


def test_the_launcher_does_not_start_a_child_whose_parent_is_already_gone() -> None:
    """Not the parent it names (that one died before the child could bind): exit 3."""
    done = subprocess.run(
        [sys.executable, "-m", "workflows.lifeline", "1", "/bin/echo", "started"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert (done.returncode, done.stdout) == (3, "")


def test_the_launcher_says_how_to_call_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["not-a-pid", "/bin/true"]) == 2
    assert "usage: python -m workflows.lifeline PARENT_PID COMMAND..." in capsys.readouterr().err


def test_a_flow_run_whose_worker_is_already_gone_ends_at_once() -> None:
    """Its worker variable names a process that is not its parent any more."""
    env = dict(os.environ, **{WORKER_PID_VARIABLE: str(os.getppid() + 999_999)})
    done = subprocess.run(
        [sys.executable, "-c", BINDS_ITSELF], env=env, capture_output=True, timeout=30, check=False
    )
    assert done.returncode == -signal.SIGTERM
    assert done.stdout == b""  # ended before its work began


def test_outside_a_worker_binding_is_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if k != WORKER_PID_VARIABLE}
    program = "from workflows.lifeline import bind_to_worker; bind_to_worker(); print('ran')"
    done = subprocess.run(
        [sys.executable, "-c", program],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "ran\n")
