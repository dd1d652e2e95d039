"""schemathesis against the API's own OpenAPI: no server error, and no answer the OpenAPI does
not document (status code, content type, body, headers), whoever calls.

The cases run against one app over a Runtime, shared by the whole module as a running
server's database is shared by its clients; the caseworker of ``TH-NGO-A`` has created a
referral holding the synthetic survivor name. Four passes over every operation:

- as a role the permission table admits, so that the cases reach the handlers; a third of
  the cases aim at things that exist (the referral, one of its SOP's events, an SOP of the
  library), another third put integers beyond 64 bits in the path; on SQLite and on
  PostgreSQL (which refuses NUL in text, and whose errors differ);
- hostile, as a permitted role, on both databases: NUL and other characters that are not
  text in path and query parameters, headers, JSON strings and keys, JSON nested too deep,
  SOP YAML with a NUL or nested hundreds of levels (:mod:`tests.api.hostile`); each must be
  a 4xx that names the field (an SOP's problems for its YAML);
- without a token: 401 only (``/health`` is public), on SQLite;
- as a role the table refuses: 403 only, on SQLite.

A request holding what is not text is refused (422, naming the field) before the door, as a
body that is not JSON is. No body, in any pass, carries a traceback or the survivor's name.
Generation is bounded and derandomized, so CI runs the same cases every time.

The schema is built at collection (``schemathesis.pytest.from_fixture`` reads
``Function._nodeid``, which pytest 9.2 no longer has), from an app that only documents; a
test checks that it is the OpenAPI the app under test serves.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis import Response
from schemathesis.checks import CheckFunction
from sqlalchemy import Engine

from api.app import create_app
from api.permissions import PERMISSIONS, PUBLIC
from api.users import create_user
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.directory.model import ServiceDirectory
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence.db import make_engine
from sop_engine.persistence.migrate import upgrade
from sop_engine.runtime.engine import Runtime
from tests.agencies import agency_directory

from .conftest import SOPS, SURVIVOR, referral_body
from .hostile import faults
from .hostile import install as install_hostile

if TYPE_CHECKING:
    # The generated requests' type: schemathesis names it for type checkers only.
    from schemathesis.specs.openapi.schemas import OpenApiCase

T = TypeVar("T")

_GENERATION = {
    "mode": "all",
    "deterministic": True,
    "database": "none",
    "with-security-parameters": False,
}

FUZZ = schemathesis.Config.from_dict(
    {
        "generation": {**_GENERATION, "max-examples": 6},
        "phases": {
            "coverage": {"unexpected-methods": ["DELETE"]},
            "stateful": {"enabled": False},
        },
    }
)
"""Permitted callers: the schema's examples, its boundary values (the coverage phase: each
bound, each wrong type, and DELETE where the path does not answer it; 405 is Starlette's, the
same for every method) and 6 generated cases."""

GATE = schemathesis.Config.from_dict(
    {
        "generation": {**_GENERATION, "max-examples": 3},
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
    }
)
"""Refused callers: the door is the same for every input, so a few cases each."""

OPENAPI: dict[str, Any] = create_app(
    cast(Runtime, None), sop_paths=[SOPS], directory=ServiceDirectory()
).openapi()
"""The OpenAPI as the app documents itself; documenting reads no runtime (checked below)."""

HOSTILE = schemathesis.Config.from_dict(
    {
        "generation": {**_GENERATION, "max-examples": 8},
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
    }
)
"""Hostile callers (a permitted role): 8 cases per operation, most of them hostile."""

permitted = schemathesis.openapi.from_dict(OPENAPI, config=FUZZ)
hostile = schemathesis.openapi.from_dict(OPENAPI, config=HOSTILE)
install_hostile(hostile)
refused = schemathesis.openapi.from_dict(OPENAPI, config=GATE)

SHARED_WORLD = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
"""The cases share the module's app and database, as a server's requests do."""

CHECKS: list[CheckFunction] = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.unsupported_method,
]

AGENCY = {"caseworker": "TH-NGO-A", "supervisor": "TH-NGO-A", "agency_focal_point": "LA-SW-B"}
ROLES = ("coordinator", "auditor", "caseworker", "supervisor", "agency_focal_point")


@dataclass(frozen=True)
class World:
    app: FastAPI
    tokens: dict[str, str]
    """A user's token for each role."""
    case_code: str
    events: list[str]
    """The events of the referral's SOP."""
    sops: list[tuple[str, int]]
    """Key and version of each SOP in the library."""


def _world(engine: Engine, library: SopLibrary) -> World:
    upgrade(engine)
    runtime = Runtime(
        engine, library, MasterKeyring(MasterKey.generate("test")), directory=agency_directory()
    )
    tokens = {role: create_user(engine, role, role, AGENCY.get(role)).token for role in ROLES}
    app = create_app(runtime, sop_paths=[SOPS])
    with TestClient(app) as client:
        created = client.post(
            "/referrals",
            json=referral_body(),
            headers={"Authorization": f"Bearer {tokens['caseworker']}"},
        )
    assert created.status_code == 201, created.text
    events = sorted(library.get("example.corridor", 1).spec.events)
    sops = sorted((s.key, s.version) for s in library)
    return World(app, tokens, created.json()["case_code"], events, sops)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, library: SopLibrary) -> Iterator[World]:
    """The world on SQLite: for the passes whose answers do not depend on the database."""
    folder: Path = tmp_path_factory.mktemp("fuzz")
    engine = make_engine(f"sqlite:///{folder / 'sop_engine.sqlite3'}")
    yield _world(engine, library)
    engine.dispose()


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ],
)
def any_world(request: pytest.FixtureRequest, library: SopLibrary) -> Iterator[World]:
    """The world on SQLite, then on a PostgreSQL database of its own (which refuses NUL in
    text, and whose errors differ): for the passes that reach the handlers."""
    if request.param == "sqlite":
        yield request.getfixturevalue("world")
        return
    admin: Engine = request.getfixturevalue("postgres_server")
    template: str = request.getfixturevalue("postgres_template")
    name = f"sop_fuzz_{uuid.uuid4().hex[:12]}"
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    engine = make_engine(admin.url.set(database=name).render_as_string(False))
    try:
        yield _world(engine, library)
    finally:
        engine.dispose()
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')


def _pick(value: object, choices: Sequence[T]) -> T:
    """A choice made by the generated value alone, so that runs stay deterministic."""
    return choices[zlib.crc32(repr(value).encode()) % len(choices)]


def _route(case: OpenApiCase) -> tuple[str, str]:
    """The operation's route (also for a case sent with a method the path does not answer)."""
    return case.operation.method.upper(), case.operation.path


def _other_method(case: OpenApiCase) -> bool:
    """A coverage case trying a method the path does not answer: 405 comes before the door."""
    return case.method.upper() != case.operation.method.upper()


BEYOND_64_BITS = 2**63
"""Generated integers seldom leave 64 bits, and no database column holds more."""


def _aim(case: OpenApiCase, world: World) -> None:
    """A third of the cases put things that exist in the path (the referral, one of its SOP's
    events, a library SOP's key and version): generated values alone would hardly ever get
    past a 404. Another third put every integer in the path just beyond 64 bits."""
    params = case.path_parameters
    if not params:
        return
    aim = _pick(params, ("exists", "beyond", "generated"))
    if aim == "exists":
        if "case_code" in params:
            params["case_code"] = world.case_code
        if "event" in params:
            params["event"] = _pick(params, world.events)
        if {"key", "version"} <= params.keys():
            params["key"], params["version"] = _pick(params, world.sops)
    elif aim == "beyond":
        for name, value in params.items():
            if isinstance(value, int) and not isinstance(value, bool):
                params[name] = BEYOND_64_BITS


def _send(case: OpenApiCase, world: World, role: str | None) -> Response:
    """Call the app as ``role`` (None: without a token), check the answer, return it."""
    _aim(case, world)
    headers = {"Authorization": f"Bearer {world.tokens[role]}"} if role else {}
    response = case.call(app=world.app, headers=headers)
    case.validate_response(response, checks=CHECKS, headers=headers)
    text = response.text
    assert "Traceback" not in text, text
    assert 'File "' not in text, text
    assert SURVIVOR not in text, text
    return response


def _permitted_role(case: OpenApiCase) -> str | None:
    route = _route(case)
    if route in PUBLIC:
        return None
    roles = sorted(PERMISSIONS.get(route, frozenset()))
    assert roles, f"{route} is missing from api/permissions.py"
    return _pick(case.path_parameters or case.query or case.body, roles)


@permitted.parametrize()
@SHARED_WORLD
def test_a_permitted_role_gets_no_server_error_and_only_documented_answers(
    case: OpenApiCase, any_world: World
) -> None:
    _send(case, any_world, _permitted_role(case))


@hostile.parametrize()
@SHARED_WORLD
def test_hostile_text_and_nesting_get_a_clear_4xx_naming_the_field(
    case: OpenApiCase, any_world: World
) -> None:
    """NUL and other characters that are not text anywhere, JSON and YAML nested deep
    (:mod:`tests.api.hostile`): refused with the field they are in, never a 500."""
    response = _send(case, any_world, _permitted_role(case))
    found = faults(case, response.request)
    if not found or _other_method(case):
        return
    body = response.json()
    if found == ["body"] and "yaml" in response.request.headers["content-type"]:  # an SOP
        if response.status_code == 200:
            assert body["valid"] is False, response.text
            assert body["problems"], response.text
        else:  # the SOP's problems, or another field refused first (a header)
            assert response.status_code == 422, response.text
            assert body["error"] == "definition_error" or body["field"] != "body", response.text
        return
    assert response.status_code == 422, response.text
    assert body["error"] == "invalid_input", response.text
    assert body["field"] in found, (found, response.text)


def _refused_with(case: OpenApiCase, response: Response, status: int) -> None:
    """``status``, or 422 for a body that is not JSON: FastAPI reads a JSON body before any
    dependency runs, the token check included (the answer names nothing but ``body``); or
    422 naming a field that holds what is not text, which is refused before anything else
    (:mod:`api.characters`)."""
    if response.status_code == 422 and not _is_json(response.request.body):
        assert response.json()["field"] == "body", response.text
        return
    if response.status_code == 422 and faults(case, response.request):
        assert response.json()["field"] in faults(case, response.request), response.text
        return
    assert response.status_code == status, response.text


def _is_json(body: object) -> bool:
    """Whether a request body (empty, or text or bytes for the cases generated here) is JSON."""
    if not body:
        return True
    if not isinstance(body, bytes | str):
        return False
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


@refused.parametrize()
@SHARED_WORLD
def test_without_a_token_the_answer_is_401(case: OpenApiCase, world: World) -> None:
    response = _send(case, world, None)
    if _route(case) not in PUBLIC and not _other_method(case):
        _refused_with(case, response, 401)


@refused.parametrize()
@SHARED_WORLD
def test_a_refused_role_gets_403(case: OpenApiCase, world: World) -> None:
    route = _route(case)
    others = sorted(set(ROLES) - PERMISSIONS.get(route, frozenset()))
    if route in PUBLIC or not others:
        return
    response = _send(case, world, _pick(case.path_parameters or case.body, others))
    if not _other_method(case):
        _refused_with(case, response, 403)


@pytest.mark.parametrize(
    "moment",
    [
        "9999-12-31T23:59:59-14:00",  # past the calendar's end in UTC: a 500 once
        "0001-01-01T00:00:00+14:00",  # before its start in UTC
        "9999-12-30T00:00:00Z",  # accepted, then the first deadline from it was a 500
    ],
)
@pytest.mark.parametrize("field", ["incident_at", "disclosed_at"])
def test_a_moment_at_the_calendars_edge_is_refused_not_a_server_error(
    world: World, field: str, moment: str
) -> None:
    """Regression: generated date-times seldom reach these edges, so they are tried here."""
    with TestClient(world.app, raise_server_exceptions=False) as client:
        r = client.post(
            "/referrals",
            json=referral_body(**{field: moment}),
            headers={"Authorization": f"Bearer {world.tokens['caseworker']}"},
        )
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
    assert moment not in r.text


def test_the_fuzzed_schema_is_the_one_the_app_serves(world: World) -> None:
    with TestClient(world.app) as client:
        assert client.get("/openapi.json").json() == OPENAPI


def _has_example(node: dict[str, Any]) -> bool:
    """Whether a schema, or a branch of it (an optional body is ``anyOf [model, null]``),
    after following ``$ref``, gives an example."""
    while "$ref" in node:
        target: Any = OPENAPI
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    if {"example", "examples"} & node.keys():
        return True
    return any(_has_example(b) for key in ("anyOf", "oneOf", "allOf") for b in node.get(key, ()))


def test_every_request_body_has_an_example() -> None:
    """The convention "OpenAPI with examples": a client sees a body that works, in the
    OpenAPI itself (``examples`` on the model, or ``example`` on the body's media type)."""
    missing = []
    for path, operations in OPENAPI["paths"].items():
        for method, operation in operations.items():
            for media_type, content in operation.get("requestBody", {}).get("content", {}).items():
                if not _has_example(content) and not _has_example(content.get("schema", {})):
                    missing.append(f"{method.upper()} {path} ({media_type})")
    assert not missing, "request bodies without an example:\n" + "\n".join(missing)
