"""Events per second through the API's fire route, against a bare FastAPI endpoint.

Two uvicorn processes serve the same database, each on a free loopback port, with the same
settings (as ``sop-engine serve``: one process, no access log, uvicorn's default event loop
and HTTP parser):

- ``api``: the real application, :func:`api.app.create_app`. Each client fires
  ``POST /referrals/{case_code}/events/volley`` with its own user's bearer token, so every
  request pays for the token lookup, the permission table, the read of the referral that
  checks the user's agency takes part in it, ``Runtime.fire``, the response model and the
  error mapping;
- ``bare``: a FastAPI application with one endpoint at the same path that calls
  ``Runtime.fire`` with the same event on a referral of its own and answers a small JSON
  object: no authentication, permission check, request or response models, error mapping.

Both processes run ``Runtime.fire`` on a system clock, as a served engine does. The clients
are threads of this process (so they do not share the servers' interpreter lock), one
keep-alive ``http.client`` connection each, each firing ``volley`` round-robin over its own
referrals of ``bench.pingpong`` (one set per side), so that no two requests race on a
referral. The standard library's client costs the clients less time per request than httpx,
and a client that is slow would make both sides look alike. Repetitions alternate between
the sides; each figure is the median. For scale, the clients also fire at an endpoint of the
bare application that does nothing (``ceiling``): what uvicorn, FastAPI and the clients
manage with no database at all.

Afterwards every timeline must verify and hold exactly as many transitions as the clients
got 200 answers for.

A server runs as ``python -m bench.api_fire SIDE`` with the database URL in the environment
(:data:`URL_VARIABLE`, so that a password never shows in the process list); it prints its
port, and stops when its standard input closes, so that it also stops if the benchmark dies.
"""

from __future__ import annotations

import http.client
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, func
from sqlalchemy import select as sql_select

from api.users import create_user
from bench.common import (
    ACTOR,
    EVENT,
    SOP_DIR,
    SOP_KEY,
    case_code,
    load_library,
    make_runtime,
    seed_referrals,
)
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.persistence import tables
from sop_engine.persistence.db import make_engine
from sop_engine.persistence.migrate import upgrade
from sop_engine.runtime.engine import Runtime

__all__ = [
    "URL_VARIABLE",
    "ApiFire",
    "ApiPlan",
    "Server",
    "bare_app",
    "measure_api_fire",
    "serve",
    "serve_app",
]

ROOT = Path(__file__).resolve().parents[1]
URL_VARIABLE = "BENCH_API_FIRE_DATABASE_URL"
SIDES = ("api", "bare")
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 30.0
NOOP_EVENT = "nothing"

_T = tables.timeline_entries
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ApiPlan:
    clients: int = 8
    """Concurrent clients, one connection each."""
    referrals: int = 4
    """Per client and side; each client fires round-robin over its own."""
    warmup: int = 200
    """Events per side before measuring."""
    events: int = 600
    """Per side and repetition, shared equally among the clients."""
    repetitions: int = 7


@dataclass(frozen=True)
class ApiFire:
    api: float
    bare: float
    api_runs: list[float]
    bare_runs: list[float]
    api_cpu_ms: float
    """Processor time of the API's server process per event, over all repetitions."""
    bare_cpu_ms: float
    ceiling: float
    """Requests per second to the bare application's endpoint that does nothing."""
    timelines_verified: int
    transitions: int

    @property
    def ratio(self) -> float:
        return self.api / self.bare


def measure_api_fire(url: str, plan: ApiPlan) -> ApiFire:
    """Migrate and seed the empty database at ``url``, serve both sides from it and time
    them (module docstring)."""
    per_side = plan.clients * plan.referrals
    library = load_library()
    engine = make_engine(url)
    try:
        upgrade(engine)
        sop = library.get(SOP_KEY)
        seed_referrals(engine, sop, per_side, first=0)
        seed_referrals(engine, sop, per_side, first=per_side)
        tokens = [_new_token(engine, i) for i in range(plan.clients)]
        with ExitStack() as stack:
            servers: list[Server] = []
            for side in SIDES:
                servers.append(Server(url, side))
                stack.callback(servers[-1].stop)
            for server in servers:  # called first, so that they shut down side by side
                stack.callback(server.ask_to_stop)
            api_server, bare_server = servers
            api = _Side(
                api_server,
                [
                    _Client(
                        api_server.port(),
                        _codes(i, plan.referrals, 0),
                        {"Authorization": f"Bearer {t}"},
                    )
                    for i, t in enumerate(tokens)
                ],
            )
            bare = _Side(
                bare_server,
                [
                    _Client(bare_server.port(), _codes(i, plan.referrals, per_side), {})
                    for i in range(plan.clients)
                ],
            )
            stack.callback(api.close)
            stack.callback(bare.close)
            api.run(plan.warmup)
            bare.run(plan.warmup)
            for _ in range(plan.repetitions):
                api.run(plan.events, measured=True)
                bare.run(plan.events, measured=True)
            ceiling = bare.run(plan.events, event=NOOP_EVENT)

        checks = make_runtime(engine, library).verify_timeline()
        broken = [c.case_code for c in checks if not c.ok]
        with engine.connect() as conn:
            transitions = conn.scalar(
                sql_select(func.count()).select_from(_T).where(_T.c.kind == "transition")
            )
    finally:
        engine.dispose()
    if broken or len(checks) != 2 * per_side:
        raise RuntimeError(f"the benchmark broke timelines: {broken[:3]}")
    fired = api.fired + bare.fired
    if transitions != fired:
        raise RuntimeError(f"{fired} events answered 200 but {transitions} transitions recorded")
    return ApiFire(
        statistics.median(api.runs),
        statistics.median(bare.runs),
        api.runs,
        bare.runs,
        api.cpu_ms_per_event,
        bare.cpu_ms_per_event,
        ceiling,
        len(checks),
        transitions,
    )


def _new_token(engine: Engine, index: int) -> str:
    """The bearer token of a new synthetic caseworker at the seeded referrals' agency."""
    user = create_user(engine, f"bench-client-{index}", "caseworker", ACTOR.agency_id)
    return user.token


def _codes(client: int, referrals: int, first: int) -> list[str]:
    start = first + client * referrals
    return [case_code(i) for i in range(start, start + referrals)]


@dataclass
class _Side:
    """One server, its clients, and what they measured."""

    server: Server
    clients: list[_Client]
    runs: list[float] = field(default_factory=list)
    fired: int = 0
    """Events answered 200, warm-up included."""
    measured_events: int = 0
    measured_cpu_s: float = 0.0

    @property
    def cpu_ms_per_event(self) -> float:
        return 1000 * self.measured_cpu_s / self.measured_events

    def run(self, events: int, *, event: str = EVENT, measured: bool = False) -> float:
        """Requests per second with every client sending its share of ``events`` at once."""
        clients = self.clients
        share = max(1, events // len(clients))
        for client in clients:
            client.connect()
        start = threading.Barrier(len(clients) + 1)
        errors: list[BaseException] = []

        def work(client: _Client) -> None:
            try:
                start.wait()
                client.fire(share, event)
            except BaseException as exc:  # raised again by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in clients]
        for thread in threads:
            thread.start()
        cpu = self.server.cpu_seconds()
        start.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        cpu = self.server.cpu_seconds() - cpu
        if errors:
            raise errors[0]
        total = share * len(clients)
        rate = total / elapsed
        if event == EVENT:
            self.fired += total
        if measured:
            self.runs.append(rate)
            self.measured_events += total
            self.measured_cpu_s += cpu
        return rate

    def close(self) -> None:
        for client in self.clients:
            client.close()


class _Client:
    """One keep-alive connection firing at one server, round-robin over its referrals."""

    def __init__(self, port: int, codes: list[str], headers: dict[str, str]) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        self._codes = codes
        self._headers = {**headers, "Content-Length": "0"}
        self._position = 0

    def connect(self) -> None:
        """A fresh connection: uvicorn closes one left idle for 5 s (while the other side is
        measured, say), which the client would notice only on its next request."""
        conn = self._conn
        conn.close()
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def fire(self, count: int, event: str) -> None:
        conn, codes, headers = self._conn, self._codes, self._headers
        for _ in range(count):
            code = codes[self._position % len(codes)]
            self._position += 1
            conn.request("POST", f"/referrals/{code}/events/{event}", headers=headers)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"{event} on {code}: HTTP {response.status} {body[:300]!r}")

    def close(self) -> None:
        self._conn.close()


class Server:
    """One side served by uvicorn in a process of its own (and a session of its own, so that
    it can be killed with anything it started), run as ``python -m MODULE SIDE``."""

    def __init__(self, url: str, side: str, module: str = "bench.api_fire") -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env[URL_VARIABLE] = url
        self.side = side
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, side],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self._port: int | None = None

    def cpu_seconds(self) -> float:
        """Processor time the server has used so far (user and system, from ``/proc``)."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def port(self) -> int:
        """The port the server listens on, once it has bound it."""
        if self._port is None:
            self._port = self._read_port()
        return self._port

    def _read_port(self) -> int:
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], STARTUP_TIMEOUT_S)
        line = stdout.readline() if ready else b""
        if not line.strip().isdigit():
            code = self.process.poll()
            raise RuntimeError(f"the {self.side} server did not start (exit code {code})")
        return int(line)

    def ask_to_stop(self) -> None:
        """Close its standard input: it then shuts down."""
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()

    def stop(self) -> None:
        """Ask it to stop and wait; kill its session if it lingers."""
        process = self.process
        self.ask_to_stop()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # Not yet reaped, so its process group cannot have been handed to another.
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def bare_app(runtime: Runtime) -> FastAPI:
    """The baseline: ``Runtime.fire`` behind one endpoint at the fire route's path, as the
    benchmark's one actor, and an endpoint that does nothing (the ceiling)."""
    app = FastAPI()

    @app.post("/referrals/{case_code}/events/{event}")
    def fire(case_code: str, event: str) -> Response:
        if event == NOOP_EVENT:
            return JSONResponse({})
        result = runtime.fire(case_code, event, ACTOR)
        return JSONResponse({"state": result.state, "version": result.version})

    return app


def serve(side: str, url: str) -> None:
    """Serve ``side`` over the database at ``url`` on a free loopback port; print the port,
    then serve until standard input closes."""
    runtime = Runtime(make_engine(url), load_library(), MasterKeyring(MasterKey.generate("bench")))
    if side == "api":
        from api.app import create_app  # only here: the bare side starts faster without it

        app = create_app(runtime, sop_paths=[SOP_DIR])
    else:
        app = bare_app(runtime)
    serve_app(app)


def serve_app(app: FastAPI) -> None:
    """Serve ``app`` on a free loopback port; print the port, then serve until standard
    input closes."""
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    # Said to be TCP, as the sockets uvicorn binds itself are (through getaddrinfo): asyncio
    # turns Nagle's algorithm off only on such sockets' connections, and with it on, every
    # answer waits about 40 ms for the client's delayed acknowledgement.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.bind(("127.0.0.1", 0))
    listener.listen(config.backlog)

    def stop_on_eof() -> None:
        # The file descriptor, not sys.stdin: a daemon thread blocked in a buffered read
        # holds a lock that the interpreter wants at exit.
        while os.read(sys.stdin.fileno(), 4096):
            pass
        server.should_exit = True

    threading.Thread(target=stop_on_eof, name="stdin-watch", daemon=True).start()
    print(listener.getsockname()[1], flush=True)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # nothing more for the pipe
    server.run(sockets=[listener])


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in SIDES:
        raise SystemExit(f"usage: python -m bench.api_fire {{{'|'.join(SIDES)}}}")
    serve(sys.argv[1], os.environ[URL_VARIABLE])
