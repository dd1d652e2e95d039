"""Failed authentication is limited per client: 1,000 bad tokens from one address meet 429
with ``Retry-After`` after the limit, while good tokens (of another client, or of the same
address) are served throughout; the count is shared by API processes on the same database,
exact under concurrent attempts, written to the access log without the token, and forgotten
when the window ends. SQLite and PostgreSQL.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine, event, select

from api.app import create_app
from api.auth_limits import AuthFailures, FailedAuthLimit, client_key
from api.users import create_user
from cli.serve import build_app
from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.runtime.engine import Runtime
from sop_engine.settings import Settings, get_settings

START = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
ATTACKER = ("203.0.113.7", 41000)
COLLEAGUE = ("198.51.100.20", 52000)
LIMIT = FailedAuthLimit(limit=20, window=timedelta(minutes=5))
_A = tables.access_log
_F = tables.auth_failures


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def runtime(engine: Engine, library: SopLibrary, clock: ManualClock) -> Runtime:
    return Runtime(engine, library, MasterKeyring(MasterKey.generate("test")), clock)


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return create_app(runtime, auth_limit=LIMIT)


@pytest.fixture
def clients(app: FastAPI) -> Iterator[dict[str, TestClient]]:
    with TestClient(app, client=ATTACKER) as a, TestClient(app, client=COLLEAGUE) as c:
        yield {"attacker": a, "colleague": c}


@pytest.fixture
def token(runtime: Runtime, clock: ManualClock) -> str:
    """A real auditor's token."""
    return create_user(runtime.db, "aud", "auditor", now=clock.now()).token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def guess() -> dict[str, str]:
    return bearer(secrets.token_urlsafe(32))


def logged(runtime: Runtime) -> list[tuple[str, str, str | None]]:
    with runtime.db.connect() as conn:
        rows = conn.execute(
            select(_A.c.action, _A.c.actor_id, _A.c.client)
            .where(_A.c.action.like("auth.%"))
            .order_by(_A.c.id)
        ).all()
    return [(r.action, r.actor_id, r.client) for r in rows]


def test_a_thousand_bad_tokens_meet_429_while_another_client_is_served(
    clients: dict[str, TestClient], runtime: Runtime, token: str
) -> None:
    attacker, colleague = clients["attacker"], clients["colleague"]
    statuses = []
    guesses = []
    for n in range(1000):
        headers = guess()
        guesses.append(headers["Authorization"].split()[1])
        r = attacker.get("/audit/referrals", headers=headers)
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert r.json()["error"] == "too_many_requests"
            assert 1 <= int(r.headers["Retry-After"]) <= 300
        if n % 100 == 0:
            assert colleague.get("/audit/referrals", headers=bearer(token)).status_code == 200
    assert statuses == [401] * LIMIT.limit + [429] * (1000 - LIMIT.limit)
    # The limit is on failures: a colleague's good token from the same address is served.
    assert attacker.get("/audit/referrals", headers=bearer(token)).status_code == 200

    entries = logged(runtime)
    assert entries == [("auth.unknown_token", "unauthenticated", ATTACKER[0])] * LIMIT.limit + [
        ("auth.limited", "unauthenticated", ATTACKER[0])
    ]
    with runtime.db.connect() as conn:
        everything = " ".join(str(tuple(row)) for row in conn.execute(select(_A)))
    assert not any(g in everything or g[:12] in everything for g in guesses)


def test_the_window_ends_and_the_client_may_try_again(
    clients: dict[str, TestClient], runtime: Runtime, clock: ManualClock
) -> None:
    attacker = clients["attacker"]
    for _ in range(LIMIT.limit):
        assert attacker.get("/sops", headers=guess()).status_code == 401
    clock.advance(timedelta(minutes=2))
    r = attacker.get("/sops", headers=guess())
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "180"
    clock.advance(timedelta(minutes=3) - timedelta(seconds=1))
    assert attacker.get("/sops", headers=guess()).headers["Retry-After"] == "1"
    clock.advance(timedelta(seconds=1))
    assert attacker.get("/sops", headers=guess()).status_code == 401  # a fresh window
    with runtime.db.connect() as conn:
        assert conn.execute(select(_F.c.failures)).scalars().all() == [1]


def test_good_tokens_do_not_reset_the_count_and_requests_without_one_are_not_counted(
    clients: dict[str, TestClient], token: str
) -> None:
    attacker = clients["attacker"]
    for _ in range(LIMIT.limit - 1):
        assert attacker.get("/sops", headers=guess()).status_code == 401
        assert attacker.get("/audit/referrals", headers=bearer(token)).status_code == 200
        assert attacker.get("/sops").status_code == 401
    assert attacker.get("/sops", headers=guess()).status_code == 401
    assert attacker.get("/sops", headers=guess()).status_code == 429
    assert attacker.get("/sops").status_code == 401  # no token: nothing to limit
    assert attacker.get("/health").status_code == 200


def test_a_forwarded_for_header_does_not_make_another_client(
    clients: dict[str, TestClient],
) -> None:
    """Only the server (uvicorn, for a trusted proxy) may say who the client is."""
    attacker = clients["attacker"]
    for n in range(LIMIT.limit + 5):
        headers = {**guess(), "X-Forwarded-For": f"192.0.2.{n}", "X-Real-IP": f"192.0.2.{n}"}
        r = attacker.get("/sops", headers=headers)
    assert r.status_code == 429


def test_the_count_is_shared_by_api_processes_on_one_database(runtime: Runtime, token: str) -> None:
    """Two applications share nothing but the database, as two processes would."""
    first, second = create_app(runtime, auth_limit=LIMIT), create_app(runtime, auth_limit=LIMIT)
    with TestClient(first, client=ATTACKER) as a, TestClient(second, client=ATTACKER) as b:
        for n in range(LIMIT.limit):
            assert (a if n % 2 else b).get("/sops", headers=guess()).status_code == 401
        assert a.get("/sops", headers=guess()).status_code == 429
        assert b.get("/sops", headers=guess()).status_code == 429
        assert b.get("/audit/referrals", headers=bearer(token)).status_code == 200


def test_concurrent_failures_are_each_counted(app: FastAPI, runtime: Runtime) -> None:
    """No lost update: every attempt that was answered 401 is in the count and the log; the
    limit is overshot by at most the attempts already in flight."""
    threads = 8

    def attack(_: int) -> list[int]:
        with TestClient(app, client=ATTACKER) as c:
            return [c.get("/sops", headers=guess()).status_code for _ in range(6)]

    with ThreadPoolExecutor(threads) as pool:
        statuses = [s for batch in pool.map(attack, range(threads)) for s in batch]
    assert set(statuses) <= {401, 429}
    unauthorized = statuses.count(401)
    assert LIMIT.limit <= unauthorized <= LIMIT.limit + threads - 1
    failures = [e for e in logged(runtime) if e[0] == "auth.unknown_token"]
    limited = [e for e in logged(runtime) if e[0] == "auth.limited"]
    assert len(failures) == unauthorized
    assert len(limited) <= 1
    with runtime.db.connect() as conn:
        counted = conn.execute(select(_F.c.failures)).scalar_one()
    assert counted == unauthorized + len(limited)


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("testclient", "testclient"),
        (None, "unknown"),
        ("x" * 100, "x" * 64),
    ],
)
def test_clients_are_counted_by_address_and_ipv6_hosts_by_their_64(
    host: str | None, key: str
) -> None:
    assert client_key(host) == key


def test_a_limit_needs_an_attempt_and_a_window() -> None:
    with pytest.raises(ValueError, match="at least one failed attempt"):
        FailedAuthLimit(limit=0)
    with pytest.raises(ValueError, match="longer than zero"):
        FailedAuthLimit(window=timedelta(0))


def test_serve_takes_the_limit_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOP_ENGINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SOP_ENGINE_DATABASE_URL", f"sqlite:///{tmp_path / 'serve.sqlite3'}")
    monkeypatch.setenv("SOP_ENGINE_AUTH_FAILURE_LIMIT", "3")
    monkeypatch.setenv("SOP_ENGINE_AUTH_FAILURE_WINDOW_SECONDS", "60")
    get_settings.cache_clear()
    try:
        app = build_app()
    finally:
        get_settings.cache_clear()
    assert app.state.auth_limit == FailedAuthLimit(3, timedelta(seconds=60))
    with TestClient(app) as c:
        assert [c.get("/sops", headers=guess()).status_code for _ in range(4)] == [401] * 3 + [429]
    app.state.runtime.db.dispose()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SOP_ENGINE_AUTH_FAILURE_LIMIT", "0"),
        ("SOP_ENGINE_AUTH_FAILURE_WINDOW_SECONDS", "0"),
        ("SOP_ENGINE_TOKEN_LIFETIME_DAYS", "0"),
        ("SOP_ENGINE_TOKEN_LIFETIME_DAYS", "ninety"),
    ],
)
def test_a_bad_limit_or_lifetime_setting_is_refused(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("SOP_ENGINE_").lower()):
        Settings()


def test_failures_of_two_clients_at_once_never_deadlock(postgres_engine: Engine) -> None:
    """Each failure holds its client's row and forgets stale rows: two failures of two
    clients whose windows both ended, meeting at that moment, must not wait on each other."""
    clock = ManualClock(START)
    failures = AuthFailures(postgres_engine, clock, LIMIT)
    for client in ("203.0.113.1", "203.0.113.2"):
        failures.record(client, "unknown_token")
    clock.advance(LIMIT.window + timedelta(seconds=1))
    meet = threading.Barrier(2, timeout=20)

    def both_hold_their_rows(_: object, __: object, statement: str, *rest: object) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM AUTH_FAILURES"):
            meet.wait()

    event.listen(postgres_engine, "before_cursor_execute", both_hold_their_rows)
    try:
        with ThreadPoolExecutor(2) as pool:
            done = pool.map(
                lambda c: failures.record(c, "unknown_token"), ["203.0.113.1", "203.0.113.2"]
            )
            list(done)
    finally:
        event.remove(postgres_engine, "before_cursor_execute", both_hold_their_rows)
    with postgres_engine.connect() as conn:
        rows = conn.execute(select(_F.c.client, _F.c.failures).order_by(_F.c.client)).all()
    assert [tuple(r) for r in rows] == [("203.0.113.1", 1), ("203.0.113.2", 1)]
