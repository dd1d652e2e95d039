"""``POST /referrals/{case_code}/clocks/{clock}/waive``: the managing agency's caseworker or
supervisor waives a case clock with a reason; everyone else, and every bad request, gets a
clear 4xx. Every name here is synthetic."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from .conftest import SURVIVOR, Users, referral_body

CLOCK = "medical_follow_up"
"""The example SOP's clock: 2 weeks from ``health_care_at``, blocking closure."""


@pytest.fixture
def cared_for(client: TestClient, users: Users) -> str:
    """A referral created after clinical care was given, so its follow-up clock runs."""
    care_at = datetime.now(UTC).replace(microsecond=0).isoformat()
    facts = {"survivor_name": SURVIVOR, "survivor_age": 24, "health_care_at": care_at}
    r = client.post("/referrals", json=referral_body(facts=facts), headers=users.auth("caseworker"))
    assert r.status_code == 201, r.text
    code: str = r.json()["case_code"]
    return code


def test_the_managing_supervisor_waives_a_clock_and_the_timeline_says_why(
    client: TestClient, users: Users, cared_for: str
) -> None:
    r = client.post(
        f"/referrals/{cared_for}/clocks/{CLOCK}/waive",
        json={"reason": "care_given_elsewhere"},
        headers=users.auth("supervisor"),
    )
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == f'"{r.json()["version"]}"'
    assert SURVIVOR not in r.text
    timeline = client.get(
        f"/audit/referrals/{cared_for}/timeline", headers=users.auth("auditor")
    ).json()
    (waived,) = [e for e in timeline["items"] if e["kind"] == "clock_waived"]
    assert waived["details"] == {"clock": CLOCK, "reason": "care_given_elsewhere"}
    again = client.post(
        f"/referrals/{cared_for}/clocks/{CLOCK}/waive",
        json={"reason": "care_given_elsewhere"},
        headers=users.auth("caseworker"),
    )
    assert again.status_code == 409, again.text


@pytest.mark.parametrize(
    ("who", "status"),
    [("other_caseworker", 404), ("focal_point", 403), ("auditor", 403), ("coordinator", 403)],
)
def test_no_one_else_waives_a_clock(
    client: TestClient, users: Users, cared_for: str, who: str, status: int
) -> None:
    r = client.post(
        f"/referrals/{cared_for}/clocks/{CLOCK}/waive",
        json={"reason": "survivor_declined"},
        headers=users.auth(who),
    )
    assert r.status_code == status, r.text
    assert SURVIVOR not in r.text


@pytest.mark.parametrize(
    ("clock", "body", "status"),
    [
        (CLOCK, {"reason": "too_busy"}, 422),  # not one of the clock's reasons
        (CLOCK, {}, 422),  # no reason
        (CLOCK, {"reason": "survivor_declined", "note": "x"}, 422),  # unknown key
        ("medical_follow_upp", {"reason": "survivor_declined"}, 404),  # no such clock
        ("Not-A-Clock", {"reason": "survivor_declined"}, 422),  # not a name
    ],
)
def test_bad_waivers_are_clear_4xx(
    client: TestClient,
    users: Users,
    cared_for: str,
    clock: str,
    body: dict[str, object],
    status: int,
) -> None:
    r = client.post(
        f"/referrals/{cared_for}/clocks/{clock}/waive", json=body, headers=users.auth("caseworker")
    )
    assert r.status_code == status, r.text


def test_a_stale_version_is_refused(client: TestClient, users: Users, cared_for: str) -> None:
    r = client.post(
        f"/referrals/{cared_for}/clocks/{CLOCK}/waive",
        json={"reason": "survivor_declined"},
        headers={**users.auth("caseworker"), "If-Match": '"99"'},
    )
    assert r.status_code == 409, r.text
