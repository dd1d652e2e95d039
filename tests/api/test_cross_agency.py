"""Every route, replayed with the tokens of an agency that takes no part in the referral.

A referral of TH-NGO-A is sent to LA-SW-B (example.corridor, Thailand to Lao PDR), so that
it has consent grants, disclosures, tasks at both agencies and a timeline. Then a
caseworker, a supervisor and a focal point of KH-NGO-Q call every route in the permission
table with that referral's case code, task ids, grant id and event, with bodies that would
succeed for the agencies on it. Nothing may leak: routes on the referral answer 403 or 404,
no answer carries an identifier or a value of the referral that the caller did not send, and
the referral is unchanged. The table drives the replay, so a new route is replayed (or the
test fails asking for its parameters) without anyone remembering to add it here.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.permissions import PERMISSIONS
from api.users import create_user
from notifications.channels import InboxChannel
from notifications.dispatch import dispatch_pending
from sop_engine.directory.loader import load_directory
from sop_engine.runtime.engine import Runtime

from .conftest import SOPS, SURVIVOR, Users
from .journey import ASSESSMENT, RECEIVER, send_for_return

OUTSIDER_AGENCY = "KH-NGO-Q"
OUTSIDERS = {
    "caseworker": "outsider_caseworker",
    "supervisor": "outsider_supervisor",
    "agency_focal_point": "outsider_focal_point",
}

BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/referrals/{case_code}/events/{event}"): {},
    ("POST", "/referrals/{case_code}/consents"): {
        "scope": "case_management",
        "given_by": "survivor",
    },
    ("POST", "/referrals/{case_code}/consents/{grant_id}/withdrawal"): None,
    ("POST", "/referrals/{case_code}/withdrawal-acknowledgement"): None,
    ("POST", "/tasks/{task_id}/decline"): {"reason": "no_capacity"},
    ("POST", "/tasks/{task_id}/deliver"): {"outcome": "successful"},
    ("POST", "/referrals/{case_code}/reopen"): {"reason": "survivor_returned"},
    ("POST", "/referrals/{case_code}/transfer"): {"to_agency_id": "TH-NGO-Z"},
    ("POST", "/referrals/{case_code}/transfer/decline"): {"reason": "no_capacity"},
    ("POST", "/referrals/{case_code}/clocks/{clock}/waive"): {"reason": "survivor_declined"},
    ("PUT", "/referrals/{case_code}/incident-time"): {
        "incident_at": "2026-03-01T01:00:00Z",
        "reason": "data_entry_error",
    },
}
"""Bodies that would succeed for an agency on the referral; other routes take none, or
bodies that do not matter here (creating a referral, uploading an SOP)."""

SCOPED = ("{case_code}", "{task_id}", "{grant_id}", "{notice_id}")
"""Path parameters naming the referral or something of it: such routes must refuse."""


@pytest.fixture
def scene(client: TestClient, users: Users, runtime: Runtime) -> dict[str, str]:
    code = client.post(
        "/referrals",
        json={
            "sop_key": "example.corridor",
            "sop_version": 1,
            "origin_country": "TH",
            "destination_country": "LA",
            "incident_at": "2026-03-01T01:00:00Z",
            "facts": {"survivor_name": SURVIVOR, "survivor_age": 24},
        },
        headers=users.auth("caseworker"),
    ).json()["case_code"]
    grant_id = send_for_return(client, users, code)
    dispatch_pending(
        runtime, load_directory(SOPS / "directory"), [InboxChannel(runtime.db)], worker="test"
    )
    notices = client.get("/notices", headers=users.auth("focal_point")).json()["items"]
    assert notices, "the receiving agency was not notified"
    receiver_task = _first_task(client, users, "focal_point")
    manager_task = _first_task(client, users, "caseworker", status="any")
    for role, who in OUTSIDERS.items():
        users.tokens[who] = create_user(runtime.db, who, role, OUTSIDER_AGENCY).token
    return {
        "case_code": code,
        "grant_id": grant_id,
        "receiver_task": receiver_task,
        "manager_task": manager_task,
        "event": "return_referral.acknowledge",
        "key": "example.corridor",
        "version": "1",
        "agency_id": RECEIVER,
        "notice_id": notices[0]["id"],
        "clock": "medical_follow_up",
    }


def _first_task(client: TestClient, users: Users, who: str, status: str = "open") -> str:
    r = client.get("/tasks", params={"status": status}, headers=users.auth(who))
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert items, f"{who} has no task"
    task_id: str = items[0]["id"]
    return task_id


def _paths(template: str, scene: dict[str, str]) -> list[str]:
    """The concrete paths to replay for a route: both agencies' tasks for a task route."""
    names = re.findall(r"\{(\w+)\}", template)
    tasks = ["receiver_task", "manager_task"] if "task_id" in names else [None]
    paths = []
    for task in tasks:
        values = {}
        for name in names:
            if name == "task_id":
                assert task is not None
                values[name] = scene[task]
            else:
                assert name in scene, f"the replay has no value for {{{name}}} in {template}"
                values[name] = scene[name]
        paths.append(template.format(**values))
    return paths


def _markers(scene: dict[str, str], path: str) -> list[str]:
    """What no answer to an outsider may contain: identifiers of the referral and of what
    hangs on it (unless the caller sent them in the path), and its facts' values (but the
    directory's own words, such as the services agencies offer, are everyone's)."""
    found = [SURVIVOR]
    if not path.startswith("/directory"):
        found += [str(ASSESSMENT["service_needed"]), "text_message"]
    for name in ("case_code", "grant_id", "receiver_task", "manager_task", "notice_id"):
        if scene[name] not in path:
            found.append(scene[name])
    return found


def test_no_route_lets_another_agency_reach_the_referral(
    client: TestClient, users: Users, runtime: Runtime, scene: dict[str, str]
) -> None:
    code = scene["case_code"]
    before = runtime.read_referral(code)
    timeline_before = len(runtime.verify_timeline(code))
    replayed = 0
    for (method, template), roles in sorted(PERMISSIONS.items()):
        for role, who in OUTSIDERS.items():
            for path in _paths(template, scene):
                r = client.request(
                    method, path, json=BODIES.get((method, template)), headers=users.auth(who)
                )
                replayed += 1
                where = f"{method} {template} as a {role} of {OUTSIDER_AGENCY}"
                assert r.status_code < 500, f"{where}: {r.status_code} {r.text}"
                if any(p in template for p in SCOPED):
                    assert r.status_code in (403, 404), f"{where}: {r.status_code} {r.text}"
                if role not in roles:
                    assert r.status_code == 403, f"{where}: {r.status_code}"
                for marker in _markers(scene, path):
                    assert marker not in r.text, f"{where} leaked {marker!r}: {r.text}"
                if RECEIVER not in path and not template.startswith("/directory"):
                    assert RECEIVER not in r.text, f"{where} named the receiving agency"
    assert replayed > len(PERMISSIONS)
    after = runtime.read_referral(code)
    assert (after.state, after.version) == (before.state, before.version)
    assert len(runtime.verify_timeline(code)) == timeline_before
    assert [g.withdrawn_at for g in runtime.list_grants(code)] == [None, None]


def test_the_outsiders_refused_reads_are_in_the_access_log(
    client: TestClient, users: Users, runtime: Runtime, scene: dict[str, str]
) -> None:
    code = scene["case_code"]
    reads = [
        f"/referrals/{code}",
        f"/referrals/{code}/disclosed",
        f"/referrals/{code}/consents",
        f"/referrals/{code}/events",
        f"/tasks/{scene['receiver_task']}",
    ]
    for path in reads:
        assert client.get(path, headers=users.auth("outsider_supervisor")).status_code in (403, 404)
    refused = [
        e
        for e in runtime.access_log(case_code=code, outcome="refused")
        if e.actor_agency_id == OUTSIDER_AGENCY
    ]
    assert len(refused) >= len(reads) - 1, refused  # a task id names no case when refused
    assert all(e.fields == () for e in refused)


def test_lists_show_an_outsider_nothing_of_the_referral(
    client: TestClient, users: Users, scene: dict[str, str]
) -> None:
    for who in OUTSIDERS.values():
        for url, params in (("/tasks", {"status": "any"}), ("/notices", {})):
            r = client.get(url, params=params, headers=users.auth(who))
            assert r.status_code == 200
            assert r.json()["items"] == []
            assert scene["case_code"] not in r.text
