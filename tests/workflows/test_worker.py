"""``sop-engine worker`` as an operator runs it: a real Prefect server, its scheduler driving
the sweep, a clean stop on SIGTERM. Each test cleans up every process it starts.

Every name, agency and fact here is synthetic.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from sop_engine.clock import ManualClock
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.persistence.db import default_database_url, make_engine
from sop_engine.persistence.migrate import upgrade
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from sop_engine.settings import Settings
from tests.agencies import agency_directory
from tests.test_serve import LOOPBACK_HTTP

SOP_ENGINE = Path(sys.executable).parent / "sop-engine"
DIRECTORY = Path(__file__).resolve().parents[2] / "sop_definitions" / "directory"
T, OUT, INBOX = tables.timeline_entries, tables.outbox, tables.inbox_messages
SURVIVOR = "Synthetic Survivor 042"


def _environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This machine's environment without any SOP_ENGINE_* or PREFECT_* setting of its own,
    with Prefect's home in ``tmp_path`` and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOP_ENGINE_", "PREFECT_"))}
    env.update(
        {
            "SOP_ENGINE_DATA_DIR": str(tmp_path / "data"),
            "PREFECT_HOME": str(tmp_path / "prefect-client"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    env.update(extra)
    return env


def _wait_for(check: Callable[[], object], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tail = "\n".join(log.read_text("utf-8", errors="replace").splitlines()[-40:])
            pytest.fail(f"{what} not within {timeout:g} s; the worker's output ends:\n{tail}")
        time.sleep(0.5)


@contextmanager
def _worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``sop-engine worker``, its output in ``log``; killed with its flow runs and its Prefect
    server if the test leaves it running."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(SOP_ENGINE), "worker"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its group holds the flow runs it starts
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            server = re.search(rb"local Prefect server \(pid (\d+)\)", log.read_bytes())
            if server is not None:
                with suppress(ProcessLookupError):
                    os.killpg(int(server.group(1)), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _referral_already_due(
    data_dir: Path, library: SopLibrary, owner: str = "TH-SYN-LEGAL-BANGKOK"
) -> tuple[str, str]:
    """A corridor referral made 90 minutes ago in the embedded database of ``data_dir``,
    managed by ``owner``: the first level of its ``assign`` deadline came due 30 minutes ago,
    the next one is not due yet. Returns its id and case code."""
    settings = Settings(data_dir=data_dir, database_url=None, master_key=None)
    engine = make_engine(default_database_url(data_dir))
    try:
        upgrade(engine)
        clock = ManualClock(datetime.now(UTC) - timedelta(minutes=90))
        runtime = Runtime(engine, library, settings.keyring(), clock, directory=agency_directory())
        view = runtime.create_referral(
            sop_key="example.corridor",
            sop_version=1,
            actor=Actor("u-cw", "caseworker", owner, ("ngo",)),
            origin_country="TH",
            destination_country="LA",
            facts={"survivor_age": 22, "survivor_name": SURVIVOR},
        )
    finally:
        engine.dispose()
    return view.id, view.case_code


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _SmtpInbox:
    """An aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # noqa: N802
        self.messages.append(bytes(envelope.content))
        return "250 OK"


class _WebhookReceiver(ThreadingHTTPServer):
    """A webhook endpoint on loopback that keeps only what a Standard Webhooks library
    verifies; anything else is answered 401 and counted."""

    def __init__(self, secret: str) -> None:
        self.verified: list[dict[str, Any]] = []
        self.refused = 0
        self.webhook = Webhook(secret)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                try:
                    receiver.verified.append(receiver.webhook.verify(body, dict(self.headers)))
                    self.send_response(204)
                except WebhookVerificationError:
                    receiver.refused += 1
                    self.send_response(401)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/sop-engine"


def _directory_with_channels(
    folder: Path, email_agency: str, webhook_agency: str, webhook_url: str
) -> Path:
    """The shipped directory, with two synthetic Thai agencies reachable by email (a reserved
    domain; the test's SMTP server takes it) and by webhook (the test's receiver)."""
    shutil.copytree(DIRECTORY, folder)
    path = folder / "th.yaml"
    text = path.read_text("utf-8")
    for agency, contact in (
        (email_agency, "contact_channel: email\n    contact_address: caseworkers@legal-c.example"),
        (webhook_agency, f"contact_channel: webhook\n    contact_address: {webhook_url}"),
    ):
        start = text.index(f"  - id: {agency}\n")
        end = text.index("contact_channel: in_app", start)
        text = text[:end] + contact + text[end + len("contact_channel: in_app") :]
    path.write_text(text, encoding="utf-8")
    return folder


STARTED = re.compile(
    rb"local Prefect server \(pid (\d+)\) at (\S+); Prefect UI at (http://127\.0\.0\.1:\d+)"
)


DELIVERY_WAIT = 120
"""Seconds to wait for each delivery once escalated: every 5 s each flow starts a process
(about 2 s of CPU, the SOP library compiled in it), and with the whole suite on two cores
late runs queue behind the runner's 4 slots; 60 s was missed in 3 of 5 full runs. What
the test proves is that the scheduler delivers, once; not how fast."""


@pytest.mark.slow
def test_the_prefect_scheduler_runs_the_sweep_that_escalates_a_passed_deadline(
    tmp_path: Path, library: SopLibrary
) -> None:
    """A deadline passes; the scheduled sweep escalates it; the scheduled dispatch delivers the
    reminders to a real SMTP server and to a webhook receiver that verifies the signature.

    The worker starts a Prefect server of its own, as on a fresh install (no
    ``PREFECT_API_URL``): its database in the data folder, its UI reachable, and on SIGTERM
    the worker stops serving, stops that server and exits 0. (One test for both: each real
    Prefect server costs some 20 s of CPU.)"""
    referral, case_code = _referral_already_due(tmp_path / "data", library)
    other, other_code = _referral_already_due(tmp_path / "data", library, "TH-SYN-CBO-NONGKHAI")
    secret = "whsec_" + base64.b64encode(b"synthetic webhook secret 32bytes").decode()
    mailbox = _SmtpInbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=_free_port())
    smtp.start()
    receiver = _WebhookReceiver(secret)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    directory = _directory_with_channels(
        tmp_path / "directory", "TH-SYN-LEGAL-BANGKOK", "TH-SYN-CBO-NONGKHAI", receiver.url
    )
    env = _environment(
        tmp_path,
        PREFECT_RUNNER_POLL_FREQUENCY="2",
        SOP_ENGINE_SWEEP_INTERVAL_SECONDS="5",
        SOP_ENGINE_DISPATCH_INTERVAL_SECONDS="5",
        SOP_ENGINE_DIRECTORY_DIR=str(directory),
        SOP_ENGINE_SMTP_HOST="127.0.0.1",
        SOP_ENGINE_SMTP_PORT=str(smtp.port),
        SOP_ENGINE_SMTP_STARTTLS="false",
        SOP_ENGINE_WEBHOOK_SECRET=secret,
    )
    engine = make_engine(default_database_url(tmp_path / "data"))
    log = tmp_path / "worker.log"

    def count(query_table: object, *where: object) -> int:
        with engine.connect() as conn:
            query = select(func.count()).select_from(query_table)  # type: ignore[arg-type]
            return int(conn.scalar(query.where(*where)) or 0)  # type: ignore[arg-type]

    try:
        with _worker(env, log) as worker:
            _wait_for(lambda: STARTED.search(log.read_bytes()), 90, "the Prefect UI's address", log)
            found = STARTED.search(log.read_bytes())
            assert found is not None
            server_pid, api_url, ui_url = int(found[1]), found[2].decode(), found[3].decode()
            assert api_url == f"{ui_url}/api"
            _wait_for(lambda: b"serving escalation-sweep" in log.read_bytes(), 30, "serving", log)
            assert LOOPBACK_HTTP.get(f"{api_url}/health", timeout=5).json() is True
            assert LOOPBACK_HTTP.get(ui_url, timeout=5).status_code == 200
            _wait_for(
                lambda: count(T, T.c.referral_id == referral, T.c.kind == "escalation"),
                90,
                "an escalation on the referral's timeline",
                log,
            )
            _wait_for(
                lambda: count(INBOX, INBOX.c.referral_id == referral),
                DELIVERY_WAIT,
                "the reminder in the in-app inbox",
                log,
            )
            _wait_for(lambda: mailbox.messages, DELIVERY_WAIT, "the reminder by email", log)
            _wait_for(lambda: receiver.verified, DELIVERY_WAIT, "the reminder by webhook", log)
            runs = LOOPBACK_HTTP.post(
                f"{api_url}/flow_runs/filter",
                json={"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}},
                timeout=10,
            ).json()
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 0
    finally:
        engine.dispose()
        smtp.stop()
        receiver.shutdown()
    assert count(T, T.c.referral_id == referral, T.c.kind == "escalation") == 1
    assert count(OUT, OUT.c.referral_id == referral) == 1
    # Each reminder arrived once, by its agency's channel, naming the case and no one.
    (email,) = mailbox.messages
    assert case_code.encode() in email
    assert SURVIVOR.encode() not in email
    (hook,) = receiver.verified
    assert receiver.refused == 0
    assert hook["case_code"] == other_code
    assert hook["recipient_agency_id"] == "TH-SYN-CBO-NONGKHAI"
    assert SURVIVOR not in str(hook)
    assert other != referral

    assert runs, "no completed flow runs"
    assert all(r["auto_scheduled"] and r["deployment_id"] for r in runs)  # the scheduler's
    assert all(r["parameters"] == {"batch_size": 100} for r in runs)
    output = log.read_text("utf-8", errors="replace")
    assert "escalation sweep: 2 escalated" in output
    assert case_code not in output
    assert SURVIVOR not in output
    assert all(case_code not in r["name"] for r in runs)

    # The worker's own server kept its runs in the data folder, and is gone.
    assert "worker stopped" in output
    assert not _alive(server_pid)
    with pytest.raises(httpx.ConnectError):
        LOOPBACK_HTTP.get(f"{api_url}/health", timeout=5)
    with sqlite3.connect(tmp_path / "data" / "prefect" / "prefect.db") as prefect_db:
        kept = {row[0] for row in prefect_db.execute("SELECT id FROM flow_run")}
    assert {r["id"] for r in runs} <= kept


@pytest.mark.slow
def test_a_prefect_server_that_does_not_answer_is_a_clear_error(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    env = _environment(
        tmp_path,
        PREFECT_API_URL="http://127.0.0.1:9/api",  # the discard port: nobody answers
        SOP_ENGINE_PREFECT_STARTUP_TIMEOUT="1",
    )
    with _worker(env, log) as worker:
        assert worker.wait(60) == 1
    assert (
        "cannot start the worker: the Prefect server at http://127.0.0.1:9/api did not answer"
        in log.read_text("utf-8")
    )


def test_a_broken_setting_stops_the_worker_before_prefect_is_even_imported(
    tmp_path: Path,
) -> None:
    """``sop-engine worker`` with a broken setting exits 1 with the reason, having started no
    Prefect server, nor paid for Prefect's import (seconds) before checking its settings."""
    env = _environment(tmp_path, SOP_ENGINE_ENVIRONMENT="production")  # and no master key
    code = (
        "import sys\n"
        "from cli.main import main\n"
        "sys.argv = ['sop-engine', 'worker']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as stop:\n"
        "    print(stop.code, sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.stdout.strip() == "1 []", done.stdout + done.stderr
    assert "cannot start the worker: SOP_ENGINE_MASTER_KEY must be set in production" in done.stderr
    assert "Prefect server" not in done.stderr
    assert not (tmp_path / "data" / "prefect").exists()


def test_in_production_a_worker_without_prefect_api_url_refuses_to_start(
    tmp_path: Path,
) -> None:
    """Production settings otherwise complete (a master key, SQLite named explicitly, the
    database migrated by ``sop-engine db upgrade``), but no ``PREFECT_API_URL``: exit 1 with
    the reason, and no Prefect server of its own. Before the upgrade, the worker refuses the
    database instead of migrating it."""
    from sop_engine.crypto import MasterKey

    env = _environment(
        tmp_path,
        SOP_ENGINE_ENVIRONMENT="production",
        SOP_ENGINE_MASTER_KEY=MasterKey.generate("k1").to_setting(),
        SOP_ENGINE_DATABASE_URL=f"sqlite:///{tmp_path}/sop_engine.sqlite3",
    )
    log = tmp_path / "worker.log"
    with _worker(env, log) as worker:  # the database not migrated yet: refused, not migrated
        assert worker.wait(120) == 1
    assert (
        "cannot start the worker: the database is at migration (none), this version needs "
        in log.read_text("utf-8")
    )
    upgraded = subprocess.run(
        [str(SOP_ENGINE), "db", "upgrade"], env=env, capture_output=True, text=True, check=False
    )
    assert upgraded.returncode == 0, upgraded.stderr
    with _worker(env, log) as worker:
        assert worker.wait(120) == 1
    output = log.read_text("utf-8")
    assert "cannot start the worker: PREFECT_API_URL must be set in production" in output
    assert "starting a local Prefect server" not in output
    assert not (tmp_path / "data" / "prefect").exists()


def test_in_production_the_worker_refuses_the_implicit_sqlite_database(tmp_path: Path) -> None:
    from sop_engine.crypto import MasterKey

    env = _environment(
        tmp_path,
        SOP_ENGINE_ENVIRONMENT="production",
        SOP_ENGINE_MASTER_KEY=MasterKey.generate("k1").to_setting(),
    )
    done = subprocess.run(
        [str(SOP_ENGINE), "worker"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert "SOP_ENGINE_DATABASE_URL must be set in production" in done.stderr
    assert not (tmp_path / "data").exists()


def test_the_worker_stops_on_the_signals_serving_stops_on() -> None:
    from cli.worker import STOP_SIGNALS
    from workflows.serving import STOP_SIGNALS as SERVING

    assert STOP_SIGNALS == SERVING
