"""Recent results of an expensive read, for reads that may be a little old: deadline
compliance counts every task of the database, about half a second with 100,000 referrals on
a small machine, too much to pay on every request of a dashboard that many people watch.

:class:`Recent` computes a value at most once per ``max_age`` for each key:

- the **first** request for a key computes it, and requests for the same key meanwhile wait
  for that one computation instead of starting their own;
- a request within ``max_age`` of the computation gets the value as computed;
- a request after that still gets it at once, and starts **one** computation of the next
  value in a background thread, which replaces it when done (stale while revalidating): no
  request but the first pays for a computation. A background computation that fails is
  logged (its exception type and the first line of its message, or of the database's for a
database error: never the statement or its values) and the old value stays until the next attempt.

A value must say when it was computed (compliance reports carry ``as_of``), since it may be
up to ``max_age`` plus one computation old. At most ``size`` keys are kept, the least
recently used dropped first, so that requests with ever new parameters cannot fill memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Recent"]

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class _Entry(Generic[V]):
    value: V
    computed: float


class Recent(Generic[K, V]):
    """Values of ``compute`` by key, recomputed when older than ``max_age`` seconds (module
    docstring); ``now`` is a monotonic clock in seconds."""

    def __init__(
        self,
        compute: Callable[[K], V],
        max_age: float,
        *,
        size: int = 64,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.compute, self.max_age, self.size, self._now = compute, max_age, size, now
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._first: dict[K, threading.Lock] = {}
        self._refreshing: set[K] = set()

    def get(self, key: K) -> V:
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    if self._now() - entry.computed >= self.max_age:
                        self._refresh_in_background(key)
                    return entry.value
                first = self._first.setdefault(key, threading.Lock())
            with first:  # one first computation per key; the others wait for it
                with self._lock:
                    if key in self._entries:
                        continue  # computed while this request waited
                try:
                    value = self.compute(key)
                finally:
                    with self._lock:
                        self._first.pop(key, None)
                self._store(key, value)
                return value

    def _refresh_in_background(self, key: K) -> None:
        """Start the key's next computation, unless one runs already (holding the lock)."""
        if key in self._refreshing:
            return
        self._refreshing.add(key)
        threading.Thread(
            target=self._refresh, args=(key,), name="recent-refresh", daemon=True
        ).start()

    def _refresh(self, key: K) -> None:
        try:
            value = self.compute(key)
        except Exception as exc:
            cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            log.error(
                "recomputing a recent result failed (%s: %s); the previous one is kept",
                type(exc).__name__,
                cause[0] if cause else "",
            )
        else:
            self._store(key, value)
        finally:
            with self._lock:
                self._refreshing.discard(key)

    def _store(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = _Entry(value, self._now())
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
