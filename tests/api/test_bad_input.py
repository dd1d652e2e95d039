"""Bad input is a clear 4xx naming the field, never a 500, on SQLite and PostgreSQL.

Regression: a NUL (``%00``) in a path or query parameter was a 500 on PostgreSQL, which
refuses NUL in text; a lone surrogate in JSON was a 500 on both (it cannot be encoded); a
NUL in a JSON fact was stored. Every route is tried with a NUL in each of its path and query
parameters, as the role the permission table admits, with a referral that exists.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from api.characters import MAX_JSON_DEPTH
from api.permissions import PERMISSIONS
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.runtime.engine import Runtime

from .conftest import SURVIVOR, Users, referral_body

ROLE_OF = {
    "coordinator": "coordinator",
    "auditor": "auditor",
    "caseworker": "caseworker",
    "supervisor": "supervisor",
    "agency_focal_point": "focal_point",
}


@pytest.fixture
def runtime(engine: Engine, library: SopLibrary) -> Runtime:
    """The API's runtime on SQLite, then on PostgreSQL."""
    return Runtime(engine, library, MasterKeyring(MasterKey.generate("test")))


def _routes(client: TestClient) -> Iterator[tuple[str, str, list[str], list[str]]]:
    """Method, path template, path parameters and query parameters of every API route, as
    its OpenAPI documents them."""
    openapi: dict[str, Any] = client.app.openapi()  # type: ignore[attr-defined]
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            params = operation.get("parameters", [])
            yield (
                method.upper(),
                path,
                [p["name"] for p in params if p["in"] == "path"],
                [p["name"] for p in params if p["in"] == "query"],
            )


def _existing(case_code: str) -> dict[str, str]:
    return {
        "case_code": case_code,
        "key": "example.corridor",
        "version": "1",
        "event": "record_consent",
        "grant_id": "1",
        "task_id": "1",
        "notice_id": "1",
        "agency_id": "TH-NGO-A",
        "clock": "medical_follow_up",
    }


def _caller(users: Users, method: str, path: str) -> dict[str, str]:
    roles = sorted(PERMISSIONS.get((method, path), frozenset()))
    return users.auth(ROLE_OF[roles[0]]) if roles else {}


def _referrals(db: Engine) -> int:
    with db.connect() as conn:
        count: int = conn.execute(select(func.count()).select_from(tables.referrals)).scalar_one()
        return count


def test_a_nul_in_any_path_parameter_is_422_naming_it(
    client: TestClient, users: Users, case_code: str
) -> None:
    tried = 0
    for method, path, params, _ in _routes(client):
        for bad in params:
            values = {**_existing(case_code), bad: "R7KQ%00M2XD"}
            url = path.format(**values)
            r = client.request(method, url, headers=_caller(users, method, path))
            tried += 1
            if bad == "version":  # not a whole number: the route does not match it at all
                assert r.status_code in (404, 422), (method, path, r.text)
                continue
            assert r.status_code == 422, (method, url, r.text)
            assert r.json()["field"] == bad, (method, url, r.text)
            assert "U+0000" in r.json()["message"]
    assert tried >= 20


def test_a_nul_in_any_query_parameter_is_422_naming_it(
    client: TestClient, users: Users, case_code: str
) -> None:
    tried = 0
    for method, path, params, query in _routes(client):
        url = path.format(**{p: _existing(case_code)[p] for p in params})
        for name in query:
            r = client.request(method, f"{url}?{name}=a%00b", headers=_caller(users, method, path))
            tried += 1
            assert r.status_code == 422, (method, url, name, r.text)
            assert r.json()["field"] == name
    assert tried >= 10


@pytest.mark.parametrize(
    ("query", "field"),
    [("case_code=%FF", "query"), ("%00=1", "query"), ("case_code=a%0Bb", "case_code")],
)
def test_a_query_that_is_not_text_is_refused(
    client: TestClient, users: Users, query: str, field: str
) -> None:
    r = client.get(f"/audit/access-log?{query}", headers=users.auth("auditor"))
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


def test_a_path_that_is_not_utf8_is_refused(client: TestClient, users: Users) -> None:
    r = client.get("/referrals/R7KQ%FF", headers=users.auth("caseworker"))
    assert r.status_code == 422
    assert r.json()["field"] == "path"


def test_a_nul_in_the_idempotency_key_is_422(
    client: TestClient, users: Users, case_code: str
) -> None:
    r = client.post(
        f"/referrals/{case_code}/events/record_consent",
        json={"facts": {"safe_contact_method": "text_message"}},
        headers={**users.auth("caseworker"), "Idempotency-Key": "retry\x00-1"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "idempotency-key"


@pytest.mark.parametrize(
    ("facts", "field", "code"),
    [
        ({"survivor_name": "Nali\u0000nee"}, "facts.survivor_name", "U+0000"),
        ({"survivor_name": "Nali\ud800nee"}, "facts.survivor_name", "U+D800"),
        ({"survivor_name": "Nali\u001bnee"}, "facts.survivor_name", "U+001B"),
        ({"survivor_\u0000name": "x"}, "facts", "U+0000"),
        (
            {"services_requested": ["clinical", "le\u0000gal"]},
            "facts.services_requested.1",
            "U+0000",
        ),
    ],
)
def test_a_json_fact_that_is_not_text_is_refused_and_nothing_is_stored(
    client: TestClient, users: Users, runtime: Runtime, facts: dict[str, Any], field: str, code: str
) -> None:
    """Regression: a NUL in a sealed fact was stored (201)."""
    body = referral_body(facts={**facts, "survivor_age": 24})
    # json.dumps escapes what is not ASCII, as every client does: "\u0000", "\ud800".
    r = client.post(
        "/referrals",
        content=json.dumps(body),
        headers={**users.auth("caseworker"), "Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
    assert code in r.json()["message"]
    assert "Nali" not in r.text
    assert _referrals(runtime.db) == 0


def test_text_with_tabs_and_line_breaks_and_any_script_is_accepted(
    client: TestClient, users: Users
) -> None:
    name = f"{SURVIVOR}\tນາລີ\nนาลินี ❤"
    r = client.post(
        "/referrals",
        json=referral_body(facts={"survivor_name": name, "survivor_age": 24}),
        headers=users.auth("caseworker"),
    )
    assert r.status_code == 201, r.text


def test_a_json_body_nested_too_deep_is_refused(client: TestClient, users: Users) -> None:
    deep: Any = "x"
    for _ in range(MAX_JSON_DEPTH + 10):
        deep = [deep]
    r = client.post(
        "/referrals",
        json=referral_body(facts={"services_requested": deep}),
        headers=users.auth("caseworker"),
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"].startswith("facts.services_requested.0.0")
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in r.json()["message"]
    very_deep = "[" * 100_000 + "]" * 100_000
    r = client.post(
        "/referrals",
        content=very_deep,
        headers={**users.auth("caseworker"), "Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "body"


def test_an_sop_upload_with_a_nul_is_a_definition_error_at_its_line(
    client: TestClient, users: Users
) -> None:
    text = b"key: example.corridor\nversion: 2\ntitle: a\x00b\n"
    headers = {**users.auth("coordinator"), "Content-Type": "application/yaml"}
    r = client.post("/sops", content=text, headers=headers)
    assert r.status_code == 422, r.text
    (problem,) = r.json()["problems"]
    assert (problem["line"], problem["message"]) == (3, "character 0x0000 is not allowed in YAML")
    r = client.post("/sops/validate", content=text, headers=headers)
    assert r.status_code == 200
    assert r.json()["problems"] == [problem]


@pytest.mark.parametrize("levels", [329, 400, 900])
def test_an_sop_nested_any_depth_is_a_definition_error_with_its_line(
    client: TestClient, users: Users, levels: int
) -> None:
    """Regression: 329 levels and more answered 500 (a RecursionError)."""
    text = "".join("  " * i + "a:\n" for i in range(levels)) + "  " * levels + "b: 1\n"
    headers = {**users.auth("coordinator"), "Content-Type": "application/yaml"}
    r = client.post("/sops/validate", content=text, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["problems"] == [
        {
            "file": "upload.sop.yaml",
            "line": 33,
            "message": "refused: nesting deeper than 32 levels",
            "sop": None,
            "state": None,
            "hint": None,
        }
    ]
    r = client.post("/sops", content=text, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "definition_error"
    flow = "key: " + "[" * levels + "]" * levels + "\n"
    r = client.post("/sops", content=flow, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["problems"][0]["line"] == 1
