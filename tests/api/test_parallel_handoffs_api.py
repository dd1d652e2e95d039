"""Parallel handoffs through the API: the managing agency sees every open referral, each
receiving agency only its own, in the referral it reads and in the answer to what it fires."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from api.users import create_user
from sop_engine.runtime.engine import Runtime

from .conftest import Users, referral_body
from .journey import grant, post, to_action_plan

COUNSELLING = "TH-NGO-Z"
CLINIC = "TH-HOSP-2"


def _users(runtime: Runtime, users: Users) -> Users:
    users.tokens["counsellor"] = create_user(
        runtime.db, "counsellor", "agency_focal_point", COUNSELLING
    ).token
    users.tokens["clinic"] = create_user(runtime.db, "clinic", "agency_focal_point", CLINIC).token
    return users


def test_open_referrals_are_shown_to_those_who_take_part_in_them(
    client: TestClient, runtime: Runtime, users: Users
) -> None:
    users = _users(runtime, users)
    recent = (runtime.clock.now() - timedelta(hours=10)).isoformat()
    created = post(client, users, "caseworker", "/referrals", referral_body(incident_at=recent))
    code = created["case_code"]
    events = f"/referrals/{code}/events"
    to_action_plan(client, users, code)
    grant(client, users, code, "counselling_referral")
    opened = post(
        client,
        users,
        "caseworker",
        f"{events}/refer_for_counselling",
        {"recipient_agency_id": COUNSELLING},
    )
    assert (opened["state"], opened["handoffs"]) == (
        "action_plan",
        {"counselling_referral": "counselling_referral.sent"},
    )
    grant(client, users, code, "health_referral", country="TH")
    post(
        client,
        users,
        "caseworker",
        f"{events}/refer_for_health_care",
        {"recipient_agency_id": CLINIC},
    )

    def seen_by(who: str) -> dict[str, str]:
        r = client.get(f"/referrals/{code}", headers=users.auth(who))
        assert r.status_code == 200, r.text
        handoffs: dict[str, str] = r.json()["handoffs"]
        return handoffs

    # The example's health referral occupies the case's state; counselling runs beside it.
    assert seen_by("caseworker") == {"counselling_referral": "counselling_referral.sent"}
    assert seen_by("counsellor") == {"counselling_referral": "counselling_referral.sent"}
    assert seen_by("clinic") == {}  # never told of the counselling referral
    answered = post(client, users, "clinic", f"{events}/health_referral.acknowledge")
    assert (answered["state"], answered["handoffs"]) == ("health_referral.acknowledged", {})
    counselled = post(client, users, "counsellor", f"{events}/counselling_referral.acknowledge")
    assert counselled["handoffs"] == {"counselling_referral": "counselling_referral.acknowledged"}
    assert counselled["state"] == "health_referral.acknowledged"

    # The case does not close over an open referral: a 409 that names it, never a 500.
    post(client, users, "caseworker", f"{events}/health_referral.revoke")
    r = client.post(f"{events}/close", json={}, headers=users.auth("caseworker"))
    assert r.status_code == 409, r.text
    assert "counselling_referral (acknowledged)" in r.text
