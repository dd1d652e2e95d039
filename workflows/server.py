"""A Prefect server of the worker's own, for when no ``PREFECT_API_URL`` names one.

Prefect's scheduler runs only in a real server (its ephemeral mode refuses to schedule), so
the embedded default starts ``prefect server start`` as a subprocess: on the loopback
interface, with its home and SQLite database in a folder of ours, its output in
``server.log`` there. :func:`wait_until_healthy` waits, for a bounded time, until the API's
``/health`` answers; it serves an external server's check as well.

>>> with LocalPrefectServer(data_dir / "prefect") as server:   # doctest: +SKIP
...     server.api_url                                           # http://127.0.0.1:PORT/api
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

from workflows.lifeline import bound_to_this_process

__all__ = [
    "LOOPBACK",
    "LocalPrefectServer",
    "PrefectServerError",
    "free_port",
    "shown_url",
    "wait_until_healthy",
]

LOOPBACK = "127.0.0.1"
STOP_TIMEOUT_SECONDS = 15.0
_LOG_TAIL_LINES = 20


class PrefectServerError(RuntimeError):
    """The Prefect server did not start, or does not answer."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on now (the server may still lose it to a faster process,
    and then says so in its log)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def shown_url(url: str) -> str:
    """``url`` without a user name or password, for messages and logs."""
    return str(httpx.URL(url).copy_with(userinfo=b""))


def wait_until_healthy(
    api_url: str, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Return once ``GET {api_url}/health`` answers 200.

    :raises PrefectServerError: after ``timeout`` seconds, or as soon as ``process`` (the
        server, when we started it) has exited.
    """
    deadline = time.monotonic() + timeout
    last_problem = "no answer yet"
    with httpx.Client(timeout=2.0) as client:
        while True:
            if process is not None and process.poll() is not None:
                raise PrefectServerError(
                    f"the Prefect server exited with code {process.returncode} before it answered"
                )
            try:
                response = client.get(f"{api_url}/health")
                if response.status_code == httpx.codes.OK:
                    return
                last_problem = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                last_problem = type(exc).__name__
            if time.monotonic() >= deadline:
                shown = shown_url(api_url)
                raise PrefectServerError(
                    f"the Prefect server at {shown} did not answer {shown}/health within "
                    f"{timeout:g} s ({last_problem})"
                )
            time.sleep(0.25)


class LocalPrefectServer:
    """``prefect server start`` on ``127.0.0.1:port`` (a free port when ``port`` is 0), with
    ``PREFECT_HOME`` and its SQLite database in ``home``.

    The server runs in a session of its own, so that a Ctrl-C meant for the worker does not
    reach it before the worker has stopped serving; :meth:`stop` ends its whole process
    group.
    """

    def __init__(self, home: Path, port: int = 0, *, startup_timeout: float = 60.0) -> None:
        self.home = home.expanduser().resolve()
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._stop_requested = False

    @property
    def url(self) -> str:
        """Where the Prefect UI is."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def api_url(self) -> str:
        """The value for ``PREFECT_API_URL``."""
        return f"{self.url}/api"

    @property
    def database_path(self) -> Path:
        """The server's SQLite database, in its home."""
        return self.home / "prefect.db"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def on_unexpected_exit(self, callback: Callable[[int], object]) -> None:
        """Call ``callback(exit code)``, from a thread of its own, should the server exit
        without :meth:`stop` asking it to (killed, crashed)."""
        process = self._process
        if process is None:
            return

        def watch() -> None:
            code = process.wait()
            if not self._stop_requested:
                callback(code)

        threading.Thread(target=watch, name="prefect-server-watch", daemon=True).start()

    def environment(self) -> dict[str, str]:
        """The server's environment: ours, with its home, database, address and quiet
        logging; never a ``PREFECT_API_URL`` (it is the API)."""
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.update(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": (
                    f"sqlite+aiosqlite:///{self.database_path.as_posix()}"
                ),
                "PREFECT_SERVER_API_HOST": LOOPBACK,
                "PREFECT_SERVER_API_PORT": str(self.port),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
            }
        )
        return env

    def start(self) -> None:
        """Start the server and wait until it answers.

        :raises PrefectServerError: when it exits or stays silent for ``startup_timeout``
            seconds; the message ends with the last lines of its log. The server is stopped.
        """
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._stop_requested = False
        self._log = self.log_path.open("ab")
        command = [sys.executable, "-m", "prefect", "server", "start"]
        command += ["--host", LOOPBACK, "--port", str(self.port)]
        self._process = subprocess.Popen(  # noqa: S603 -- our interpreter, fixed arguments
            bound_to_this_process(command),  # SIGTERM, should the worker die without stopping it
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until_healthy(self.api_url, self.startup_timeout, self._process)
        except PrefectServerError as exc:
            self.stop()
            raise PrefectServerError(
                f"{exc}; the end of {self.log_path}:\n{self._tail()}"
            ) from None
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Ask the server to stop (SIGTERM), kill it after ``timeout`` seconds; idempotent."""
        self._stop_requested = True
        process, self._process = self._process, None
        if process is not None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """Kill the server's process group at once (SIGKILL), without waiting."""
        self._stop_requested = True
        process = self._process
        if process is not None:
            _signal_group(process, signal.SIGKILL)

    def _tail(self) -> str:
        try:
            lines = self.log_path.read_text("utf-8", errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    """Signal the process group the server leads (it was started in a session of its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
