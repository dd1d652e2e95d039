"""The events a user may fire now, with what each needs: facts with their types, consent,
disclosure, override, decline reasons. Only agencies taking part see them; reads are logged."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from sop_engine.runtime.engine import Runtime

from .conftest import SURVIVOR, Users, referral_body
from .journey import RECEIVER, grant, send_for_return, to_action_plan


def events(client: TestClient, users: Users, who: str, code: str, **params: str) -> Any:
    r = client.get(f"/referrals/{code}/events", params=params, headers=users.auth(who))
    assert r.status_code == 200, r.text
    assert SURVIVOR not in r.text
    return r.json()


def by_event(answer: Any) -> dict[str, Any]:
    return {e["event"]: e for e in answer["events"]}


def test_in_intake_the_caseworker_records_consent_and_learns_what_it_sets(
    client: TestClient, users: Users, case_code: str
) -> None:
    answer = events(client, users, "caseworker", case_code)
    assert (answer["case_code"], answer["state"], answer["version"]) == (case_code, "intake", 1)
    assert list(by_event(answer)) == ["record_consent"]
    (t,) = by_event(answer)["record_consent"]["transitions"]
    assert t["to"] == "assessment"
    assert t["guard"] == "consent.case_management"
    assert t["consent"] == {
        "scope": "case_management",
        "purpose": "Case management by the case agency",
        "recipient": "case_agency",
    }
    assert t["discloses"] is None
    assert t["override"] is None
    sets = {f["name"]: f for f in t["sets"]}
    assert sets["survivor_age"] == {
        "name": "survivor_age",
        "type": "integer",
        "values": [],
        "min": 0,
        "max": 120,
        "identifying": False,
    }
    assert sets["safe_contact_method"]["type"] == "enum"
    assert "text_message" in sets["safe_contact_method"]["values"]
    assert sets["safe_contact_method"]["identifying"] is True  # its category, contact, is


def test_a_role_the_sop_gives_nothing_to_do_now_sees_no_events(
    client: TestClient, users: Users, case_code: str
) -> None:
    assert events(client, users, "supervisor", case_code)["events"] == []


def test_the_risk_assessment_is_the_event_that_sets_risk_level(
    client: TestClient, users: Users, case_code: str
) -> None:
    assert events(client, users, "caseworker", case_code, sets="risk_level")["events"] == []
    grant(client, users, case_code, "case_management")
    client.post(
        f"/referrals/{case_code}/events/record_consent",
        json={"facts": {"safe_contact_method": "in_person"}},
        headers=users.auth("caseworker"),
    )
    answer = events(client, users, "caseworker", case_code, sets="risk_level")
    assert answer["state"] == "assessment"
    assert list(by_event(answer)) == ["complete_assessment"]
    (t,) = by_event(answer)["complete_assessment"]["transitions"]
    assert t["to"] == "action_plan"
    risk = next(f for f in t["sets"] if f["name"] == "risk_level")
    assert (risk["type"], risk["values"]) == ("enum", ["low", "medium", "high"])
    assert [f["name"] for f in t["requires"]] == ["risk_level", "service_needed"]
    assert t["missing"] == ["risk_level", "service_needed"]
    everything = by_event(events(client, users, "caseworker", case_code))
    assert "consent_withdrawn" in everything  # not a risk assessment: filtered out above


def test_an_unknown_fact_to_filter_by_is_422_with_a_hint(
    client: TestClient, users: Users, case_code: str
) -> None:
    r = client.get(
        f"/referrals/{case_code}/events",
        params={"sets": "risk_levl"},
        headers=users.auth("caseworker"),
    )
    assert r.status_code == 422
    assert r.json()["field"] == "sets"
    assert "did you mean 'risk_level'" in r.json()["message"]


def test_in_the_action_plan_disclosures_consent_and_overrides_are_spelt_out(
    client: TestClient, users: Users, case_code: str
) -> None:
    to_action_plan(client, users, case_code)
    found = by_event(events(client, users, "caseworker", case_code))
    (ret,) = found["refer_for_return"]["transitions"]
    assert ret["to"] == "return_referral.sent"
    assert ret["consent"]["scope"] == "cross_border_return"
    assert ret["discloses"] == {
        "to": "receiving_focal_point",
        "agency_id": None,  # not chosen yet: send recipient_agency_id
        "fields": [
            "case_code",
            "service_needed",
            "risk_level",
            "safe_contact_method",
            "consent_reference",
        ],
    }
    assert ret["override"] is None
    (emergency,) = found["emergency_health_referral"]["transitions"]
    assert emergency["override"] == {"reasons": ["life_at_risk"], "sign_off": "supervisor"}
    assert emergency["consent"] is None
    assert emergency["discloses"]["to"] == "health_provider"
    assert found["refer_for_return"]["decline_reasons"] == []


def test_the_receiving_agency_sees_how_to_answer_the_handoff_and_the_sender_how_to_revoke(
    client: TestClient, users: Users, case_code: str, runtime: Runtime
) -> None:
    r = client.get(f"/referrals/{case_code}/events", headers=users.auth("focal_point"))
    assert r.status_code == 404  # LA-SW-B takes no part until the referral is sent
    send_for_return(client, users, case_code)
    received = by_event(events(client, users, "focal_point", case_code))
    assert list(received) == ["return_referral.acknowledge", "return_referral.decline"]
    decline = received["return_referral.decline"]
    assert decline["handoff"] == "return_referral"
    assert decline["decline_reasons"] == ["no_capacity", "family_tracing_failed"]
    assert decline["reason_required"] is True
    assert received["return_referral.acknowledge"]["decline_reasons"] == []
    sender = by_event(events(client, users, "caseworker", case_code))
    assert "return_referral.revoke" in sender
    assert "return_referral.acknowledge" not in sender
    (revoke,) = sender["return_referral.revoke"]["transitions"]
    assert revoke["to"] == "action_plan"

    reads = runtime.access_log(case_code=case_code)
    assert [(a.action, a.actor_agency_id, a.outcome) for a in reads] == [
        ("events.read", RECEIVER, "refused"),
        ("events.read", RECEIVER, "granted"),
        ("events.read", "TH-NGO-A", "granted"),
    ]


def test_another_agency_gets_the_404_of_a_missing_referral_and_is_logged(
    client: TestClient, users: Users, case_code: str, runtime: Runtime
) -> None:
    headers = users.auth("other_caseworker")
    r = client.get(f"/referrals/{case_code}/events", headers=headers)
    missing = client.get("/referrals/AAAA-BBBB-CCCC/events", headers=headers)
    assert r.status_code == missing.status_code == 404
    assert r.json()["message"] == missing.json()["message"].replace("AAAA-BBBB-CCCC", case_code)
    refused = runtime.access_log(outcome="refused")
    assert [(a.action, a.case_code, a.actor_agency_id) for a in refused] == [
        ("events.read", case_code, "TH-NGO-Z"),
        ("events.read", None, "TH-NGO-Z"),  # a code that does not exist names no referral
    ]


@pytest.mark.parametrize("who", ["coordinator", "auditor"])
def test_roles_outside_the_case_work_are_refused(
    client: TestClient, users: Users, case_code: str, who: str
) -> None:
    r = client.get(f"/referrals/{case_code}/events", headers=users.auth(who))
    assert r.status_code == 403


def test_an_event_with_several_transitions_lists_each_with_its_guard(
    client: TestClient, users: Users
) -> None:
    """Mekong SOPs screen risk at registration: one event, two targets chosen by the guard."""
    body = referral_body(sop_key="national.th", origin_country="TH", destination_country="TH")
    created = client.post("/referrals", json=body, headers=users.auth("caseworker"))
    assert created.status_code == 201, created.text
    code = created.json()["case_code"]
    found = by_event(events(client, users, "caseworker", code, sets="risk_level"))
    assert list(found) == ["register"]
    targets = {t["to"]: t["guard"] for t in found["register"]["transitions"]}
    assert targets == {
        "awaiting_assignment": 'consent.case_management && risk_level != "high"',
        "awaiting_assignment_urgent": 'consent.case_management && risk_level == "high"',
    }
