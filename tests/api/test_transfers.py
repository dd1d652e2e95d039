"""The case transfer routes: TH-NGO-A's caseworker asks TH-NGO-Z to take over a case under
the survivor's consent; TH-NGO-Z's focal point accepts or declines. Every refusal is a clear
4xx naming what is wrong, a retry with the same ``Idempotency-Key`` repeats nothing, and once
the case has moved the former managing agency no longer reaches it. All data is synthetic."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.users import create_user
from sop_engine.runtime.engine import Runtime

from .conftest import SURVIVOR, Users

NEW = "TH-NGO-Z"


@pytest.fixture
def people(runtime: Runtime, users: Users) -> Users:
    for who, role, agency in (
        ("new_focal_point", "agency_focal_point", NEW),
        ("old_focal_point", "agency_focal_point", "TH-NGO-A"),
    ):
        users.tokens[who] = create_user(runtime.db, who, role, agency).token
    return users


def _consent(client: TestClient, users: Users, code: str, agency: str = NEW) -> str:
    for body in (
        {"scope": "case_management", "given_by": "survivor"},
        {"scope": "case_transfer", "given_by": "survivor", "recipient_agency_id": agency},
    ):
        r = client.post(f"/referrals/{code}/consents", json=body, headers=users.auth("caseworker"))
        assert r.status_code == 201, r.text
    grant_id: str = r.json()["id"]
    return grant_id


def _post(client: TestClient, users: Users, who: str, path: str, body: Any = None,
          **headers: str) -> Any:  # fmt: skip
    return client.post(path, json=body, headers={**users.auth(who), **headers})


def test_a_case_moves_to_the_agency_that_accepts_it(
    client: TestClient, people: Users, case_code: str
) -> None:
    users, code = people, case_code
    grant_id = _consent(client, users, code)
    version = client.get(f"/referrals/{code}", headers=users.auth("caseworker")).headers["ETag"]

    headers = {"If-Match": version, "Idempotency-Key": "t-1"}
    asked = _post(client, users, "caseworker", f"/referrals/{code}/transfer",
                  {"to_agency_id": NEW}, **headers)  # fmt: skip
    assert asked.status_code == 201, asked.text
    body = asked.json()
    assert (body["status"], body["to_agency_id"], body["consent_grant_id"]) == (
        "pending", NEW, grant_id,
    )  # fmt: skip
    assert asked.headers["ETag"] == f'"{body["version"]}"'
    again = _post(client, users, "caseworker", f"/referrals/{code}/transfer",
                  {"to_agency_id": NEW}, **{"Idempotency-Key": "t-1"})  # fmt: skip
    assert again.status_code == 201
    assert again.json()["replayed"] is True
    assert again.json()["id"] == body["id"]

    # The receiving agency sees the request and what was disclosed to it, not the name.
    seen = client.get(f"/referrals/{code}/transfers", headers=users.auth("new_focal_point"))
    assert [t["status"] for t in seen.json()] == ["pending"]
    disclosed = client.get(f"/referrals/{code}/disclosed", headers=users.auth("new_focal_point"))
    assert disclosed.status_code == 200
    assert (
        "risk_level" in disclosed.json()["fields"] or "survivor_age" in disclosed.json()["fields"]
    )

    accepted = _post(client, users, "new_focal_point", f"/referrals/{code}/transfer/accept")
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "accepted"

    mine = client.get(f"/referrals/{code}", headers=users.auth("other_caseworker"))
    assert mine.status_code == 200
    assert mine.json()["owner_agency_id"] == NEW
    assert SURVIVOR not in mine.text
    for who in ("caseworker", "supervisor"):
        assert client.get(f"/referrals/{code}", headers=users.auth(who)).status_code == 404
        for path, payload in (
            (f"/referrals/{code}/events/close", None),
            (f"/referrals/{code}/transfer", {"to_agency_id": "TH-NGO-A"}),
            (f"/referrals/{code}/transfer/cancel", None),
            (f"/referrals/{code}/consents", {"scope": "case_management", "given_by": "survivor"}),
        ):
            r = _post(client, users, who, path, payload)
            assert r.status_code == 404, f"{path}: {r.status_code} {r.text}"


def test_each_refusal_is_a_clear_4xx_and_changes_nothing(
    client: TestClient, people: Users, case_code: str, runtime: Runtime
) -> None:
    users, code = people, case_code
    url = f"/referrals/{code}/transfer"
    no_consent = _post(client, users, "caseworker", url, {"to_agency_id": NEW})
    assert (no_consent.status_code, no_consent.json()["error"]) == (403, "consent_missing")
    _consent(client, users, code)
    unknown = _post(client, users, "caseworker", url, {"to_agency_id": "TH-NGO-Q"})
    assert (unknown.status_code, unknown.json()["field"]) == (422, "to_agency_id")
    unfit = _post(client, users, "caseworker", url, {"to_agency_id": "TH-HOSP-2"})
    assert (unfit.status_code, unfit.json()["field"]) == (422, "to_agency_id")
    assert _post(client, users, "caseworker", url, {}).status_code == 422
    assert _post(client, users, "caseworker", url, {"to_agency_id": NEW, "x": 1}).status_code == 422
    assert _post(client, users, "old_focal_point", url, {"to_agency_id": NEW}).status_code == 403
    stale = _post(client, users, "caseworker", url, {"to_agency_id": NEW}, **{"If-Match": '"1"'})
    assert stale.status_code == 409
    assert "current_version" in stale.json()
    nothing = _post(client, users, "caseworker", f"{url}/cancel")
    assert nothing.status_code == 409
    before = runtime.read_referral(code).version

    assert _post(client, users, "caseworker", url, {"to_agency_id": NEW}).status_code == 201
    twice = _post(client, users, "supervisor", url, {"to_agency_id": NEW})
    assert twice.status_code == 409  # one pending at a time
    for who in ("caseworker", "other_caseworker", "old_focal_point"):  # not the answering role
        assert _post(client, users, who, f"{url}/accept").status_code == 403, who
    bad = _post(client, users, "new_focal_point", f"{url}/decline", {"reason": "busy"})
    assert (bad.status_code, bad.json()["field"]) == (422, "reason")
    assert _post(client, users, "new_focal_point", f"{url}/cancel").status_code == 403
    outsider = _post(client, users, "focal_point", f"{url}/accept")
    assert outsider.status_code == 404  # LA-SW-B takes no part in the case
    assert runtime.read_referral(code).version == before + 1

    declined = _post(client, users, "new_focal_point", f"{url}/decline",
                     {"reason": "no_capacity"})  # fmt: skip
    assert (declined.status_code, declined.json()["reason"]) == (200, "no_capacity")
    assert runtime.read_referral(code).owner_agency_id == "TH-NGO-A"
    late = _post(client, users, "new_focal_point", f"{url}/accept")
    assert late.status_code == 409


def test_the_requester_cancels_and_the_receiver_is_told(
    client: TestClient, people: Users, case_code: str, runtime: Runtime
) -> None:
    users, code = people, case_code
    _consent(client, users, code)
    url = f"/referrals/{code}/transfer"
    assert _post(client, users, "caseworker", url, {"to_agency_id": NEW}).status_code == 201
    cancelled = _post(client, users, "supervisor", f"{url}/cancel")
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    assert _post(client, users, "new_focal_point", f"{url}/accept").status_code == 409
    listed = client.get(f"/referrals/{code}/transfers", headers=users.auth("caseworker"))
    assert [t["status"] for t in listed.json()] == ["cancelled"]
    assert client.get(f"/referrals/{code}/transfers",
                      headers=users.auth("other_caseworker")).status_code == 200  # fmt: skip
