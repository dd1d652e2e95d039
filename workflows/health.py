"""The worker's own health: ``GET /health`` on ``SOP_ENGINE_WORKER_HEALTH_HOST:PORT``.

It answers 200 while the worker polls its Prefect server for the runs it serves, and 503
when the last successful poll is older than the tolerance (the Prefect server is gone or
unreachable, or the worker's event loop is stuck), while it starts (before its deployments
are registered) and once it is stopping. A liveness probe restarts a worker that stays 503;
whether escalations actually happen is ``GET /ready`` on the API, which reads the sweep's
last success from the database.

The server is the standard library's, in a daemon thread of its own, so that it answers
even when the event loop it watches does not (that is what it reports), and it has nothing
to do with Prefect's runner webserver, whose ``POST /shutdown`` anyone reaching the port
could call. It serves ``GET /health`` and nothing else: no case data, no control.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

__all__ = ["DEFAULT_TOLERANCE", "Health", "HealthServer", "Watch"]

log = logging.getLogger("sop_engine.worker")

DEFAULT_TOLERANCE = timedelta(seconds=10)
"""How old the last successful poll may be, at least; a runner widens it to three of its
polls (Prefect polls every 10 s by default: 30 s)."""

Phase = Literal["starting", "serving", "stopping"]


@dataclass(frozen=True, slots=True)
class Health:
    """What ``GET /health`` answers: ``ok`` only while serving and polling in time."""

    status: Literal["ok", "starting", "unresponsive", "stopping"]
    last_polled_seconds_ago: float | None

    @property
    def healthy(self) -> bool:
        return self.status == "ok"


class Watch:
    """The worker's phase and a view of its runner's last successful poll, read by the
    server's thread. ``last_polled`` is None until the runner is known."""

    def __init__(
        self,
        tolerance: timedelta = DEFAULT_TOLERANCE,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.tolerance = tolerance
        self._now = now
        self._lock = threading.Lock()
        self._phase: Phase = "starting"
        self._since = now()
        self._last_polled: Callable[[], datetime | None] = lambda: None

    def serving(
        self, last_polled: Callable[[], datetime | None], poll_every: timedelta | None = None
    ) -> None:
        """The runner started: from now on its polls decide (the first within tolerance).
        A runner polling less often than every third of the tolerance widens it to three
        of its polls."""
        with self._lock:
            if poll_every is not None:
                self.tolerance = max(self.tolerance, 3 * poll_every)
            self._phase = "serving"
            self._since = self._now()
            self._last_polled = last_polled

    def stopping(self) -> None:
        with self._lock:
            self._phase = "stopping"

    def health(self) -> Health:
        with self._lock:
            phase, since, last_polled = self._phase, self._since, self._last_polled
        now = self._now()
        polled = last_polled()
        age = (now - polled).total_seconds() if polled is not None else None
        if phase != "serving":
            return Health(phase, age)
        waited = now - (polled if polled is not None and polled > since else since)
        return Health("ok" if waited <= self.tolerance else "unresponsive", age)


class HealthServer:
    """``GET /health`` over ``watch`` on ``host:port`` (0: a free port, see :attr:`port`),
    in a daemon thread, from :meth:`start` to :meth:`stop`.

    :raises OSError: from :meth:`start` when the address cannot be bound.
    """

    def __init__(self, watch: Watch, host: str, port: int) -> None:
        self.watch = watch
        self._address = (host, port)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        watch = self.watch

        class Handler(BaseHTTPRequestHandler):
            server_version = "sop-engine-worker"
            sys_version = ""

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/health":
                    self._answer(404, {"error": "not_found", "message": "only GET /health"})
                    return
                health = watch.health()
                body: dict[str, Any] = {
                    "status": health.status,
                    "last_polled_seconds_ago": health.last_polled_seconds_ago,
                    "tolerance_seconds": watch.tolerance.total_seconds(),
                }
                self._answer(200 if health.healthy else 503, body)

            def _answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would drown the worker's own lines

        self._server = ThreadingHTTPServer(self._address, Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="worker-health", daemon=True
        )
        self._thread.start()
        host = self._address[0]
        log.info("worker health at http://%s:%d/health", host, self.port)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None
