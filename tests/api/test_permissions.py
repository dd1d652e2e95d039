"""The role-by-route table covers every route, and each route admits and refuses by it."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from api.app import create_app
from api.permissions import PERMISSIONS, PUBLIC, allowed
from api.users import ROLES
from sop_engine.runtime.engine import Runtime

from .conftest import Users


def app_routes(runtime: Runtime) -> set[tuple[str, str]]:
    """(method, path) of every API route, as served (routers included and flattened)."""
    app = create_app(runtime)
    found: set[tuple[str, str]] = set()
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            found.update((m, str(context.path)) for m in context.methods or ())
    assert found, "no routes found: has FastAPI changed how it lists them?"
    return found


def test_each_route_is_served_at_its_own_path(runtime: Runtime) -> None:
    """``authorize`` keys the table by the matched route's own path: an ``include_router``
    prefix would make the two differ, and every request on that route would be refused."""
    for context in iter_route_contexts(create_app(runtime).routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            assert route.path == context.path


def test_every_route_is_in_the_permission_table(runtime: Runtime) -> None:
    routes = app_routes(runtime)
    missing = routes - set(PERMISSIONS) - PUBLIC
    assert not missing, f"routes missing from api/permissions.py: {sorted(missing)}"


def test_the_table_names_no_route_that_does_not_exist(runtime: Runtime) -> None:
    stale = (set(PERMISSIONS) | PUBLIC) - app_routes(runtime)
    assert not stale, f"entries for routes that do not exist: {sorted(stale)}"


def test_only_the_documentation_routes_are_outside_the_api_routes(runtime: Runtime) -> None:
    others = {
        c.path
        for c in iter_route_contexts(create_app(runtime).routes)
        if not isinstance(c.original_route, APIRoute)
    }
    assert others <= {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def test_a_route_missing_from_the_table_is_refused() -> None:
    assert not allowed("DELETE", "/sops", "coordinator")


# (method, path, body, a role allowed, a role refused); {code} is a referral's case code.
CASES = [
    ("GET", "/sops", None, "coordinator", "caseworker"),
    ("GET", "/sops", None, "auditor", "focal_point"),
    ("GET", "/sops/example.corridor/1", None, "auditor", "caseworker"),
    ("GET", "/sops/example.corridor/1/diagram", None, "coordinator", "supervisor"),
    ("POST", "/sops/validate", "key: x\n", "coordinator", "auditor"),
    ("POST", "/sops", "key: x\n", "coordinator", "auditor"),
    ("GET", "/sops/pending", None, "auditor", "caseworker"),
    ("GET", "/sops/example.corridor/9/source", None, "coordinator", "focal_point"),
    ("POST", "/sops/example.corridor/9/approve", None, "coordinator", "auditor"),
    ("POST", "/sops/example.corridor/9/refuse", None, "coordinator", "auditor"),
    ("PUT", "/directory/agencies/TH-MSDHS", {"name": "x"}, "coordinator", "supervisor"),
    ("POST", "/referrals", "referral", "caseworker", "coordinator"),
    ("POST", "/referrals", "referral", "caseworker", "focal_point"),
    ("GET", "/referrals/{code}", None, "caseworker", "auditor"),
    ("GET", "/referrals/{code}", None, "supervisor", "coordinator"),
    ("POST", "/referrals/{code}/events/complete_assessment", {}, "caseworker", "auditor"),
    ("GET", "/referrals/{code}/disclosed", None, "focal_point", "auditor"),
    ("GET", "/tasks", None, "focal_point", "coordinator"),
    ("GET", "/tasks", None, "caseworker", "auditor"),
    ("GET", "/tasks/00000000-0000-0000-0000-000000000000", None, "supervisor", "auditor"),
    (
        "POST",
        "/tasks/00000000-0000-0000-0000-000000000000/acknowledge",
        None,
        "focal_point",
        "coordinator",
    ),
    ("POST", "/tasks/00000000-0000-0000-0000-000000000000/accept", None, "focal_point", "auditor"),
    (
        "POST",
        "/tasks/00000000-0000-0000-0000-000000000000/decline",
        {"reason": "no_capacity"},
        "focal_point",
        "coordinator",
    ),
    (
        "POST",
        "/tasks/00000000-0000-0000-0000-000000000000/deliver",
        {"outcome": "successful"},
        "caseworker",
        "auditor",
    ),
    ("GET", "/referrals/{code}/events", None, "caseworker", "coordinator"),
    ("GET", "/referrals/{code}/events", None, "focal_point", "auditor"),
    ("POST", "/referrals/{code}/consents", {"given_by": "survivor"}, "caseworker", "focal_point"),
    ("GET", "/referrals/{code}/consents", None, "supervisor", "focal_point"),
    ("GET", "/referrals/{code}/consents", None, "caseworker", "auditor"),
    (
        "POST",
        "/referrals/{code}/consents/00000000-0000-0000-0000-000000000000/withdrawal",
        None,
        "supervisor",
        "focal_point",
    ),
    ("POST", "/referrals/{code}/withdrawal-acknowledgement", None, "focal_point", "caseworker"),
    ("GET", "/audit/referrals", None, "auditor", "coordinator"),
    ("GET", "/audit/referrals/{code}/timeline", None, "auditor", "caseworker"),
    ("GET", "/audit/access-log", None, "auditor", "supervisor"),
    ("GET", "/audit/compliance", None, "coordinator", "focal_point"),
]


@pytest.mark.parametrize(("method", "path", "body", "yes", "no"), CASES)
def test_each_route_admits_an_allowed_role_and_refuses_another(
    client: TestClient,
    users: Users,
    case_code: str,
    method: str,
    path: str,
    body: object,
    yes: str,
    no: str,
) -> None:
    from .conftest import referral_body

    url = path.format(code=case_code)
    sent_json: object = None
    content: str | None = None
    content_type: dict[str, str] = {}
    if body == "referral":
        sent_json = referral_body()
    elif isinstance(body, str):
        content = body
        content_type = {"Content-Type": "application/yaml"}
    elif body is not None:
        sent_json = body

    def call(who: str) -> int:
        headers = {**content_type, **users.auth(who)}
        r = client.request(method, url, headers=headers, json=sent_json, content=content)
        status: int = r.status_code
        return status

    assert call(no) == 403
    assert call(yes) not in (401, 403, 500)


def test_health_needs_no_token(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


ROLE_USERS = {
    "coordinator": "coordinator",
    "auditor": "auditor",
    "caseworker": "caseworker",
    "supervisor": "supervisor",
    "agency_focal_point": "focal_point",
}
PARAMETERS = {
    "task_id": "00000000-0000-0000-0000-000000000000",
    "grant_id": "00000000-0000-0000-0000-000000000000",
    "notice_id": "00000000-0000-0000-0000-000000000000",
    "event": "complete_assessment",
    "key": "example.corridor",
    "version": "1",
    "agency_id": "TH-MSDHS",
    "clock": "medical_follow_up",
}


def test_every_route_with_every_role_and_without_a_token(
    client: TestClient, users: Users, case_code: str
) -> None:
    """The whole matrix: a role the table refuses gets 403 ``forbidden`` from every route, a
    role it admits never does (it may meet the SOP's own refusals, which say so), and no
    route but ``/health`` answers without a token."""
    assert set(ROLE_USERS) == set(ROLES)
    checked = 0
    for (method, template), admitted in sorted(PERMISSIONS.items()):
        path = template.format(case_code=case_code, **PARAMETERS)
        anonymous = client.request(method, path, json={})
        assert anonymous.status_code == 401, f"{method} {template} answered without a token"
        for role, who in ROLE_USERS.items():
            r = client.request(method, path, json={}, headers=users.auth(who))
            where = f"{method} {template} as {role}: {r.status_code} {r.text[:200]}"
            assert r.status_code < 500, where
            refused = r.status_code == 403 and r.json().get("error") == "forbidden"
            assert refused == (role not in admitted), where
            checked += 1
    assert checked == len(PERMISSIONS) * len(ROLES)
