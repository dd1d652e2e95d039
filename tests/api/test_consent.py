"""Consent through the API: the managing agency records, lists and withdraws grants; an
agency that held data under a withdrawn grant is told and acknowledges. Other agencies get
the 404 of a referral that does not exist, and every read and refusal is in the access log."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from fastapi.testclient import TestClient

from api.schemas.consent import Assent, GivenBy
from api.users import create_user
from sop_engine.runtime.consent import ASSENT, GIVEN_BY
from sop_engine.runtime.engine import Runtime

from .conftest import SURVIVOR, Users, referral_body
from .journey import RECEIVER, grant, send_for_return, to_action_plan

NO_GRANT = "00000000-0000-0000-0000-000000000000"


def consents(code: str) -> str:
    return f"/referrals/{code}/consents"


def test_the_request_model_offers_exactly_the_ledgers_choices() -> None:
    assert get_args(GivenBy) == GIVEN_BY
    assert get_args(Assent) == ASSENT


@pytest.mark.parametrize("who", ["caseworker", "supervisor"])
def test_the_managing_agency_records_consent(
    client: TestClient, users: Users, case_code: str, runtime: Runtime, who: str
) -> None:
    r = client.post(
        consents(case_code),
        json={"scope": "case_management", "given_by": "survivor"},
        headers=users.auth(who),
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["scope"] == "case_management"
    assert body["recipient_slot"] == "case_agency"
    assert (body["given_by"], body["assent"]) == ("survivor", "not_required")
    assert body["age_band"] == "18+"
    assert body["status"] == "active"
    assert body["replayed"] is False
    assert "survivor_age" not in body
    assert SURVIVOR not in r.text
    assert [g.id for g in runtime.list_grants(case_code)] == [body["id"]]


def test_a_child_under_15_consents_through_a_caregiver_with_her_assent(
    client: TestClient, users: Users
) -> None:
    created = client.post(
        "/referrals",
        json=referral_body(facts={"survivor_name": SURVIVOR, "survivor_age": 13}),
        headers=users.auth("caseworker"),
    )
    code = created.json()["case_code"]
    base = {"scope": "case_management", "given_by": "caregiver"}
    cw = users.auth("caseworker")
    alone = client.post(consents(code), json={**base, "given_by": "survivor"}, headers=cw)
    assert alone.status_code == 422
    assert alone.json()["field"] == "given_by"
    no_assent = client.post(consents(code), json=base, headers=cw)
    assert no_assent.status_code == 422
    assert no_assent.json()["field"] == "assent"
    substitute = {**base, "given_by": "trusted_adult", "assent": "written"}
    no_reason = client.post(consents(code), json=substitute, headers=cw)
    assert no_reason.status_code == 422
    assert no_reason.json()["field"] == "substitute_reason"
    ok = client.post(consents(code), json={**base, "assent": "written"}, headers=cw)
    assert ok.status_code == 201, ok.text
    assert ok.json()["age_band"] == "12-14"
    for r in (alone, no_assent, no_reason, ok):
        assert SURVIVOR not in r.text


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"scope": "case_managment"}, "scope"),
        ({"given_by": "neighbour"}, "given_by"),
        ({"assent": "nodded"}, "assent"),
        ({"survivor_age": 10}, "given_by"),
        ({"survivor_age": 200}, "survivor_age"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "2099-01-01T00:00:00"}, "expires_at"),
        ({"expires_at": "9999-12-31T23:59:59-14:00"}, "expires_at"),
        ({"survivor_name": SURVIVOR}, "survivor_name"),
        ({"scope": None}, "scope"),
    ],
)
def test_a_bad_grant_is_422_naming_the_field_without_echoing_it(
    client: TestClient, users: Users, case_code: str, change: dict[str, Any], field: str
) -> None:
    body = {"scope": "case_management", "given_by": "survivor", **change}
    r = client.post(consents(case_code), json=body, headers=users.auth("caseworker"))
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
    assert SURVIVOR not in r.text
    assert "neighbour" not in r.text


def test_a_misspelt_scope_gets_a_hint(client: TestClient, users: Users, case_code: str) -> None:
    body = {"scope": "case_managment", "given_by": "survivor"}
    r = client.post(consents(case_code), json=body, headers=users.auth("caseworker"))
    assert "did you mean 'case_management'" in r.json()["message"]


def test_an_idempotency_key_records_a_grant_once(
    client: TestClient, users: Users, case_code: str, runtime: Runtime
) -> None:
    body = {"scope": "case_management", "given_by": "survivor"}
    headers = {**users.auth("caseworker"), "Idempotency-Key": "grant-1"}
    first = client.post(consents(case_code), json=body, headers=headers)
    again = client.post(consents(case_code), json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == {**first.json(), "replayed": True}
    assert len(runtime.list_grants(case_code)) == 1

    other = client.post(
        consents(case_code), json={**body, "scope": "health_referral"}, headers=headers
    )
    assert other.status_code == 422
    assert other.json()["field"] == "Idempotency-Key"
    assert len(runtime.list_grants(case_code)) == 1


def test_a_refused_grant_frees_its_idempotency_key(
    client: TestClient, users: Users, case_code: str, runtime: Runtime
) -> None:
    headers = {**users.auth("caseworker"), "Idempotency-Key": "grant-2"}
    bad = client.post(
        consents(case_code), json={"scope": "nope", "given_by": "survivor"}, headers=headers
    )
    assert bad.status_code == 422
    fixed = {"scope": "case_management", "given_by": "survivor"}
    good = client.post(consents(case_code), json=fixed, headers=headers)
    assert good.status_code == 201, good.text
    assert good.json()["replayed"] is False
    assert len(runtime.list_grants(case_code)) == 1


def test_the_grants_are_listed_page_by_page_and_each_read_is_logged(
    client: TestClient, users: Users, case_code: str, runtime: Runtime
) -> None:
    made = [grant(client, users, case_code, s) for s in ("case_management", "health_referral")]
    made.append(grant(client, users, case_code, "cross_border_return"))
    cw = users.auth("caseworker")
    first = client.get(consents(case_code), params={"limit": 2}, headers=cw)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [g["id"] for g in page["items"]] == made[:2]
    assert page["next_cursor"] is not None
    rest = client.get(
        consents(case_code), params={"limit": 2, "cursor": page["next_cursor"]}, headers=cw
    ).json()
    assert [g["id"] for g in rest["items"]] == made[2:]
    assert rest["next_cursor"] is None
    assert rest["items"][0]["expires_at"] is None  # cross_border_return has no valid_for

    reads = [a for a in runtime.access_log(case_code=case_code) if a.action == "consent.read"]
    assert [(a.outcome, a.actor_role, a.actor_agency_id) for a in reads] == [
        ("granted", "caseworker", "TH-NGO-A")
    ] * 2
    assert {"given_by", "age_band", "scope"} <= set(reads[0].fields)
    assert SURVIVOR not in first.text


def test_a_bad_cursor_is_422_naming_it(client: TestClient, users: Users, case_code: str) -> None:
    for cursor in ("%%%", "WyJ4Il0"):  # not base64; base64 of ["x"]
        r = client.get(
            consents(case_code), params={"cursor": cursor}, headers=users.auth("supervisor")
        )
        assert r.status_code == 422
        assert r.json()["field"] == "cursor"


OTHER_AGENCY_CALLS = [
    ("POST", "/referrals/{code}/consents", {"scope": "case_management", "given_by": "survivor"}),
    ("GET", "/referrals/{code}/consents", None),
    ("POST", f"/referrals/{{code}}/consents/{NO_GRANT}/withdrawal", None),
]


@pytest.mark.parametrize(("method", "path", "body"), OTHER_AGENCY_CALLS)
def test_another_agency_gets_the_404_of_a_missing_referral_and_is_logged(
    client: TestClient,
    users: Users,
    case_code: str,
    runtime: Runtime,
    method: str,
    path: str,
    body: Any,
) -> None:
    headers = users.auth("other_caseworker")
    r = client.request(method, path.format(code=case_code), json=body, headers=headers)
    missing = client.request(method, path.format(code="AAAA-BBBB-CCCC"), json=body, headers=headers)
    assert r.status_code == missing.status_code == 404
    assert r.json() == {
        **missing.json(),
        "message": missing.json()["message"].replace("AAAA-BBBB-CCCC", case_code),
    }
    refused = runtime.access_log(case_code=case_code, outcome="refused")
    assert [(a.actor_agency_id, a.fields) for a in refused] == [("TH-NGO-Z", ())]
    assert runtime.list_grants(case_code) == []


def test_an_agency_taking_part_still_may_not_touch_consent(
    client: TestClient, users: Users, case_code: str, runtime: Runtime
) -> None:
    """LA-SW-B receives the referral and reads it; its caseworker cannot see its consent."""
    grant_id = send_for_return(client, users, case_code)
    la = create_user(runtime.db, "cw-la", "caseworker", RECEIVER)
    headers = {"Authorization": f"Bearer {la.token}"}
    assert client.get(f"/referrals/{case_code}", headers=headers).status_code == 200
    for method, path, body in OTHER_AGENCY_CALLS:
        url = path.format(code=case_code).replace(NO_GRANT, grant_id)
        r = client.request(method, url, json=body, headers=headers)
        assert r.status_code == 404, (method, path)
    assert len(runtime.list_grants(case_code)) == 2
    assert all(g.withdrawn_at is None for g in runtime.list_grants(case_code))
    refused = runtime.access_log(case_code=case_code, outcome="refused")
    assert [a.action for a in refused] == ["consent.grant", "consent.read", "consent.withdraw"]


def test_withdrawal_reaches_the_agency_that_held_data_which_acknowledges(
    client: TestClient, users: Users, case_code: str, runtime: Runtime
) -> None:
    grant_id = send_for_return(client, users, case_code)
    url = f"{consents(case_code)}/{grant_id}/withdrawal"
    headers = {**users.auth("supervisor"), "Idempotency-Key": "withdraw-1"}
    r = client.post(url, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"grant_id": grant_id, "agencies_told": [RECEIVER], "replayed": False}

    retry = client.post(url, headers=headers)
    assert retry.json() == {**r.json(), "replayed": True}
    again = client.post(url, headers=users.auth("caseworker"))
    assert again.status_code == 422
    assert again.json()["field"] == "grant_id"

    listed = client.get(consents(case_code), headers=users.auth("caseworker")).json()["items"]
    assert [(g["scope"], g["status"]) for g in listed] == [
        ("case_management", "active"),
        ("cross_border_return", "withdrawn"),
    ]
    # The receiver can no longer go on with the handoff, only decline it.
    ack_handoff = client.post(
        f"/referrals/{case_code}/events/return_referral.acknowledge",
        headers=users.auth("focal_point"),
    )
    assert ack_handoff.status_code == 403
    assert ack_handoff.json()["error"] == "consent_missing"

    ack = f"/referrals/{case_code}/withdrawal-acknowledgement"
    fp = {**users.auth("focal_point"), "Idempotency-Key": "ack-1"}
    done = client.post(ack, headers=fp)
    assert done.status_code == 200, done.text
    assert done.json() == {"acknowledged": 1, "replayed": False}
    assert client.post(ack, headers=fp).json() == {"acknowledged": 1, "replayed": True}
    nothing_left = client.post(ack, headers=users.auth("focal_point"))
    assert nothing_left.status_code == 404
    for response in (r, retry, again, done):
        assert SURVIVOR not in response.text


def test_withdrawing_a_grant_nothing_was_disclosed_under_tells_nobody(
    client: TestClient, users: Users, case_code: str
) -> None:
    grant_id = grant(client, users, case_code, "health_referral")
    r = client.post(
        f"{consents(case_code)}/{grant_id}/withdrawal", headers=users.auth("caseworker")
    )
    assert r.status_code == 200
    assert r.json()["agencies_told"] == []


def test_withdrawing_an_unknown_grant_is_404_and_a_malformed_id_422(
    client: TestClient, users: Users, case_code: str
) -> None:
    cw = users.auth("caseworker")
    unknown = client.post(f"{consents(case_code)}/{NO_GRANT}/withdrawal", headers=cw)
    assert unknown.status_code == 404
    malformed = client.post(f"{consents(case_code)}/{SURVIVOR}/withdrawal", headers=cw)
    assert malformed.status_code == 422
    assert malformed.json()["field"] == "grant_id"
    assert SURVIVOR not in malformed.text


def test_an_agency_outside_the_referral_cannot_acknowledge_and_is_logged(
    client: TestClient, users: Users, case_code: str, runtime: Runtime
) -> None:
    to_action_plan(client, users, case_code)
    r = client.post(
        f"/referrals/{case_code}/withdrawal-acknowledgement", headers=users.auth("focal_point")
    )
    assert r.status_code == 404
    assert r.json()["message"] == f"no referral {case_code}"
    refused = runtime.access_log(case_code=case_code, outcome="refused")
    assert [(a.action, a.actor_agency_id) for a in refused] == [
        ("withdrawal.acknowledge", RECEIVER)
    ]


CONSENT_KEEPERS = {"caseworker", "supervisor"}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/referrals/{code}/consents", CONSENT_KEEPERS),
        ("GET", "/referrals/{code}/consents", CONSENT_KEEPERS),
        ("POST", f"/referrals/{{code}}/consents/{NO_GRANT}/withdrawal", CONSENT_KEEPERS),
        ("POST", "/referrals/{code}/withdrawal-acknowledgement", {"focal_point"}),
    ],
)
def test_each_consent_route_admits_its_roles_and_refuses_every_other(
    client: TestClient, users: Users, case_code: str, method: str, path: str, allowed: set[str]
) -> None:
    url = path.format(code=case_code)
    body = {"scope": "case_management", "given_by": "survivor"} if "consents" in url else None
    for who in users.tokens:
        r = client.request(method, url, json=body, headers=users.auth(who))
        if who == "other_caseworker" and "caseworker" in allowed:
            assert r.status_code == 404  # the role may, but not on another agency's referral
        elif who in allowed:
            assert r.status_code not in (401, 403, 500), (who, r.text)
        else:
            assert r.status_code == 403, who
            assert r.json()["error"] == "forbidden"
