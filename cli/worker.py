"""``sop-engine worker``: serve the escalation sweep and the outbox dispatch on their intervals.

The worker checks that the engine can start (database reachable and migrated, SOP library
and service directory valid, master key present), finds a Prefect server (the one at
``PREFECT_API_URL``, or one of its own on 127.0.0.1 with its database in
``<data_dir>/prefect``), logs where the Prefect UI is, and serves the deployments until
SIGTERM or SIGINT. Then it stops serving, stops the server it started and exits 0.

Its log lines name flows, intervals and addresses, never a referral.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

import httpx
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from sop_engine.errors import ConfigurationError, DefinitionError
from sop_engine.settings import Settings, get_settings
from workflows.health import HealthServer, Watch
from workflows.lifeline import WORKER_PID_VARIABLE
from workflows.runtime import flow_delivery, flow_runtime
from workflows.server import (
    LocalPrefectServer,
    PrefectServerError,
    shown_url,
    wait_until_healthy,
)

__all__ = ["PREFECT_FOLDER", "STOP_SIGNALS", "WorkerStopping", "run_worker"]

PREFECT_FOLDER = "prefect"
"""The local Prefect server's home, inside the data folder."""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""The signals that stop the worker: :func:`workflows.serving.serve`'s own."""

log = logging.getLogger("sop_engine.worker")


class WorkerStopping(Exception):
    """SIGTERM or SIGINT arrived before the worker began serving."""


@dataclass(frozen=True, slots=True)
class PrefectApi:
    """The Prefect server the worker uses, and whether the worker started it."""

    api_url: str
    ui_url: str
    server_pid: int | None = None
    """The process id of the server the worker started; None for an external server."""

    @property
    def local(self) -> bool:
        return self.server_pid is not None


def run_worker(*, prefect_port: int = 0, startup_timeout: float = 60) -> int:
    """Run the worker until a stop signal; the exit code: 0 when stopped, 1 on a failure
    to start, which it logs.

    The settings come from the environment (:func:`get_settings`), where the flow runs,
    each in a process of its own, read them too. They, the database and the SOP library are
    checked before Prefect is imported (seconds of start-up), so that a broken setting stops
    the worker at once.
    """
    _configure_logging()
    watchdog = _Watchdog()
    lost = _ServerLost()
    with _StopSignals(watchdog.arm) as signals, ExitStack() as cleanup:
        cleanup.callback(watchdog.disarm)
        try:
            settings = get_settings()
            watchdog.grace = settings.worker_stop_grace_seconds
            _check_engine()
            watch = Watch()
            health = _health_server(settings, watch)
            if health is not None:
                cleanup.callback(health.stop)
            with _prefect_api(settings, prefect_port, startup_timeout, lost, watchdog) as api:
                try:
                    _serve(settings, api, watch, watchdog)
                finally:
                    signals.stopping = True
                log.info("stopped serving")
        except WorkerStopping as exc:
            if lost.code is None:
                log.info("%s before serving began; stopping", exc)
        except httpx.HTTPError as exc:  # the Prefect server went away while we registered
            if lost.code is None:
                log.error("the Prefect server stopped answering: %s", exc)
                return 1
        except (PrefectServerError, ConfigurationError, ValidationError) as exc:
            log.error("cannot start the worker: %s", exc)
            return 1
        except DefinitionError as exc:
            log.error("cannot start the worker: %s", exc.report())
            return 1
        except SQLAlchemyError as exc:
            log.error("cannot use the database: %s", getattr(exc, "orig", None) or exc)
            return 1
    if lost.code is not None:
        log.error("the local Prefect server exited (code %d); the worker stopped", lost.code)
        return 1
    log.info("worker stopped")
    return 0


def _serve(settings: Settings, api: PrefectApi, watch: Watch, watchdog: _Watchdog) -> None:
    """Serve the deployments on ``api`` until a stop signal."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from workflows.deployments import deployments
    from workflows.serving import serve

    where = f"a local Prefect server (pid {api.server_pid})"
    where = where if api.local else "the Prefect server"
    shown = shown_url(api.api_url), shown_url(api.ui_url)
    log.info("using %s at %s; Prefect UI at %s", where, *shown)
    updates = {PREFECT_API_URL: api.api_url}
    if api.local:
        updates[PREFECT_HOME] = str(_prefect_home(settings))
    with temporary_settings(updates=updates):
        os.environ[WORKER_PID_VARIABLE] = str(os.getpid())  # for bind_to_worker
        served = deployments(settings)
        log.info(
            "serving escalation-sweep every %d s, outbox-dispatch every %d s and "
            "timeline-verification every %d s; stop with SIGTERM or Ctrl-C",
            settings.sweep_interval_seconds,
            settings.dispatch_interval_seconds,
            settings.verify_interval_seconds,
        )
        serve(served, watch=watch, on_stop=watchdog.arm)


class _Watchdog:
    """Bounds the worker's stop: armed by the first stop signal, it kills the local Prefect
    server and ends the process (exit code 1) once ``grace`` seconds have gone by. The flow
    runs, bound to the worker (:func:`workflows.lifeline.bind_to_worker`), get SIGTERM."""

    def __init__(self, grace: float = 20.0) -> None:
        self.grace = grace
        self.on_expiry: Callable[[], object] | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.RLock()  # arm() runs in signal handlers too

    def arm(self) -> None:
        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(self.grace, self._expire)
                self._timer.daemon = True
                self._timer.start()

    def disarm(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def _expire(self) -> None:
        log.error(
            "the worker did not stop within %g s (SOP_ENGINE_WORKER_STOP_GRACE_SECONDS); "
            "killing its Prefect server and flow runs",
            self.grace,
        )
        if self.on_expiry is not None:
            self.on_expiry()
        for handler in log.handlers:
            handler.flush()
        os._exit(1)


class _ServerLost:
    """The exit code of a local Prefect server that died under the worker (killed, crashed),
    which stops the worker as SIGTERM does, and makes it exit 1: without its server it would
    serve nothing, and whoever supervises it restarts both."""

    def __init__(self) -> None:
        self.code: int | None = None

    def __call__(self, code: int) -> None:
        self.code = code
        os.kill(os.getpid(), signal.SIGTERM)


def _health_server(settings: Settings, watch: Watch) -> HealthServer | None:
    """The worker's ``GET /health`` when ``SOP_ENGINE_WORKER_HEALTH_PORT`` is set.

    :raises ConfigurationError: when its address cannot be bound.
    """
    port = settings.worker_health_port
    if port is None:
        return None
    host = settings.worker_health_host
    try:
        return HealthServer(watch, host, port).start()
    except OSError as exc:
        raise ConfigurationError(
            f"SOP_ENGINE_WORKER_HEALTH_PORT: cannot listen on {host}:{port}: {exc.strerror}"
        ) from None


def _check_engine() -> None:
    """Build what the flows will build (and migrate the database), so that a broken setting
    stops the worker now instead of failing every run."""
    runtime = flow_runtime()
    flow_delivery()
    runtime.db.dispose()


@contextmanager
def _prefect_api(
    settings: Settings,
    port: int,
    startup_timeout: float,
    lost: Callable[[int], object],
    watchdog: _Watchdog,
) -> Iterator[PrefectApi]:
    from prefect.settings import get_current_settings

    external = get_current_settings().api.url
    if external:
        api_url = external.rstrip("/")
        wait_until_healthy(api_url, startup_timeout)
        yield PrefectApi(api_url, _ui_url(api_url))
        return
    if settings.environment == "production":
        raise ConfigurationError(
            "PREFECT_API_URL must be set in production: the workers of a cluster share one "
            "Prefect server (prefect server start, on PostgreSQL); a local one per worker is "
            "a laptop's default"
        )
    home = _prefect_home(settings)
    log.info("starting a local Prefect server (home %s)", home)
    with LocalPrefectServer(home, port, startup_timeout=startup_timeout) as server:
        server.on_unexpected_exit(lost)
        watchdog.on_expiry = server.kill
        yield PrefectApi(server.api_url, server.url, server.pid)
        log.info("stopping the local Prefect server")


def _prefect_home(settings: Settings) -> Path:
    return (settings.data_dir / PREFECT_FOLDER).expanduser().resolve()


def _ui_url(api_url: str) -> str:
    from prefect.settings import get_current_settings

    ui_url = get_current_settings().ui_url
    if ui_url:
        return ui_url
    return api_url.removesuffix("/api")


def _configure_logging() -> None:
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


class _StopSignals:
    """SIGTERM and SIGINT during start-up raise :class:`WorkerStopping` (once); while serving,
    :func:`workflows.serving.serve` handles them; after, while the worker cleans up, they are
    ignored, so that a second Ctrl-C cannot leave the Prefect server behind."""

    def __init__(self, on_stop: Callable[[], object]) -> None:
        self.stopping = False
        self._on_stop = on_stop
        self._previous: dict[signal.Signals, Callable[[int, FrameType | None], object] | int] = {}

    def __enter__(self) -> _StopSignals:
        for sig in STOP_SIGNALS:
            previous = signal.getsignal(sig)
            if previous is not None:  # None: set outside Python; nothing to put back
                self._previous[sig] = previous
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping:
            return
        self.stopping = True
        self._on_stop()
        raise WorkerStopping(signal.Signals(signum).name)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
