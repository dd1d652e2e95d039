"""Request bodies over the limit are refused with 413, however they are sent, and nothing is
stored; bodies under it pass through untouched."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from sop_engine.language.limits import MAX_FILE_BYTES
from sop_engine.persistence import tables
from sop_engine.runtime.engine import Runtime

from .conftest import Users, referral_body

LIMIT = 4096


@pytest.fixture
def small_client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime, max_request_bytes=LIMIT)) as c:
        yield c


def referrals_stored(runtime: Runtime) -> int:
    with runtime.db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(tables.referrals)).scalar_one())


def test_a_body_over_the_limit_is_refused_with_413_and_nothing_is_stored(
    small_client: TestClient, users: Users, runtime: Runtime
) -> None:
    body = referral_body(facts={"survivor_age": 24, "service_needed": "x" * (LIMIT * 2)})
    r = small_client.post("/referrals", json=body, headers=users.auth("caseworker"))
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"
    assert referrals_stored(runtime) == 0


def test_a_streamed_body_without_content_length_is_cut_at_the_limit(
    small_client: TestClient, users: Users, runtime: Runtime
) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 1024

    headers = {**users.auth("caseworker"), "Content-Type": "application/json"}
    r = small_client.post("/referrals", content=chunks(), headers=headers)
    assert r.status_code == 413
    assert referrals_stored(runtime) == 0


def test_a_body_under_the_limit_reaches_the_route(
    small_client: TestClient, users: Users, runtime: Runtime
) -> None:
    r = small_client.post("/referrals", json=referral_body(), headers=users.auth("caseworker"))
    assert r.status_code == 201, r.text
    assert referrals_stored(runtime) == 1


def test_the_default_limit_admits_an_sop_of_the_compilers_maximum_size(
    client: TestClient, users: Users
) -> None:
    """An SOP upload at the compiler's own limit reaches the compiler, which answers with its
    own report, instead of being cut off by the API's size limit."""
    text = b"# " + b"x" * (MAX_FILE_BYTES - 3) + b"\n"
    headers = {**users.auth("coordinator"), "Content-Type": "application/yaml"}
    r = client.post("/sops/validate", content=text, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["valid"] is False
