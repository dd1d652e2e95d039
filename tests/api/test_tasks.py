"""The agencies' task inbox through the API: LA-SW-B's focal point is sent a return
referral (example.corridor) by TH-NGO-A, sees the handoff's task, and acknowledges, accepts,
declines or reports delivery. A third agency sees no task and gets 404 everywhere; every
read and refusal is in the access log. Every value is synthetic."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.users import create_user
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from tests.handoffs import DELIVERED, answer_payload

from .conftest import SURVIVOR, Users, referral_body

MANAGER = Actor("api-test-cw", "caseworker", "TH-NGO-A")
"""The managing agency's caseworker, recording consent through the runtime."""
RECEIVER = "LA-SW-B"
THIRD = "third_focal_point"
"""A focal point of KH-NGO-C, an agency that takes no part in the referral."""
ASSESSMENT = {"risk_level": "medium", "service_needed": "safety_and_shelter",
              "safety_plan_agreed": True}  # fmt: skip
NO_TASK = "00000000-0000-0000-0000-000000000000"
ANSWERS = ("acknowledge", "accept", "decline", "deliver")


def send_for_return(client: TestClient, users: Users, runtime: Runtime, code: str) -> str:
    """Consent, assessment and the return referral sent to LA-SW-B, as TH-NGO-A's
    caseworker would; the return consent's grant id."""
    auth = users.auth("caseworker")
    runtime.grant_consent(code, scope="case_management", actor=MANAGER, given_by="survivor")
    for event, body in (
        ("record_consent", {"facts": {"safe_contact_method": "text_message"}}),
        ("complete_assessment", {"facts": ASSESSMENT}),
    ):
        r = client.post(f"/referrals/{code}/events/{event}", json=body, headers=auth)
        assert r.status_code == 200, r.text
    grant = runtime.grant_consent(
        code, scope="cross_border_return", actor=MANAGER, given_by="survivor"
    )
    r = client.post(
        f"/referrals/{code}/events/refer_for_return",
        json={"recipient_agency_id": RECEIVER},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "return_referral.sent"
    return grant.id


@pytest.fixture
def third(users: Users, runtime: Runtime) -> Users:
    users.tokens[THIRD] = create_user(runtime.db, "fp3", "agency_focal_point", "KH-NGO-C").token
    return users


@pytest.fixture
def sent(client: TestClient, users: Users, runtime: Runtime, case_code: str) -> str:
    """The case code of a referral waiting for LA-SW-B's acknowledgement."""
    send_for_return(client, users, runtime, case_code)
    return case_code


def tasks_of(client: TestClient, users: Users, who: str, **params: Any) -> list[dict[str, Any]]:
    r = client.get("/tasks", params=params, headers=users.auth(who))
    assert r.status_code == 200, r.text
    assert SURVIVOR not in r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def the_task(client: TestClient, users: Users, code: str) -> dict[str, Any]:
    """LA-SW-B's one open task on ``code``."""
    (task,) = [t for t in tasks_of(client, users, "focal_point") if t["case_code"] == code]
    return task


def answer(
    client: TestClient, users: Users, task_id: str, action: str, who: str = "focal_point", **kw: Any
) -> Any:
    headers = {**users.auth(who), **kw.pop("headers", {})}
    r = client.post(f"/tasks/{task_id}/{action}", headers=headers, **kw)
    assert SURVIVOR not in r.text
    return r


def test_the_receiving_focal_point_sees_the_handoff_task_with_its_answers(
    client: TestClient, users: Users, runtime: Runtime, sent: str
) -> None:
    task = the_task(client, users, sent)
    assert task["name"] == "acknowledge"
    assert task["role"] == "agency_focal_point"
    assert task["agency_id"] == RECEIVER
    assert (task["sop_key"], task["sop_version"]) == ("example.corridor", 1)
    assert (task["state"], task["referral_state"]) == ("return_referral.sent",) * 2
    assert (task["handoff"], task["stage"]) == ("return_referral", "sent")
    assert task["due_at"] is not None
    assert task["decline_reasons"] == ["no_capacity", "family_tracing_failed"]
    assert task["available_events"] == ["return_referral.acknowledge", "return_referral.decline"]
    assert set(task) >= {"case_code", "ask", "service"}
    assert "facts" not in task

    r = client.get(f"/tasks/{task['id']}", headers=users.auth("focal_point"))
    assert r.status_code == 200
    assert r.json() == task
    logged = [(a.action, a.outcome) for a in runtime.access_log(agency_id=RECEIVER)]
    assert logged == [("tasks.list", "granted"), ("task.read", "granted")]
    assert [a.case_code for a in runtime.access_log(agency_id=RECEIVER)] == [None, sent]


def test_the_managing_agency_sees_its_own_tasks_and_never_the_receivers(
    client: TestClient, users: Users, sent: str
) -> None:
    for who in ("caseworker", "supervisor"):
        assert tasks_of(client, users, who) == []  # action_plan and the handoff ask it nothing
        done = tasks_of(client, users, who, status="any")
        assert [(t["name"], t["status"]) for t in done] == [
            ("obtain_consent", "done"),
            ("assess", "done"),
        ]
        assert all(t["available_events"] == [] for t in done)
    (acknowledge,) = tasks_of(client, users, "focal_point")
    r = client.get(f"/tasks/{acknowledge['id']}", headers=users.auth("caseworker"))
    assert r.status_code == 404


def test_a_third_agency_sees_no_task_and_gets_404_on_every_route(
    client: TestClient, third: Users, runtime: Runtime, sent: str
) -> None:
    users = third
    task = the_task(client, users, sent)
    assert tasks_of(client, users, THIRD, status="any") == []
    for method, url, body in [
        ("GET", f"/tasks/{task['id']}", None),
        *[("POST", f"/tasks/{task['id']}/{a}", None) for a in ANSWERS],
        ("POST", f"/tasks/{task['id']}/decline", {"reason": "no_capacity"}),
        ("GET", f"/referrals/{sent}/disclosed", None),
        ("GET", f"/referrals/{sent}", None),
    ]:
        r = client.request(method, url, json=body, headers=users.auth(THIRD))
        assert r.status_code == 404, (url, r.text)
        assert sent not in r.text or "/referrals/" in url  # a task's 404 names no case
        assert SURVIVOR not in r.text
        unknown = client.request(
            method,
            url.replace(task["id"], NO_TASK).replace(sent, "AAAA-BBBB-CCCC"),
            json=body,
            headers=users.auth(THIRD),
        )
        assert unknown.status_code == 404
        assert r.json()["error"] == unknown.json()["error"] == "not_found"
        assert r.json()["message"] == unknown.json()["message"].replace(
            NO_TASK, task["id"]
        ).replace("AAAA-BBBB-CCCC", sent)
    refused = runtime.access_log(case_code=sent, outcome="refused")
    assert {(a.actor_agency_id, a.action) for a in refused} == {
        ("KH-NGO-C", "task.read"),
        *{("KH-NGO-C", f"task.{a}") for a in ANSWERS},
        ("KH-NGO-C", "disclosed.read"),
        ("KH-NGO-C", "referral.read"),
    }
    assert the_task(client, users, sent)["status"] == "open"  # nothing was answered


def test_acknowledge_accept_and_deliver_move_the_handoff(
    client: TestClient, users: Users, sent: str
) -> None:
    etag = client.get(f"/referrals/{sent}", headers=users.auth("focal_point")).headers["ETag"]
    task = the_task(client, users, sent)
    headers = {"Idempotency-Key": "ack-1", "If-Match": etag}
    r = answer(client, users, task["id"], "acknowledge", headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["event"], body["state"]) == (
        "return_referral.acknowledge",
        "return_referral.acknowledged",
    )
    assert body["available_events"] == ["return_referral.accept", "return_referral.decline"]
    assert body["replayed"] is False
    assert r.headers["ETag"] == f'"{body["version"]}"'

    again = answer(client, users, task["id"], "acknowledge", headers=headers)
    assert again.status_code == 200, again.text  # the task is closed, the retry replayed
    assert again.json() == {**body, "replayed": True}

    respond = the_task(client, users, sent)
    assert (respond["name"], respond["stage"]) == ("respond", "acknowledged")
    stale = answer(client, users, respond["id"], "accept", headers={"If-Match": etag})
    assert stale.status_code == 409
    assert stale.json()["error"] == "concurrent_change"
    assert stale.json()["current_version"] == body["version"]
    r = answer(client, users, respond["id"], "accept", headers={"If-Match": r.headers["ETag"]})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "return_referral.accepted"
    deliver = the_task(client, users, sent)
    assert deliver["available_events"] == ["return_referral.deliver"]
    r = answer(client, users, deliver["id"], "deliver", json={"outcome": "successful"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "follow_up"
    assert tasks_of(client, users, "focal_point") == []
    closed = tasks_of(client, users, "focal_point", status="done")
    assert [t["name"] for t in closed] == ["acknowledge", "respond", "deliver"]


def test_an_answer_the_stage_does_not_allow_is_409_with_the_allowed_ones(
    client: TestClient, users: Users, sent: str
) -> None:
    task = the_task(client, users, sent)
    for action in ("accept", "deliver"):
        r = answer(client, users, task["id"], action, json=answer_payload(action))
        assert r.status_code == 409, r.text
        assert r.json()["error"] == "transition_not_allowed"
        assert "return_referral.acknowledge" in r.json()["available"]


def test_declining_needs_one_of_the_handoffs_reasons(
    client: TestClient, users: Users, runtime: Runtime, sent: str
) -> None:
    task = the_task(client, users, sent)
    bad: list[dict[str, Any]] = [{}, {"json": {"reason": "not_today"}}, {"json": {}}]
    for kw in bad:
        r = answer(client, users, task["id"], "decline", **kw)
        assert r.status_code == 422, r.text
        assert r.json()["field"] == "reason"
        assert "not_today" not in r.text
    r = answer(client, users, task["id"], "decline", json={"reason": "no_capacity", "note": "x"})
    assert r.status_code == 422
    assert r.json()["field"] == "note"

    r = answer(client, users, task["id"], "decline", json={"reason": "no_capacity"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "action_plan"
    declined = client.get(f"/tasks/{task['id']}", headers=users.auth("focal_point")).json()
    assert (declined["status"], declined["closed_by_event"]) == (
        "cancelled",
        "return_referral.decline",
    )
    assert declined["available_events"] == []
    later = answer(client, users, task["id"], "acknowledge")
    assert later.status_code == 409
    assert "is cancelled" in later.json()["message"]


def test_a_task_outside_a_handoff_is_409(
    client: TestClient, users: Users, runtime: Runtime, case_code: str
) -> None:
    (consent_task,) = tasks_of(client, users, "caseworker")
    assert consent_task["name"] == "obtain_consent"
    assert consent_task["handoff"] is None
    assert "record_consent" in consent_task["available_events"]
    r = answer(client, users, consent_task["id"], "acknowledge", who="caseworker")
    assert r.status_code == 409
    assert r.json()["error"] == "transition_not_allowed"
    assert "not part of a handoff" in r.json()["message"]


def test_after_withdrawal_the_handoff_can_only_be_declined_and_the_notice_is_a_task(
    client: TestClient, users: Users, runtime: Runtime, case_code: str
) -> None:
    grant_id = send_for_return(client, users, runtime, case_code)
    runtime.withdraw_consent(case_code, grant_id, MANAGER)
    tasks = {t["name"]: t for t in tasks_of(client, users, "focal_point")}
    assert set(tasks) == {"acknowledge", "acknowledge_withdrawal"}
    assert tasks["acknowledge"]["available_events"] == ["return_referral.decline"]
    notice = tasks["acknowledge_withdrawal"]
    assert (notice["state"], notice["handoff"], notice["available_events"]) == (None, None, [])
    r = answer(client, users, tasks["acknowledge"]["id"], "acknowledge")
    assert r.status_code == 403
    assert r.json()["error"] == "consent_missing"
    r = answer(client, users, notice["id"], "acknowledge")
    assert r.status_code == 409
    r = answer(client, users, tasks["acknowledge"]["id"], "decline", json={"reason": "no_capacity"})
    assert r.status_code == 200, r.text


def test_the_inbox_filters_by_role_and_status_and_pages_without_repeats(
    client: TestClient, users: Users, runtime: Runtime
) -> None:
    codes = []
    for _ in range(3):
        r = client.post("/referrals", json=referral_body(), headers=users.auth("caseworker"))
        codes.append(r.json()["case_code"])
        send_for_return(client, users, runtime, codes[-1])
    assert tasks_of(client, users, "focal_point", role="caseworker") == []
    assert len(tasks_of(client, users, "focal_point", role="agency_focal_point")) == 3
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/tasks", params=params, headers=users.auth("focal_point")).json()
        seen.extend(t["case_code"] for t in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == codes
    for params in ({"status": "closed"}, {"cursor": "not-a-cursor"}, {"limit": 0}):
        r = client.get("/tasks", params=params, headers=users.auth("focal_point"))
        assert r.status_code == 422, params
        assert r.json()["field"] == next(iter(params))
    r = client.get("/tasks/not-a-task", headers=users.auth("focal_point"))
    assert r.status_code == 422


ROUTES = [
    ("GET", "/tasks", None),
    ("GET", "/tasks/{task}", None),
    ("POST", "/tasks/{task}/acknowledge", None),
    ("POST", "/tasks/{task}/accept", None),
    ("POST", "/tasks/{task}/decline", {"reason": "no_capacity"}),
    ("POST", "/tasks/{task}/deliver", DELIVERED),
    ("GET", "/referrals/{code}/disclosed", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("coordinator", {403}),
        ("auditor", {403}),
        ("caseworker", {200, 404}),  # the managing agency: not the task's, nothing disclosed
        ("supervisor", {200, 404}),
        ("other_caseworker", {200, 404}),
        ("focal_point", {200, 409}),  # the receiver: accept and deliver wait for their stage
    ],
)
def test_each_agency_route_admits_the_agencies_roles_and_refuses_the_others(
    client: TestClient,
    users: Users,
    sent: str,
    method: str,
    path: str,
    body: object,
    who: str,
    expected: set[int],
) -> None:
    task = the_task(client, users, sent)
    url = path.format(task=task["id"], code=sent)
    r = client.request(method, url, json=body, headers=users.auth(who))
    assert r.status_code in expected, r.text
    if who in ("caseworker", "supervisor", "other_caseworker") and path != "/tasks":
        assert r.status_code == 404
    assert SURVIVOR not in r.text
