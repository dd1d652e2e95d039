"""Writers of one process take turns for SQLite's write lock in the order the operating
system wakes them, instead of polling for it.

SQLite gives its one write lock to whoever asks when it is free; a writer that finds it
taken sleeps and asks again, after 1, 2, 5, 10... up to 100 ms, until its busy timeout.
Under a steady stream of writers a waiter can thus be passed over again and again: the
short write of a read (its access-log row) waited more than a second behind eight clients
firing events. :class:`WriterTurns` lets each writer of the process wait on a semaphore
before ``BEGIN IMMEDIATE`` instead, and be woken when the writer before it ends.

It is only a queue in front of SQLite's lock, never a lock of its own that correctness
rests on: writers of other processes still meet SQLite's busy timeout; a writer that waits
longer than that timeout for its turn goes on without one; a connection that begins a
writer while its own thread holds a turn already (a writer inside a writer) goes on without
one, as SQLite's lock then decides. A turn ends when its transaction commits or rolls back,
and, should those be skipped, when its connection goes back to the pool or is closed (as
an invalidated connection is).
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["WriterTurns"]

_TURN = "sop_engine_writer_turn"
"""The key, in a pooled connection's ``info``, of the thread that holds its turn."""


class WriterTurns:
    """One process's queue of SQLite writers for one database (module docstring)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._turn = threading.Semaphore(1)
        self._lock = threading.Lock()
        self._holders: set[int] = set()

    def take(self, info: dict[str, Any]) -> bool:
        """Wait for the turn of the connection whose pool ``info`` this is; False when it goes
        on without one (a writer inside a writer, or no turn within the timeout)."""
        me = threading.get_ident()
        with self._lock:
            if _TURN in info or me in self._holders:
                return False
        if not self._turn.acquire(timeout=self.timeout):
            return False
        with self._lock:
            info[_TURN] = me
            self._holders.add(me)
        return True

    def give_back(self, info: dict[str, Any]) -> None:
        """End the connection's turn, if it holds one; from any thread, any number of times."""
        with self._lock:
            holder = info.pop(_TURN, None)
            if holder is None:
                return
            self._holders.discard(holder)
        self._turn.release()

    @property
    def free(self) -> bool:
        """Whether no writer of this process holds a turn."""
        with self._lock:
            return not self._holders
