"""``sop-engine serve``: the whole engine on its embedded defaults, in one command.

It migrates the database (by default SQLite in ``SOP_ENGINE_DATA_DIR``), loads the SOP
library (and stops with the validation report when the library is broken), starts
``sop-engine worker`` as a subprocess in a session of its own (the same code path as the
``worker`` command, so a local Prefect server unless ``PREFECT_API_URL`` names one), and
serves the API with uvicorn. On SIGTERM or SIGINT it stops uvicorn, then the worker
(SIGTERM, a bounded wait, then SIGKILL), and exits 0.

In production the API and the worker run as separate processes (``--no-worker`` here, and
``sop-engine worker`` elsewhere); this command runs both side by side.

Its log lines name addresses, process ids and counts, never a referral: uvicorn's access
log, which would show case codes in paths and the clients' addresses, is off.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from api.app import create_app
from api.auth_limits import FailedAuthLimit
from api.oidc import BearerAuth
from notifications.catalogue import template_names
from sop_engine.clock import SystemClock
from sop_engine.directory import ServiceDirectory, load_directory
from sop_engine.directory.managed import ManagedDirectory
from sop_engine.errors import ConfigurationError, DefinitionError
from sop_engine.language.published import load_library
from sop_engine.master_keys import check_keyring
from sop_engine.persistence.db import make_engine
from sop_engine.persistence.migrate import prepare
from sop_engine.runtime.engine import Runtime
from sop_engine.settings import get_settings
from workflows.lifeline import bound_to_this_process

__all__ = [
    "API_STOP_TIMEOUT_SECONDS",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "WORKER_KILL_MARGIN_SECONDS",
    "build_app",
    "run_serve",
    "stop_bound",
    "worker_command",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
API_STOP_TIMEOUT_SECONDS = 5
"""How long requests in progress may take to end once serve stops."""
WORKER_KILL_MARGIN_SECONDS = 5.0
"""How much longer than its own grace (``SOP_ENGINE_WORKER_STOP_GRACE_SECONDS``) the worker
may take to stop before serve kills its process group."""


def stop_bound(worker_grace: float) -> float:
    """Serve exits within this many seconds of SIGTERM, and the rest of its tree ends within
    it when one of its processes is killed (docs/workflows.md, "Stopping")."""
    return API_STOP_TIMEOUT_SECONDS + worker_grace + WORKER_KILL_MARGIN_SECONDS


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

log = logging.getLogger("sop_engine.serve")

_Handler = Callable[[int, FrameType | None], object] | int | None


class ServeError(Exception):
    """The engine cannot start; the message says why (no personal data)."""


def build_app() -> FastAPI:
    """The API over the settings' runtime: the database migrated, the SOP library loaded
    (the files and the versions published through the API), the service directory read
    (its files and the entries kept through the API).

    :raises ServeError: when a setting, the database, the SOP library or the service
        directory is unusable.
    """
    settings = get_settings()
    templates = template_names()
    try:
        auth = BearerAuth.from_settings(settings)
        single_coordinator = settings.resolved_single_coordinator()
        engine = make_engine(settings.resolved_database_url())
    except ConfigurationError as exc:
        raise ServeError(str(exc)) from None
    shown = engine.url.render_as_string(hide_password=True)
    try:
        prepare(engine, migrate=settings.environment != "production")
        library = load_library(engine, [settings.sop_dir], templates)
        keyring = settings.keyring()
        check_keyring(engine, keyring, datetime.now(UTC))
    except DefinitionError as exc:
        engine.dispose()
        raise ServeError(
            f"the SOP library in {settings.sop_dir} is broken:\n{exc.report()}"
        ) from None
    except ConfigurationError as exc:
        engine.dispose()
        raise ServeError(str(exc)) from None
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = getattr(exc, "orig", None) or exc
        raise ServeError(f"cannot use the database at {shown}: {reason}") from None
    log.info("database %s is up to date; %d SOP(s) loaded", shown, len(list(library)))
    directory = _service_directory(engine, settings.resolved_directory_dir())
    max_age = timedelta(seconds=settings.compliance_max_age_seconds)
    runtime = Runtime(
        engine,
        library,
        keyring,
        directory=directory,
        compliance_max_age=max_age,
        refuse_past_review=settings.refuse_sops_past_review,
    )
    token = settings.metrics_token
    return create_app(
        runtime,
        sop_paths=[settings.sop_dir],
        templates=templates,
        max_request_bytes=settings.max_request_bytes,
        auth=auth,
        directory=directory,
        auth_limit=FailedAuthLimit(
            settings.auth_failure_limit, timedelta(seconds=settings.auth_failure_window_seconds)
        ),
        strict_transport_security=settings.environment == "production",
        single_coordinator=single_coordinator,
        sweep_interval=timedelta(seconds=settings.sweep_interval_seconds),
        metrics_token=token.get_secret_value() if token is not None else None,
        metrics_open=settings.environment != "production",
    )


def _service_directory(engine: Engine, folder: Path) -> ServiceDirectory:
    """The directory's files, checked with the entries kept through the API over them."""
    today = SystemClock().now().date()
    try:
        directory = load_directory(folder, today=today)
        ManagedDirectory(engine, directory).snapshot(today)
    except DefinitionError as exc:
        engine.dispose()
        raise ServeError(f"the service directory in {folder} is broken:\n{exc.report()}") from None
    return directory


def worker_command() -> list[str]:
    """``sop-engine worker`` with this interpreter, wherever the console script is."""
    program = "import sys; from cli.main import main; sys.argv[0] = 'sop-engine'; main()"
    return [sys.executable, "-c", program, "worker"]


@dataclass
class _State:
    """What the signal handlers and the worker's watcher share with the main thread."""

    stopping: bool = False
    worker_failed: bool = False
    server: uvicorn.Server | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            if self.server is not None:
                self.server.should_exit = True


def run_serve(*, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, worker: bool = True) -> int:
    """Serve the API (and run the worker beside it) until SIGTERM or SIGINT; the exit code:
    0 when stopped by a signal, 1 when the engine cannot start or the worker stops early."""
    _configure_logging()
    state = _State()
    previous = _install_handlers(state)
    process: subprocess.Popen[bytes] | None = None
    try:
        try:
            app = build_app()
        except ServeError as exc:
            log.error("cannot start: %s", exc)
            return 1
        except ValidationError as exc:
            log.error("cannot start: the settings are invalid: %s", exc)
            return 1
        if state.stopping:
            return 0
        if worker:
            process = _start_worker()
            threading.Thread(
                target=_watch_worker, args=(process, state), name="worker-watch", daemon=True
            ).start()
        else:
            log.info("not starting the worker (--no-worker)")
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="info",
            access_log=False,
            timeout_graceful_shutdown=API_STOP_TIMEOUT_SECONDS,
        )
        server = uvicorn.Server(config)
        with state.lock:
            state.server = server
            stopped_early = state.stopping
        if not stopped_early:
            log.info("API docs at http://%s:%d/docs; stop with SIGTERM or Ctrl-C", host, port)
            server.run()
        state.stop()  # uvicorn re-raises the signal it caught, which our handler takes
        if not server.started and not stopped_early and not state.worker_failed:
            log.error("the API did not start on %s:%d", host, port)
            return 1
    finally:
        state.stop()
        if process is not None:
            _stop_worker(process, get_settings().worker_stop_grace_seconds)
        _restore_handlers(previous)
    if state.worker_failed:
        return 1
    log.info("stopped")
    return 0


def _start_worker() -> subprocess.Popen[bytes]:
    # A session of its own: a Ctrl-C at the terminal reaches only us, and we stop the worker
    # in order, after the API. Its output goes where ours goes.
    # Bound to us: should we die without stopping it (SIGKILL), it gets SIGTERM.
    process = subprocess.Popen(  # noqa: S603 -- our interpreter, fixed arguments
        bound_to_this_process(worker_command()), stdin=subprocess.DEVNULL, start_new_session=True
    )
    log.info("worker started (pid %d); it logs when it is serving", process.pid)
    return process


def _watch_worker(process: subprocess.Popen[bytes], state: _State) -> None:
    """Stop the API when the worker exits on its own: a half-running engine would leave
    deadlines unescalated and messages undelivered without anyone noticing."""
    code = process.wait()
    with state.lock:
        if state.stopping:
            return
        state.worker_failed = True
    log.error("the worker exited with code %d; stopping the API", code)
    state.stop()


def _stop_worker(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, then SIGKILL to the worker's process group (its flow runs; its Prefect server,
    in a session of its own, gets SIGTERM as the worker dies) should it outlast its grace."""
    if process.poll() is None:
        log.info("stopping the worker (pid %d)", process.pid)
        with suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        timeout = grace + WORKER_KILL_MARGIN_SECONDS
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the worker did not stop within %g s; killing it", timeout)
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with suppress(ProcessLookupError, PermissionError):  # flow runs it may have left
        os.killpg(process.pid, signal.SIGKILL)
    log.info("worker stopped (exit code %d)", process.returncode)


def _install_handlers(state: _State) -> dict[signal.Signals, _Handler]:
    def handle(_signum: int, _frame: FrameType | None) -> None:
        state.stop()

    previous: dict[signal.Signals, _Handler] = {}
    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, handle)
    return previous


def _restore_handlers(previous: dict[signal.Signals, _Handler]) -> None:
    for sig, handler in previous.items():
        if handler is not None:  # None: set outside Python; nothing to put back
            signal.signal(sig, handler)


def _configure_logging() -> None:
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
