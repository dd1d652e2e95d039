"""A corridor referral (example.corridor, Thailand to Lao PDR) moved along through the API,
as the caseworker of TH-NGO-A would: consent, assessment, then a return referral to the
focal point of LA-SW-B. Every value is synthetic."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from .conftest import Users

ASSESSMENT = {
    "risk_level": "medium",
    "service_needed": "safety_and_shelter",
    "safety_plan_agreed": True,
}
RECEIVER = "LA-SW-B"


def post(client: TestClient, users: Users, who: str, url: str, body: Any = None) -> Any:
    """POST as ``who``; the answer's JSON, failing the test unless it succeeded."""
    r = client.post(url, json=body, headers=users.auth(who))
    assert r.status_code in (200, 201), r.text
    return r.json()


def grant(client: TestClient, users: Users, code: str, scope: str, **extra: Any) -> str:
    """The caseworker records the survivor's consent for ``scope``; the grant's id."""
    body = {"scope": scope, "given_by": "survivor", **extra}
    grant_id: str = post(client, users, "caseworker", f"/referrals/{code}/consents", body)["id"]
    return grant_id


def to_action_plan(client: TestClient, users: Users, code: str) -> None:
    """Case management consent, intake and assessment (medium risk): into ``action_plan``."""
    grant(client, users, code, "case_management")
    events = f"/referrals/{code}/events"
    post(
        client,
        users,
        "caseworker",
        f"{events}/record_consent",
        {"facts": {"safe_contact_method": "text_message"}},
    )
    post(client, users, "caseworker", f"{events}/complete_assessment", {"facts": ASSESSMENT})


def send_for_return(client: TestClient, users: Users, code: str) -> str:
    """From intake to ``return_referral.sent`` at LA-SW-B; the return consent's grant id.

    Sending discloses the handoff's dataset to LA-SW-B under that grant."""
    to_action_plan(client, users, code)
    grant_id = grant(client, users, code, "cross_border_return")
    url = f"/referrals/{code}/events/refer_for_return"
    sent = post(client, users, "caseworker", url, {"recipient_agency_id": RECEIVER})
    assert sent["state"] == "return_referral.sent"
    assert sent["disclosed_to"] == RECEIVER
    return grant_id
