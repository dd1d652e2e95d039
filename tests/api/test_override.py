"""Sharing without consent through the API: an override's sign-off must name, by user id, a
user of the caller's agency in the role the SOP asks for, so that no one's name reaches the
timeline and no one signs off for an agency she does not work for. Every value is synthetic."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.users import create_user
from sop_engine.runtime.engine import Runtime

from .conftest import Users

JUSTIFICATION = "Synthetic: the survivor is unconscious and needs care within the hour."


def at_action_plan(client: TestClient, users: Users, code: str) -> None:
    auth = users.auth("caseworker")
    grant = {"scope": "case_management", "given_by": "survivor"}
    assert client.post(f"/referrals/{code}/consents", json=grant, headers=auth).status_code == 201
    for event, facts in (
        ("record_consent", {"safe_contact_method": "text_message"}),
        ("complete_assessment", {"risk_level": "high", "service_needed": "clinical_care",
                                 "safety_plan_agreed": True}),
    ):  # fmt: skip
        r = client.post(f"/referrals/{code}/events/{event}", json={"facts": facts}, headers=auth)
        assert r.status_code == 200, r.text


def override(signer: str) -> dict[str, Any]:
    return {
        "recipient_agency_id": "TH-HOSP-H",
        "override": {
            "reason": "life_at_risk",
            "justification": JUSTIFICATION,
            "signed_off_by": signer,
            "signed_off_role": "supervisor",
        },
    }


@pytest.mark.parametrize(
    "signer",
    ["Synthetic Supervisor Name", "supervisor-of-another-agency", "caseworker-of-this-agency"],
)
def test_a_sign_off_that_names_no_supervisor_of_the_agency_is_refused(
    client: TestClient, users: Users, runtime: Runtime, case_code: str, signer: str
) -> None:
    ids = {
        "supervisor-of-another-agency": create_user(
            runtime.db, "sup-z", "supervisor", "TH-NGO-Z"
        ).principal.id,
        "caseworker-of-this-agency": create_user(
            runtime.db, "cw-a2", "caseworker", "TH-NGO-A"
        ).principal.id,
    }
    at_action_plan(client, users, case_code)
    before = runtime.read_referral(case_code).version
    r = client.post(
        f"/referrals/{case_code}/events/emergency_health_referral",
        json=override(ids.get(signer, signer)),
        headers=users.auth("caseworker"),
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "override.signed_off_by"
    assert "Synthetic Supervisor Name" not in r.text
    assert runtime.read_referral(case_code).version == before


def test_a_supervisor_of_the_agency_signs_off_by_her_user_id(
    client: TestClient, users: Users, runtime: Runtime, case_code: str
) -> None:
    supervisor = create_user(runtime.db, "sup-a2", "supervisor", "TH-NGO-A").principal
    at_action_plan(client, users, case_code)
    r = client.post(
        f"/referrals/{case_code}/events/emergency_health_referral",
        json=override(supervisor.id),
        headers=users.auth("caseworker"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["override"] is True
    assert r.json()["disclosed_to"] == "TH-HOSP-H"
