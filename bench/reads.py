"""Latency of every read route of the API while clients fire events, against the same reads
with nobody firing, on a database of many referrals (``reads_sqlite``, ``reads_postgres``).

The database: ``referrals`` referrals of ``bench.pingpong`` seeded in bulk, one task each
(what compliance and task lists count), one referral whose timeline holds ``timeline``
entries (written by the engine's own writer, in one change), a corridor referral sent from
TH-SYN-SHELTER-TAK to LA-MLSW through the API (consents, a disclosure, a task of the
receiving agency) and an uploaded SOP pending review. The real application
(:func:`api.app.create_app`, with the shipped SOPs, the benchmark's and the shipped service
directory) is served by uvicorn in a process of its own (as in :mod:`bench.api_fire`).

Each reader client (a thread with a keep-alive connection) makes every read call of
:func:`read_calls` in turn, ``rounds`` times, after one pass that is not measured (so that
first-use costs such as compiling statements fall outside): one or more calls per GET route
of the API, each as a user its permission table admits. Two phases, in the same run on the
same server:

- **baseline**: the readers alone;
- **loaded**: the same reads while ``writers`` clients fire ``volley`` on referrals of
  their own, as fast as the server answers them.

The figure is the slowest route's 99th-percentile latency in the loaded phase (ms), against
the same in the baseline, with every route's p50, p99 and maximum in the details; its goal:
every route within 1 s at p99 with no error. An error is any answer but 200 to a reader or
a writer, or a failed request; they are counted, never retried.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import socket
import statistics
import sys
import threading
import time
import uuid
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from api.pagination import encode_cursor
from api.users import create_user
from bench.api_fire import ROOT, URL_VARIABLE, Server
from bench.common import (
    ACTOR,
    EVENT,
    SOP_DIR,
    SOP_KEY,
    START,
    case_code,
    load_library,
    seed_referrals,
)
from sop_engine.persistence import tables
from sop_engine.persistence.db import make_engine
from sop_engine.persistence.migrate import upgrade
from sop_engine.runtime.change import Change
from sop_engine.timeline.entries import EntryDraft

__all__ = ["GOAL_MS", "ReadPlan", "Reads", "measure_reads", "read_calls", "serve"]

GOAL_MS = 1000.0
"""Every read route should answer within this at the 99th percentile, under load."""
REQUEST_TIMEOUT_S = 60.0
WRITER_REFERRALS = 4
"""Per writer: it fires round-robin over its own, so that no two writers race."""
SOPS = ROOT / "sop_definitions"
SIDE = "app"

_R = tables.referrals
_TK = tables.tasks


@dataclass(frozen=True)
class ReadPlan:
    referrals: int = 100_000
    timeline: int = 10_000
    """Entries of the long timeline that auditors page through."""
    writers: int = 8
    readers: int = 2
    rounds: int = 30
    """Passes of each reader over every read call, per phase."""


@dataclass
class Phase:
    """Latencies (ms) by call, and what went wrong."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    fired: int = 0
    write_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def p(self, name: str, q: float) -> float:
        values = sorted(self.latencies[name])
        return values[min(len(values) - 1, math.ceil(q * len(values)) - 1)]

    def worst_p99(self) -> tuple[str, float]:
        return max(((n, self.p(n, 0.99)) for n in self.latencies), key=lambda item: item[1])


@dataclass
class Reads:
    baseline: Phase
    loaded: Phase
    calls: int
    setup_s: float

    @property
    def errors(self) -> int:
        phases = (self.baseline, self.loaded)
        return sum(len(p.errors) + len(p.write_errors) for p in phases)


@dataclass(frozen=True)
class Call:
    name: str
    who: str | None
    url: str


def read_calls(codes: dict[str, str], task_id: str, timeline: int) -> list[Call]:
    """Every read call the readers make: one or more per GET route."""
    seeded, corridor, long = codes["seeded"], codes["corridor"], codes["long"]
    deep = encode_cursor(max(0, timeline - 100))
    calls = [
        Call("health", None, "/health"),
        Call("sops", "coordinator", "/sops"),
        Call("sops.pending", "coordinator", "/sops/pending"),
        Call("sop", "coordinator", "/sops/example.corridor/1"),
        Call("sop.diagram", "coordinator", "/sops/example.corridor/1/diagram"),
        Call("sop.source", "coordinator", f"/sops/{SOP_KEY}/2/source"),
        Call("directory", "bench_cw", "/directory/agencies"),
        Call("directory.agency", "bench_cw", "/directory/agencies/LA-MLSW"),
        Call("referral", "bench_cw", f"/referrals/{seeded}"),
        Call("referral.events", "bench_cw", f"/referrals/{seeded}/events"),
        Call("referral.consents", "corridor_cw", f"/referrals/{corridor}/consents"),
        Call("referral.disclosed", "focal_point", f"/referrals/{corridor}/disclosed"),
        Call("notices", "bench_cw", "/notices"),
        Call("tasks", "bench_cw", "/tasks"),
        Call("task", "bench_cw", f"/tasks/{task_id}"),
        Call("audit.referrals", "auditor", "/audit/referrals"),
        Call("audit.timeline", "auditor", f"/audit/referrals/{long}/timeline"),
        Call("audit.timeline.deep", "auditor", f"/audit/referrals/{long}/timeline?cursor={deep}"),
        Call("audit.timeline.short", "auditor", f"/audit/referrals/{seeded}/timeline"),
        Call("audit.access_log", "auditor", "/audit/access-log"),
    ]
    groupings = ("sop", "agency", "country", "origin_country", "destination_country")
    calls += [
        Call(f"audit.compliance.{g}", "auditor", f"/audit/compliance?group_by={g}")
        for g in groupings
    ]
    return calls


def measure_reads(url: str, plan: ReadPlan) -> Reads:
    """Set the empty database at ``url`` up, serve it, and time both phases (module
    docstring)."""
    began = time.perf_counter()
    engine = make_engine(url)
    try:
        upgrade(engine)
        tokens, task_id = _seed(engine, plan)
    finally:
        engine.dispose()
    with ExitStack() as stack:
        server = Server(url, SIDE, module=__name__)
        stack.callback(server.stop)
        port = server.port()
        codes = _through_the_api(port, tokens)
        calls = read_calls(codes, task_id, plan.timeline)
        _phase(port, tokens, calls, replace(plan, readers=1, rounds=1), writers=0)  # warm-up
        setup_s = time.perf_counter() - began
        baseline = _phase(port, tokens, calls, plan, writers=0)
        loaded = _phase(port, tokens, calls, plan, writers=plan.writers)
    return Reads(baseline, loaded, len(calls), setup_s)


def _seed(engine: Engine, plan: ReadPlan) -> tuple[dict[str, str], str]:
    """Referrals, their tasks, the long timeline and the users; the tokens by who."""
    sop = load_library().get(SOP_KEY)
    seed_referrals(engine, sop, plan.referrals)
    with engine.begin() as conn:
        ref = conn.execute(select(_R).where(_R.c.case_code == case_code(0))).one()
        change = Change.open(conn, ref, sop.spec, START)
        for _ in range(plan.timeline - 1):
            change.record(EntryDraft(kind="note", actor=ACTOR))
        change.write(bump=False)
    task_id = ""
    for start in range(0, plan.referrals, 5_000):
        rows = []
        for index in range(start, min(start + 5_000, plan.referrals)):
            created = START - timedelta(seconds=index)
            rows.append(
                {
                    "id": str(uuid.UUID(int=index + 1)),
                    "referral_id": str(uuid.UUID(int=index + 1)),
                    "state": "ping",
                    "name": "respond",
                    "role": "caseworker",
                    "agency_slot": "case_agency",
                    "agency_id": ACTOR.agency_id,
                    "ask": "Respond",
                    "status": ("open", "done", "cancelled")[index % 3],
                    "due_at": created + timedelta(days=1),
                    "created_at": created,
                    "closed_at": None if index % 3 == 0 else created + timedelta(hours=index % 40),
                }
            )
        task_id = task_id or str(rows[0]["id"])
        with engine.begin() as conn:
            conn.execute(_TK.insert(), rows)
    users = {
        "bench_cw": ("caseworker", ACTOR.agency_id),
        "corridor_cw": ("caseworker", "TH-SYN-SHELTER-TAK"),
        "focal_point": ("agency_focal_point", "LA-MLSW"),
        "auditor": ("auditor", None),
        "coordinator": ("coordinator", None),
    }
    tokens = {
        who: create_user(engine, f"bench-{who}", role, agency).token
        for who, (role, agency) in users.items()
    }
    for writer in range(plan.writers):
        user = create_user(engine, f"bench-writer-{writer}", "caseworker", ACTOR.agency_id)
        tokens[f"writer{writer}"] = user.token
    return tokens, task_id


class _Client:
    """One keep-alive connection to the server."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        self.conn.connect()
        assert self.conn.sock is not None
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call(
        self, method: str, url: str, token: str | None, body: bytes | None = None
    ) -> tuple[int, bytes]:
        headers = {"Content-Length": str(len(body or b""))}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers["Content-Type"] = "application/json"
        self.conn.request(method, url, body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.conn.close()


def _through_the_api(port: int, tokens: dict[str, str]) -> dict[str, str]:
    """The corridor referral sent to LA-MLSW and an SOP pending review; the case codes."""
    client = _Client(port)

    def ok(method: str, url: str, who: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        status, answer = client.call(method, url, tokens[who], data)
        if status not in (200, 201):
            raise RuntimeError(f"{method} {url}: HTTP {status} {answer[:300]!r}")
        return json.loads(answer)

    try:
        created = ok(
            "POST",
            "/referrals",
            "corridor_cw",
            {
                "sop_key": "example.corridor",
                "origin_country": "TH",
                "destination_country": "LA",
                "facts": {"survivor_age": 24},
            },
        )
        code = created["case_code"]
        events = f"/referrals/{code}/events"
        consent = {"given_by": "survivor"}
        ok(
            "POST",
            f"/referrals/{code}/consents",
            "corridor_cw",
            {"scope": "case_management", **consent},
        )
        ok(
            "POST",
            f"{events}/record_consent",
            "corridor_cw",
            {"facts": {"safe_contact_method": "text_message"}},
        )
        assessment = {
            "risk_level": "medium",
            "service_needed": "safety_and_shelter",
            "safety_plan_agreed": True,
        }
        ok("POST", f"{events}/complete_assessment", "corridor_cw", {"facts": assessment})
        ok(
            "POST",
            f"/referrals/{code}/consents",
            "corridor_cw",
            {"scope": "cross_border_return", **consent},
        )
        ok("POST", f"{events}/refer_for_return", "corridor_cw", {"recipient_agency_id": "LA-MLSW"})
        source = (SOP_DIR / "bench.sop.yaml").read_text().replace("version: 1", "version: 2", 1)
        client.conn.request(
            "POST",
            "/sops",
            body=source.encode(),
            headers={
                "Authorization": f"Bearer {tokens['coordinator']}",
                "Content-Type": "application/yaml",
            },
        )
        response = client.conn.getresponse()
        answer = response.read()
        if response.status not in (200, 201):
            raise RuntimeError(f"POST /sops: HTTP {response.status} {answer[:300]!r}")
    finally:
        client.close()
    return {"seeded": case_code(1), "corridor": code, "long": case_code(0)}


class _Run:
    """One phase: its readers and writers, and what they measured."""

    def __init__(self, port: int, tokens: dict[str, str], parties: int) -> None:
        self.port, self.tokens = port, tokens
        self.phase = Phase()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.start = threading.Barrier(parties + 1)

    def read(self, calls: list[Call], rounds: int) -> None:
        client = _Client(self.port)
        try:
            self.start.wait()
            for _ in range(rounds):
                for call in calls:
                    token = self.tokens[call.who] if call.who else None
                    began = time.perf_counter()
                    try:
                        status, body = client.call("GET", call.url, token)
                    except (OSError, http.client.HTTPException) as exc:
                        client.close()
                        client = _Client(self.port)
                        status, body = 0, repr(exc).encode()
                    took = 1000 * (time.perf_counter() - began)
                    with self.lock:
                        self.phase.latencies[call.name].append(took)
                        if status != 200:
                            self.phase.errors.append(f"{call.name}: HTTP {status} {body[:200]!r}")
        finally:
            client.close()

    def write(self, writer: int) -> None:
        """Fire on the writer's own referrals (after referral 0, the long timeline, and 1,
        the one read) until the readers are done."""
        client = _Client(self.port)
        first = 2 + writer * WRITER_REFERRALS
        codes = [case_code(first + i) for i in range(WRITER_REFERRALS)]
        token = self.tokens[f"writer{writer}"]
        fired = 0
        try:
            self.start.wait()
            while not self.stop.is_set():
                code = codes[fired % len(codes)]
                status, body = client.call("POST", f"/referrals/{code}/events/{EVENT}", token)
                if status == 200:
                    fired += 1
                else:
                    with self.lock:
                        self.phase.write_errors.append(f"{code}: HTTP {status} {body[:200]!r}")
        except (OSError, http.client.HTTPException) as exc:
            with self.lock:
                self.phase.write_errors.append(repr(exc))
        finally:
            client.close()
            with self.lock:
                self.phase.fired += fired


def _phase(
    port: int, tokens: dict[str, str], calls: list[Call], plan: ReadPlan, *, writers: int
) -> Phase:
    run = _Run(port, tokens, plan.readers + writers)
    readers = [
        threading.Thread(target=run.read, args=(calls, plan.rounds), daemon=True)
        for _ in range(plan.readers)
    ]
    firing = [threading.Thread(target=run.write, args=(w,), daemon=True) for w in range(writers)]
    for thread in (*readers, *firing):
        thread.start()
    run.start.wait()
    began = time.perf_counter()
    for thread in readers:
        thread.join()
    run.phase.seconds = time.perf_counter() - began
    run.stop.set()
    for thread in firing:
        thread.join(REQUEST_TIMEOUT_S)
    return run.phase


def summary(phase: Phase) -> dict[str, Any]:
    return {
        name: {
            "p50_ms": round(statistics.median(values), 1),
            "p99_ms": round(phase.p(name, 0.99), 1),
            "max_ms": round(max(values), 1),
            "requests": len(values),
        }
        for name, values in phase.latencies.items()
    }


def serve(url: str) -> None:
    """Serve the application over the database at ``url`` on a free loopback port (see
    :func:`bench.api_fire.serve`: the same settings), with the shipped SOPs, the benchmark's
    and the shipped service directory, and compliance reports kept as ``sop-engine serve``
    keeps them (``SOP_ENGINE_COMPLIANCE_MAX_AGE_SECONDS``, 30 s by default)."""
    from api.app import create_app
    from bench.api_fire import serve_app
    from notifications.catalogue import template_names
    from sop_engine.crypto import MasterKey, MasterKeyring
    from sop_engine.directory import load_directory
    from sop_engine.language.published import load_library as load_served
    from sop_engine.runtime.engine import Runtime
    from sop_engine.settings import get_settings

    engine = make_engine(url)
    templates = template_names()
    library = load_served(engine, [SOPS, SOP_DIR], templates)
    max_age = timedelta(seconds=get_settings().compliance_max_age_seconds)
    keyring = MasterKeyring(MasterKey.generate("bench"))
    directory = load_directory(SOPS / "directory", today=datetime.now(UTC).date())
    runtime = Runtime(engine, library, keyring, compliance_max_age=max_age, directory=directory)
    app = create_app(runtime, sop_paths=[SOPS, SOP_DIR], templates=templates, directory=directory)
    serve_app(app)


if __name__ == "__main__":
    if sys.argv[1:] != [SIDE]:
        raise SystemExit(f"usage: python -m bench.reads {SIDE}")
    serve(os.environ[URL_VARIABLE])
