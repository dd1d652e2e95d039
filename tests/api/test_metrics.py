"""``GET /metrics``: Prometheus' text format with the database's figures and the latency of
every request by route template; never a case code, a name or a path; behind the scrape
token in production."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from api.app import create_app
from cli.serve import build_app
from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.language.compiler import SopLibrary
from sop_engine.runtime.engine import Runtime
from sop_engine.settings import get_settings
from tests.agencies import agency_directory

from .conftest import SURVIVOR, Users

TOKEN = "synthetic-scrape-token-6b1f"


@pytest.fixture
def runtime(sqlite_engine: Engine, library: SopLibrary) -> Runtime:
    """The API tests' runtime, on a clock the tests move."""
    return Runtime(
        sqlite_engine,
        library,
        MasterKeyring(MasterKey.generate("test")),
        ManualClock(datetime(2026, 3, 2, 2, 0, tzinfo=UTC)),
        directory=agency_directory(),
    )


def _families(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> (labels -> value), as Prometheus would read it."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _app_client(runtime: Runtime, **options: object) -> Iterator[TestClient]:
    with TestClient(create_app(runtime, **options), raise_server_exceptions=False) as c:  # type: ignore[arg-type]
        yield c


@pytest.fixture
def production_client(runtime: Runtime) -> Iterator[TestClient]:
    yield from _app_client(runtime, metrics_token=TOKEN, metrics_open=False)


def test_the_database_figures_and_request_latency_by_route_template(
    client: TestClient, users: Users, case_code: str
) -> None:
    assert client.get(f"/referrals/{case_code}", headers=users.auth("caseworker")).status_code
    client.get("/no-such-route")
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    figures = _families(r.text)
    assert figures["sop_engine_timers_overdue"] == {(): 0.0}
    assert figures["sop_engine_timers_oldest_overdue_seconds"] == {(): 0.0}
    assert figures["sop_engine_escalations_total"] == {(): 0.0}
    outbox = figures["sop_engine_outbox_messages"]
    assert set(outbox) == {(("status", s),) for s in ("pending", "sent", "dead")}
    counts = figures["sop_engine_http_request_duration_seconds_count"]
    read = (("method", "GET"), ("route", "/referrals/{case_code}"), ("status", "2xx"))
    made = (("method", "POST"), ("route", "/referrals"), ("status", "2xx"))
    unmatched = (("method", "GET"), ("route", "(unmatched)"), ("status", "4xx"))
    assert (counts[read], counts[made], counts[unmatched]) == (1.0, 1.0, 1.0)
    assert case_code not in r.text
    assert SURVIVOR not in r.text
    assert "no-such-route" not in r.text


def test_overdue_timers_show_once_their_deadline_passed(
    runtime: Runtime, client: TestClient, users: Users, case_code: str
) -> None:
    assert isinstance(runtime.clock, ManualClock)
    runtime.clock.advance(timedelta(hours=1, minutes=1))
    figures = _families(client.get("/metrics").text)
    assert figures["sop_engine_timers_overdue"][()] >= 1
    assert figures["sop_engine_timers_oldest_overdue_seconds"][()] >= 60


def test_production_needs_the_scrape_token(production_client: TestClient) -> None:
    assert production_client.get("/metrics").status_code == 401
    assert production_client.get("/metrics").headers["www-authenticate"].startswith("Bearer")
    wrong = {"Authorization": "Bearer synthetic-wrong-token"}
    assert production_client.get("/metrics", headers=wrong).status_code == 401
    basic = {"Authorization": f"Basic {TOKEN}"}
    assert production_client.get("/metrics", headers=basic).status_code == 401
    good = {"Authorization": f"Bearer {TOKEN}"}
    r = production_client.get("/metrics", headers=good)
    assert r.status_code == 200
    assert "sop_engine_timers_overdue" in r.text


def test_production_without_a_token_refuses_metrics(runtime: Runtime) -> None:
    for client in _app_client(runtime, metrics_open=False):
        r = client.get("/metrics", headers={"Authorization": "Bearer anything"})
        assert r.status_code == 403
        assert r.json()["message"] == (
            "metrics are off in production until SOP_ENGINE_METRICS_TOKEN is set"
        )


def test_a_user_token_is_not_a_scrape_token(production_client: TestClient, users: Users) -> None:
    assert production_client.get("/metrics", headers=users.auth("auditor")).status_code == 401


def test_serve_locks_metrics_in_production_and_opens_them_to_its_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOP_ENGINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SOP_ENGINE_DATABASE_URL", f"sqlite:///{tmp_path / 'serve.sqlite3'}")
    monkeypatch.setenv("SOP_ENGINE_MASTER_KEY", MasterKey.generate("k1").to_setting())
    scrape = {"Authorization": f"Bearer {TOKEN}"}
    # Development first: it migrates the database, which production only checks.
    for environment, token, bare, with_token in (
        ("development", None, 200, 200),
        ("development", TOKEN, 401, 200),
        ("production", None, 403, 403),
        ("production", TOKEN, 401, 200),
    ):
        monkeypatch.setenv("SOP_ENGINE_ENVIRONMENT", environment)
        if token is None:
            monkeypatch.delenv("SOP_ENGINE_METRICS_TOKEN", raising=False)
        else:
            monkeypatch.setenv("SOP_ENGINE_METRICS_TOKEN", token)
        get_settings.cache_clear()
        try:
            app = build_app()
        finally:
            get_settings.cache_clear()
        with TestClient(app) as c:
            got = (c.get("/metrics").status_code, c.get("/metrics", headers=scrape).status_code)
        app.state.runtime.db.dispose()
        assert got == (bare, with_token), (environment, token)
