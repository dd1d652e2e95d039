"""Referrals through the API: create, read (only by agencies taking part), fire events."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime

from .conftest import SURVIVOR, Users, referral_body


def test_a_caseworker_creates_a_referral_without_its_identifying_facts_returned(
    client: TestClient, users: Users
) -> None:
    r = client.post("/referrals", json=referral_body(), headers=users.auth("caseworker"))
    assert r.status_code == 201
    body = r.json()
    assert body["state"] == "intake"
    assert body["owner_agency_id"] == "TH-NGO-A"
    assert body["sealed_fields"] == ["survivor_name"]
    assert body["facts"] == {"survivor_age": 24}
    assert "record_consent" in body["available_events"]
    assert r.headers["Location"] == f"/referrals/{body['case_code']}"
    assert r.headers["ETag"] == '"1"'
    assert SURVIVOR not in r.text


def test_the_owning_agency_reads_it_and_others_get_404(
    client: TestClient, users: Users, case_code: str
) -> None:
    for who in ("caseworker", "supervisor"):
        r = client.get(f"/referrals/{case_code}", headers=users.auth(who))
        assert r.status_code == 200
        assert r.json()["case_code"] == case_code
        assert SURVIVOR not in r.text
    for who in ("other_caseworker", "focal_point"):
        r = client.get(f"/referrals/{case_code}", headers=users.auth(who))
        assert r.status_code == 404
        missing = client.get("/referrals/AAAA-BBBB-CCCC", headers=users.auth(who))
        assert r.json() == {
            **missing.json(),
            "message": missing.json()["message"].replace("AAAA-BBBB-CCCC", case_code),
        }


def test_another_agency_cannot_fire_either_and_learns_nothing(
    client: TestClient, users: Users, case_code: str
) -> None:
    r = client.post(
        f"/referrals/{case_code}/events/record_consent", headers=users.auth("other_caseworker")
    )
    assert r.status_code == 404


def test_an_unknown_field_is_422_naming_it(client: TestClient, users: Users) -> None:
    r = client.post(
        "/referrals",
        json=referral_body(survivor_name=SURVIVOR),
        headers=users.auth("caseworker"),
    )
    assert r.status_code == 422
    assert r.json()["field"] == "survivor_name"
    assert SURVIVOR not in r.text
    r = client.post(
        "/referrals",
        json=referral_body(origin_country="Thailand"),
        headers=users.auth("caseworker"),
    )
    assert r.status_code == 422
    assert r.json()["field"] == "origin_country"
    assert "Thailand" not in r.text


def test_a_domain_invalid_input_is_422_naming_its_field(client: TestClient, users: Users) -> None:
    r = client.post(
        "/referrals", json=referral_body(destination_country="VN"), headers=users.auth("caseworker")
    )
    assert r.status_code == 422
    assert r.json()["field"] == "destination_country"


def test_firing_without_consent_is_409_guard_failed_then_with_consent_moves_on(
    client: TestClient, users: Users, case_code: str, runtime: Runtime
) -> None:
    url = f"/referrals/{case_code}/events/record_consent"
    body = {"facts": {"safe_contact_method": "text_message"}}
    r = client.post(url, json=body, headers=users.auth("caseworker"))
    assert r.status_code == 409  # the SOP's guard asks for the consent: a state conflict
    assert r.json()["error"] == "guard_failed"

    caseworker = Actor("api-test", "caseworker", "TH-NGO-A")
    runtime.grant_consent(case_code, scope="case_management", actor=caseworker, given_by="survivor")
    etag = client.get(f"/referrals/{case_code}", headers=users.auth("caseworker")).headers["ETag"]
    headers = {**users.auth("caseworker"), "Idempotency-Key": "k-1", "If-Match": etag}
    r = client.post(url, json=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "assessment"
    assert r.json()["replayed"] is False
    version = r.json()["version"]
    assert r.headers["ETag"] == f'"{version}"'

    again = client.post(url, json=body, headers=headers)
    assert again.status_code == 200
    assert again.json()["replayed"] is True

    stale = client.post(
        f"/referrals/{case_code}/events/complete_assessment",
        json={"facts": {"risk_level": "low"}},
        headers={**users.auth("caseworker"), "If-Match": etag},
    )
    assert stale.status_code == 409
    assert stale.json()["current_version"] == version


def test_an_event_the_state_does_not_allow_is_409_with_the_available_ones(
    client: TestClient, users: Users, case_code: str
) -> None:
    r = client.post(
        f"/referrals/{case_code}/events/complete_assessment", headers=users.auth("caseworker")
    )
    assert r.status_code == 409
    assert "record_consent" in r.json()["available"]


def test_a_role_the_sop_refuses_is_403(client: TestClient, users: Users, case_code: str) -> None:
    r = client.post(
        f"/referrals/{case_code}/events/record_consent", headers=users.auth("supervisor")
    )
    assert r.status_code == 403
    assert r.json()["error"] == "role_not_allowed"


def test_a_bad_if_match_is_422_naming_it(client: TestClient, users: Users, case_code: str) -> None:
    r = client.post(
        f"/referrals/{case_code}/events/record_consent",
        headers={**users.auth("caseworker"), "If-Match": "yesterday"},
    )
    assert r.status_code == 422
    assert r.json()["field"] == "If-Match"


def test_an_unknown_payload_field_is_422(client: TestClient, users: Users, case_code: str) -> None:
    r = client.post(
        f"/referrals/{case_code}/events/record_consent",
        json={"fact": {}},
        headers=users.auth("caseworker"),
    )
    assert r.status_code == 422
    assert r.json()["field"] == "fact"


def test_a_retried_creation_with_its_idempotency_key_makes_one_referral(
    client: TestClient, users: Users, runtime: Runtime
) -> None:
    headers = {**users.auth("caseworker"), "Idempotency-Key": "create-1"}
    first = client.post("/referrals", json=referral_body(), headers=headers)
    again = client.post("/referrals", json=referral_body(), headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json()["case_code"] == again.json()["case_code"]
    other = client.post("/referrals", json=referral_body(destination_country="KH"),
                        headers=headers)  # fmt: skip
    assert other.status_code == 422
    assert other.json()["field"] == "Idempotency-Key"
    with runtime.db.connect() as conn:
        count = conn.execute(select(func.count()).select_from(tables.referrals)).scalar_one()
    assert count == 1
    fresh = client.post("/referrals", json=referral_body(), headers=users.auth("caseworker"))
    assert fresh.json()["case_code"] != first.json()["case_code"]
