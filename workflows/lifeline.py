"""Child processes that end with the process that started them, however it ends.

A process killed with SIGKILL cannot stop its children; Linux can, though: a child that
asked for a *parent-death signal* (``prctl(PR_SET_PDEATHSIG)``) receives it when its parent
dies. ``serve`` starts its worker, and the worker its local Prefect server, through
:func:`bound_to_this_process`, and the flow runs the worker starts bind themselves with
:func:`bind_to_worker`: so a SIGKILL anywhere in ``serve``'s tree sends SIGTERM one level
down, each child stops as it does on SIGTERM, and no process is left behind.

The signal fires when the *thread* that started the child ends: start children from the
main thread. Elsewhere than on Linux these are no-ops, and an unclean stop can leave
children behind (production runs on Linux).

``python -m workflows.lifeline PARENT_PID COMMAND...`` is the launcher
:func:`bound_to_this_process` writes: it asks for the signal, checks that ``PARENT_PID`` is
still its parent (the parent may have died before the request), and becomes ``COMMAND``.
It imports nothing but the standard library.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

__all__ = [
    "WORKER_PID_VARIABLE",
    "bind_to_worker",
    "bound_to_this_process",
    "die_with_parent",
    "main",
]

WORKER_PID_VARIABLE = "SOP_ENGINE_WORKER_PID"
"""Set by the worker for the flow runs it starts: the process id they bind to."""

_PR_SET_PDEATHSIG = 1
_PARENT_GONE = 3
"""The launcher's exit code when its parent died before it could bind to it."""


def die_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Ask for ``signum`` when the parent dies; False where that cannot be asked (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)  # the interpreter's own symbols, libc's among them
    if libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    return True


def bound_to_this_process(command: Sequence[str]) -> list[str]:
    """``command`` run so that it receives SIGTERM when this process dies (on Linux)."""
    if not sys.platform.startswith("linux"):
        return list(command)
    return [sys.executable, "-m", "workflows.lifeline", str(os.getpid()), *command]


def bind_to_worker() -> None:
    """In a flow run the worker started: SIGTERM when the worker dies, and an exit now when
    it already has. Nothing outside a worker's flow run (no ``SOP_ENGINE_WORKER_PID``)."""
    worker = os.environ.get(WORKER_PID_VARIABLE)
    if not worker or not worker.isdigit():
        return
    if die_with_parent() and os.getppid() != int(worker):
        # Started by that worker, now somebody else's child: the worker is gone.
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: Sequence[str]) -> int:  # noqa: RET503 -- execv does not return
    """The launcher: ``PARENT_PID COMMAND...``; replaces this process with ``COMMAND``."""
    if len(argv) < 2 or not argv[0].isdigit():
        print("usage: python -m workflows.lifeline PARENT_PID COMMAND...", file=sys.stderr)
        return 2
    die_with_parent()
    if os.getppid() != int(argv[0]):
        return _PARENT_GONE
    command = list(argv[1:])
    os.execv(command[0], command)  # noqa: S606 -- the parent's own fixed command


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
