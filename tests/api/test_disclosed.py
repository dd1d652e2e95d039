"""What an agency sent a referral may read: exactly the fields disclosed to it, while the
consent stands (``GET /referrals/{code}/disclosed``), and on ``GET /referrals/{code}`` only
the disclosed non-identifying facts; the managing agency sees its case's facts as before.
Every read and every refusal is in the access log. Every value is synthetic."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from sop_engine.runtime.engine import Runtime

from .conftest import SURVIVOR, Users
from .test_tasks import MANAGER, RECEIVER, send_for_return

DATASET = {"case_code", "service_needed", "risk_level", "safe_contact_method", "consent_reference"}


def get(client: TestClient, users: Users, who: str, url: str) -> Any:
    r = client.get(url, headers=users.auth(who))
    assert SURVIVOR not in r.text  # the name is sealed and never disclosed in this SOP
    return r


def logged(runtime: Runtime, code: str, action: str) -> list[tuple[str | None, str, set[str]]]:
    return [
        (a.actor_agency_id, a.outcome, set(a.fields))
        for a in runtime.access_log(case_code=code)
        if a.action == action
    ]


def test_the_receiver_reads_exactly_the_disclosed_fields_until_withdrawal(
    client: TestClient, users: Users, runtime: Runtime, case_code: str
) -> None:
    grant_id = send_for_return(client, users, runtime, case_code)
    url = f"/referrals/{case_code}/disclosed"
    r = get(client, users, "focal_point", url)
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    body = r.json()
    assert set(body["fields"]) == DATASET
    assert body["fields"] == {
        "case_code": case_code,
        "consent_reference": grant_id,
        "risk_level": "medium",
        "safe_contact_method": "text_message",  # identifying (contact): decrypted for it
        "service_needed": "safety_and_shelter",
    }
    assert body["withheld"] == []
    assert [(d["consent_grant_id"], d["readable"]) for d in body["disclosures"]] == [
        (grant_id, True)
    ]
    assert logged(runtime, case_code, "disclosed.read") == [(RECEIVER, "granted", DATASET)]

    runtime.withdraw_consent(case_code, grant_id, MANAGER)
    r = get(client, users, "focal_point", url)
    assert r.status_code == 403
    assert r.json()["error"] == "consent_missing"
    assert "withdrawn" in r.json()["message"]
    assert "text_message" not in r.text
    assert logged(runtime, case_code, "disclosed.read")[-1] == (RECEIVER, "refused", DATASET)


def test_the_managing_agency_and_others_read_nothing_disclosed(
    client: TestClient, users: Users, runtime: Runtime, case_code: str
) -> None:
    send_for_return(client, users, runtime, case_code)
    url = f"/referrals/{case_code}/disclosed"
    for who in ("caseworker", "supervisor"):
        r = get(client, users, who, url)
        assert r.status_code == 404
        assert "nothing" in r.json()["message"]
    outside = get(client, users, "other_caseworker", url)
    unknown = get(client, users, "other_caseworker", "/referrals/AAAA-BBBB-CCCC/disclosed")
    assert outside.status_code == unknown.status_code == 404
    assert outside.json()["message"] == unknown.json()["message"].replace(
        "AAAA-BBBB-CCCC", case_code
    )
    refused = logged(runtime, case_code, "disclosed.read")
    assert refused == [
        ("TH-NGO-A", "refused", set()),
        ("TH-NGO-A", "refused", set()),
        ("TH-NGO-Z", "refused", set()),
    ]


def test_the_referral_read_shows_another_agency_only_what_was_disclosed_to_it(
    client: TestClient, users: Users, runtime: Runtime, case_code: str
) -> None:
    grant_id = send_for_return(client, users, runtime, case_code)
    url = f"/referrals/{case_code}"

    own = get(client, users, "caseworker", url).json()
    assert own["facts"] == {
        "survivor_age": 24,
        "risk_level": "medium",
        "service_needed": "safety_and_shelter",
        "safety_plan_agreed": True,
    }
    assert own["sealed_fields"] == ["safe_contact_method", "survivor_name"]
    assert own["incident_at"] is not None

    r = get(client, users, "focal_point", url)
    assert r.status_code == 200
    sent = r.json()
    assert sent["facts"] == {"risk_level": "medium", "service_needed": "safety_and_shelter"}
    assert sent["sealed_fields"] == ["safe_contact_method"]  # not survivor_name: not disclosed
    assert sent["agencies"] == {"case_agency": "TH-NGO-A", "receiving_focal_point": RECEIVER}
    assert (sent["incident_at"], sent["disclosed_at"]) == (None, None)
    assert sent["available_events"] == ["return_referral.acknowledge", "return_referral.decline"]
    assert r.headers["ETag"] == f'"{sent["version"]}"'

    runtime.withdraw_consent(case_code, grant_id, MANAGER)
    after = get(client, users, "focal_point", url).json()
    assert (after["facts"], after["sealed_fields"]) == ({}, [])
    assert after["available_events"] == ["return_referral.acknowledge", "return_referral.decline"]

    assert logged(runtime, case_code, "referral.read") == [
        ("TH-NGO-A", "granted", set(own["facts"])),
        (RECEIVER, "granted", {"risk_level", "service_needed"}),
        (RECEIVER, "granted", set()),
    ]


def test_a_refused_referral_read_is_logged(
    client: TestClient, users: Users, runtime: Runtime, case_code: str
) -> None:
    r = get(client, users, "focal_point", f"/referrals/{case_code}")  # not sent it yet
    assert r.status_code == 404
    r = get(client, users, "other_caseworker", f"/referrals/{case_code}")
    assert r.status_code == 404
    assert logged(runtime, case_code, "referral.read") == [
        ("LA-SW-B", "refused", set()),
        ("TH-NGO-Z", "refused", set()),
    ]
