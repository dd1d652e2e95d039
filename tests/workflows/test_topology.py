"""The production topology, as docs/deployment.md lays it out, in one test: PostgreSQL for the
engine and for a Prefect server of its own, ``sop-engine db upgrade`` run once, two API
processes (``serve --no-worker``) and two workers (``worker``) in production mode, an SMTP
server (aiosmtpd). Then one worker and one API process are killed with SIGKILL and the
Prefect server is killed and started again; after each, due deadlines escalate within two
sweep intervals plus one timer lease, every deadline escalates exactly once, and every
message reaches the SMTP server (by its Message-ID: delivery is at least once).

Every name, agency and fact here is synthetic.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, func, select

from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.persistence.db import make_engine
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from tests.agencies import agency_directory
from tests.conftest import _autocommit
from tests.test_serve import LOOPBACK_HTTP, _serve
from tests.workflows.test_recovery import _seconds_until
from tests.workflows.test_worker import (
    SOP_ENGINE,
    SURVIVOR,
    _directory_with_channels,
    _environment,
    _free_port,
    _SmtpInbox,
    _worker,
)
from workflows.server import LocalPrefectServer

T, OUT = tables.timeline_entries, tables.outbox
INTERVAL, LEASE = 15, 5
BOUND = 2 * INTERVAL + LEASE
"""Seconds from a failure (or from deadlines falling due) to their escalation."""
EMAIL_AGENCY = "TH-SYN-LEGAL-BANGKOK"
"""The managing agency of every referral here, reachable by email (the test's SMTP server)."""
SCRAPE = "synthetic-scrape-token-topology"
POSTGRES = pytest.mark.postgres


class _PostgresPrefect(LocalPrefectServer):
    """``prefect server start`` on a PostgreSQL database, as in production."""

    def __init__(self, home: Path, database_url: str, port: int = 0) -> None:
        super().__init__(home, port)
        self.database_url = database_url

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.database_url
        return env


@contextmanager
def _databases(admin: Engine) -> Iterator[tuple[str, str]]:
    """Two fresh, empty databases: the engine's and Prefect's; dropped afterwards."""
    names = [f"topology_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("engine", "prefect")]
    for name in names:
        _autocommit(admin, f'CREATE DATABASE "{name}"')
    try:
        engine_url = admin.url.set(database=names[0]).render_as_string(hide_password=False)
        prefect_url = admin.url.set(drivername="postgresql+asyncpg", database=names[1])
        yield engine_url, prefect_url.render_as_string(hide_password=False)
    finally:
        for name in names:
            _autocommit(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _answers(url: str, **headers: str) -> int:
    try:
        return LOOPBACK_HTTP.get(url, headers=headers, timeout=5).status_code
    except httpx.HTTPError:
        return 0


def _escalated(engine: Engine, referrals: list[str]) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(T.c.referral_id, func.count())
            .where(T.c.referral_id.in_(referrals), T.c.kind == "escalation")
            .group_by(T.c.referral_id)
        ).all()
    return {referral: int(count) for referral, count in rows}


def _all_escalated(engine: Engine, referrals: list[str]) -> Callable[[], bool]:
    return lambda: len(_escalated(engine, referrals)) == len(referrals)


def _gauges(api: str) -> dict[str, float]:
    text = LOOPBACK_HTTP.get(
        f"{api}/metrics", headers={"Authorization": f"Bearer {SCRAPE}"}, timeout=10
    )
    text.raise_for_status()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text.text)
        for sample in family.samples
        if not sample.labels
    }


@pytest.mark.slow
@POSTGRES
def test_the_production_topology_keeps_escalating_through_kills_and_a_prefect_restart(
    tmp_path: Path, library: SopLibrary, postgres_server: Engine
) -> None:
    key = MasterKey.generate("k1")
    mailbox = _SmtpInbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=_free_port())
    directory = _directory_with_channels(
        tmp_path / "directory", EMAIL_AGENCY, "TH-SYN-CBO-NONGKHAI", "http://127.0.0.1:9/none"
    )
    logs = [tmp_path / name for name in ("api-1.log", "api-2.log", "w-1.log", "w-2.log")]
    with ExitStack() as stack, _databases(postgres_server) as (engine_url, prefect_url):
        smtp.start()
        stack.callback(smtp.stop)
        prefect = _PostgresPrefect(tmp_path / "prefect-server", prefect_url)
        prefect.start()
        stack.callback(lambda: prefect.stop())  # noqa: PLW0108 -- the one running at the end
        env = _environment(
            tmp_path,
            SOP_ENGINE_ENVIRONMENT="production",
            SOP_ENGINE_DATABASE_URL=engine_url,
            SOP_ENGINE_MASTER_KEY=key.to_setting(),
            SOP_ENGINE_METRICS_TOKEN=SCRAPE,
            SOP_ENGINE_DIRECTORY_DIR=str(directory),
            SOP_ENGINE_SMTP_HOST="127.0.0.1",
            SOP_ENGINE_SMTP_PORT=str(smtp.port),
            SOP_ENGINE_SMTP_STARTTLS="false",
            SOP_ENGINE_SWEEP_INTERVAL_SECONDS=str(INTERVAL),
            SOP_ENGINE_DISPATCH_INTERVAL_SECONDS=str(INTERVAL),
            SOP_ENGINE_TIMER_LEASE_SECONDS=str(LEASE),
            PREFECT_API_URL=prefect.api_url,
            PREFECT_RUNNER_POLL_FREQUENCY="2",
        )
        # Production migrates once, by the command; the others refuse a database behind.
        upgrade = subprocess.run(
            [str(SOP_ENGINE), "db", "upgrade"], env=env, capture_output=True, check=False
        )
        assert upgrade.returncode == 0, upgrade.stderr
        engine = make_engine(engine_url)
        stack.callback(engine.dispose)
        ports = [_free_port(), _free_port()]
        apis = [f"http://127.0.0.1:{port}" for port in ports]
        api_1 = stack.enter_context(_serve(env, logs[0], "--no-worker", "--port", str(ports[0])))
        stack.enter_context(_serve(env, logs[1], "--no-worker", "--port", str(ports[1])))
        worker_1 = stack.enter_context(_worker(env, logs[2]))
        stack.enter_context(_worker(env, logs[3]))
        _seconds_until(
            lambda: all(_answers(f"{a}/health") == 200 for a in apis), 90, "the APIs", logs
        )
        _seconds_until(
            lambda: all(b"serving escalation-sweep" in log.read_bytes() for log in logs[2:]),
            120,
            "the workers",
            logs,
        )

        def already_due(n: int) -> list[str]:
            """``n`` corridor referrals made 90 minutes ago: 'assign' level 1 is due."""
            clock = ManualClock(datetime.now(UTC) - timedelta(minutes=90))
            ring = MasterKeyring(key)
            runtime = Runtime(engine, library, ring, clock, directory=agency_directory())
            return [
                runtime.create_referral(
                    sop_key="example.corridor",
                    sop_version=1,
                    actor=Actor("u-cw", "caseworker", EMAIL_AGENCY, ("ngo",)),
                    origin_country="TH",
                    destination_country="LA",
                    facts={"survivor_age": 22 + i, "survivor_name": SURVIVOR},
                ).id
                for i in range(n)
            ]

        # 0. Both workers serve (the first runs come when Prefect's scheduler makes them).
        first = already_due(3)
        _seconds_until(_all_escalated(engine, first), 120, "the first escalations", logs)

        # 1. A worker is killed (SIGKILL of its process group: its flow runs die with it).
        os.killpg(worker_1.pid, signal.SIGKILL)
        worker_1.wait()
        second = already_due(3)
        waited = _seconds_until(
            _all_escalated(engine, second), 120, "escalations after a kill", logs
        )
        assert waited <= BOUND, f"{waited:.0f} s after a worker was killed"

        # 2. An API process is killed; the other answers, and a caseworker goes on through it.
        os.killpg(api_1.pid, signal.SIGKILL)
        api_1.wait()
        token = subprocess.run(
            [
                str(SOP_ENGINE),
                "users",
                "add",
                "cw-topology",
                "--role",
                "caseworker",
                "--agency",
                EMAIL_AGENCY,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        made = LOOPBACK_HTTP.post(
            f"{apis[1]}/referrals",
            json={
                "sop_key": "example.corridor",
                "origin_country": "TH",
                "destination_country": "LA",
                "facts": {"survivor_age": 30, "survivor_name": SURVIVOR},
            },
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert made.status_code == 201, made.text
        assert _answers(f"{apis[1]}/ready") == 200

        # 3. The Prefect server is killed and started again on its database and port.
        assert prefect.pid is not None
        os.killpg(prefect.pid, signal.SIGKILL)
        prefect.stop()
        time.sleep(3)
        prefect = _PostgresPrefect(tmp_path / "prefect-server", prefect_url, prefect.port)
        prefect.start()
        third = already_due(3)
        waited = _seconds_until(
            _all_escalated(engine, third), 120, "escalations after a restart", logs
        )
        assert waited <= BOUND, f"{waited:.0f} s after Prefect came back"

        # Every message is sent; each deadline escalated once, each message arrived.
        due = first + second + third

        def all_sent() -> bool:
            with engine.connect() as conn:
                statuses = (
                    conn.execute(select(OUT.c.status).where(OUT.c.referral_id.in_(due)))
                    .scalars()
                    .all()
                )
            return len(statuses) == len(due) and set(statuses) == {"sent"}

        # A dispatcher killed holding claims gives them back when its lease (the timer
        # lease) ends, and the next dispatch sends them: within the bound, twice for load.
        _seconds_until(all_sent, 2 * BOUND, "every message sent", logs)
        assert _escalated(engine, due) == dict.fromkeys(due, 1)
        with engine.connect() as conn:
            expected = set(
                conn.execute(select(OUT.c.id).where(OUT.c.referral_id.in_(due))).scalars()
            )
        received = [message_from_bytes(m)["X-SOP-Engine-Message-Id"] for m in mailbox.messages]
        assert expected <= set(received)
        assert all(SURVIVOR.encode() not in m for m in mailbox.messages)
        gauges = _gauges(apis[1])
        assert gauges["sop_engine_timers_overdue"] == 0
        assert gauges["sop_engine_escalations_total"] == len(due)
        for log in logs:
            assert SURVIVOR not in log.read_text("utf-8", errors="replace"), log.name
