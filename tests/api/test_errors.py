"""Errors: one mapping from the domain's tree to HTTP; no stack trace, no personal data."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.errors import CatchAll, domain_response
from sop_engine.errors import (
    ConcurrentChange,
    ConfigurationError,
    ConsentMissing,
    DefinitionError,
    GuardFailed,
    IdempotencyKeyReused,
    InvalidInput,
    MissingFacts,
    MissingMasterKey,
    NotFound,
    Problem,
    RoleNotAllowed,
    SopEngineError,
    TamperedData,
    TransitionNotAllowed,
)
from sop_engine.runtime.engine import Runtime

from .conftest import SURVIVOR, Users, referral_body


@pytest.mark.parametrize(
    ("error", "status", "kind", "extra"),
    [
        (NotFound("no referral X"), 404, "not_found", {}),
        (InvalidInput("bad", field="facts.x"), 422, "invalid_input", {"field": "facts.x"}),
        (IdempotencyKeyReused("again", field="Idempotency-Key"), 422, "invalid_input", {}),
        (RoleNotAllowed("no"), 403, "role_not_allowed", {}),
        (ConsentMissing("no consent"), 403, "consent_missing", {}),
        (TransitionNotAllowed("no", available=["a"]), 409, "transition_not_allowed", {}),
        (GuardFailed("guard"), 409, "guard_failed", {}),
        (MissingFacts("facts", missing=["risk_level"]), 409, "missing_facts", {}),
        (ConcurrentChange("later", current_version=4), 409, "concurrent_change", {}),
        (DefinitionError([Problem("f.yaml", 3, "bad")]), 422, "definition_error", {}),
        (ConfigurationError("no key"), 500, "internal", {}),
        (TamperedData("bad tag"), 500, "internal", {}),
        (MissingMasterKey("no key 'k2'"), 503, "unavailable", {}),
    ],
)
def test_each_domain_error_has_its_status(
    error: SopEngineError, status: int, kind: str, extra: dict[str, object]
) -> None:
    response = domain_response(error)
    body = json.loads(bytes(response.body))
    assert response.status_code == status
    assert body["error"] == kind
    assert body.items() >= extra.items()
    if isinstance(error, MissingMasterKey):  # another process, on the new ring, can answer
        assert response.headers["Retry-After"] == "5"
        assert "k2" not in body["message"]
    if isinstance(error, MissingFacts):
        assert body["missing"] == ["risk_level"]
    if isinstance(error, ConcurrentChange):
        assert body["current_version"] == 4
    if isinstance(error, DefinitionError):
        assert body["problems"][0] == {
            "file": "f.yaml",
            "line": 3,
            "message": "bad",
            "sop": None,
            "state": None,
            "hint": None,
        }
    if status == 500:
        assert str(error) not in bytes(response.body).decode()


@pytest.fixture
def crashing() -> Iterator[TestClient]:
    app = FastAPI()
    app.add_middleware(CatchAll)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError(f"secret detail about {SURVIVOR}")

    with TestClient(app, raise_server_exceptions=True) as c:
        yield c


def test_a_bug_is_a_bare_500_without_trace_or_detail(crashing: TestClient) -> None:
    r = crashing.get("/boom")
    assert r.status_code == 500
    assert r.json() == {"error": "internal", "message": "internal error; it has been logged"}
    assert "Traceback" not in r.text
    assert SURVIVOR not in r.text


def test_no_response_carries_a_trace_or_the_survivor_name(
    client: TestClient, users: Users, runtime: Runtime
) -> None:
    """A tour of the API with a referral holding a synthetic name: every body is clean."""
    cw = users.auth("caseworker")
    created = client.post("/referrals", json=referral_body(), headers=cw)
    code = created.json()["case_code"]
    responses = [
        created,
        client.get(f"/referrals/{code}", headers=cw),
        client.get(f"/referrals/{code}", headers=users.auth("focal_point")),
        client.get(f"/referrals/{code}", headers=users.auth("coordinator")),
        client.get(f"/referrals/{code}"),
        client.post(f"/referrals/{code}/events/record_consent", headers=cw),
        client.post(f"/referrals/{code}/events/no_such_event", headers=cw),
        client.post(
            f"/referrals/{code}/events/record_consent",
            json={"facts": {"survivor_name": SURVIVOR}},
            headers=cw,
        ),
        client.post(
            f"/referrals/{code}/events/record_consent",
            json={"facts": {"survivor_age": SURVIVOR}},
            headers=cw,
        ),
        client.post("/referrals", json=referral_body(survivor_name=SURVIVOR), headers=cw),
        client.post("/referrals", json=referral_body(facts={"survivor_age": SURVIVOR}), headers=cw),
        client.post("/referrals", json=referral_body(facts={"no_such_fact": SURVIVOR}), headers=cw),
        client.post("/referrals", json=referral_body(incident_at=SURVIVOR), headers=cw),
        client.post("/referrals", content=f"{{{SURVIVOR}", headers=cw),
        client.post(
            "/sops/validate",
            content=f"key: {SURVIVOR}\n: [",
            headers={**users.auth("coordinator"), "Content-Type": "application/yaml"},
        ),
    ]
    for r in responses:
        assert r.status_code != 500, r.text
        assert "Traceback" not in r.text
        assert 'File "' not in r.text
        assert SURVIVOR not in r.text, (r.request.method, r.request.url, r.text)
