"""Who acts on a referral is what the SOP gives each agency slot: a receiving agency answers
its handoff and fires what its slot is given, nothing of the managing agency's.

Regression: an agency sent a referral could revoke the sender's handoff, overwrite the
managing agency's facts, close its case and send it on to a third agency, because any agency
on the referral could fire any transition that was not a handoff answer.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from sop_engine.errors import RoleNotAllowed
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from tests.handoffs import DELIVERED

RECEIVER = "LA-SW-1"


@pytest.fixture
def returned(
    runtime: Runtime, caseworker: Actor, focal_point: Actor, referral_in_action_plan: str
) -> str:
    """A corridor referral sent to the Lao focal point (LA-SW-1) and acknowledged there."""
    code = referral_in_action_plan
    runtime.grant_consent(code, scope="cross_border_return", actor=caseworker, given_by="survivor")
    runtime.fire(code, "refer_for_return", caseworker, {"recipient_agency_id": RECEIVER})
    runtime.fire(code, "return_referral.acknowledge", focal_point)
    return code


def receiver_caseworker() -> Actor:
    """A caseworker of the receiving agency: the role the managing agency's steps name."""
    return Actor("u-la-cw", "caseworker", RECEIVER, ("government_social_welfare",))


def test_the_receiver_cannot_revoke_what_it_was_sent(
    runtime: Runtime, returned: str, focal_point: Actor
) -> None:
    sender_role = Actor("u-la-sup", "supervisor", RECEIVER, ("government_social_welfare",))
    for actor in (focal_point, receiver_caseworker(), sender_role):
        with pytest.raises(RoleNotAllowed):
            runtime.fire(returned, "return_referral.revoke", actor)
    with pytest.raises(RoleNotAllowed, match="only the agency that sent the referral may revoke"):
        runtime.fire(returned, "return_referral.revoke", receiver_caseworker())
    assert runtime.read_referral(returned).state == "return_referral.acknowledged"


@pytest.mark.parametrize("answer", ["deliver", "decline"])
def test_the_receiver_cannot_fire_the_managing_agencys_steps(
    runtime: Runtime, returned: str, focal_point: Actor, answer: str
) -> None:
    """Closing the case, withdrawing consent, sending it on to a third agency: after the
    receiver delivered (follow-up) or declined (back in the action plan), all the managing
    agency's, never the receiver's, whatever role its user holds."""
    if answer == "deliver":
        runtime.fire(returned, "return_referral.accept", focal_point)
    runtime.fire(returned, f"return_referral.{answer}", focal_point, {"reason": "no_capacity"}
                 if answer == "decline" else DELIVERED)  # fmt: skip
    state = runtime.read_referral(returned).state
    no_payload: dict[str, str] = {}
    attempts = {
        "follow_up": [("consent_withdrawn", no_payload), ("close", no_payload)],
        "action_plan": [
            ("refer_for_health_care", {"recipient_agency_id": "KH-NGO-9"}),
            ("refer_for_return", {"recipient_agency_id": "LA-SW-2"}),
            ("close", no_payload),
        ],
    }[state]
    for event, payload in attempts:
        for actor in (receiver_caseworker(), focal_point):
            with pytest.raises(RoleNotAllowed):
                runtime.fire(returned, event, actor, payload)
        with pytest.raises(RoleNotAllowed, match="for the managing agency of this referral"):
            runtime.fire(returned, event, receiver_caseworker(), payload)
    view = runtime.read_referral(returned)
    assert view.state == state
    assert "health_provider" not in view.agencies
    assert view.agencies["receiving_focal_point"] == RECEIVER


def test_in_follow_up_each_side_fires_only_its_own_steps(
    runtime: Runtime, returned: str, caseworker: Actor, focal_point: Actor
) -> None:
    runtime.fire(returned, "return_referral.accept", focal_point)
    runtime.fire(returned, "return_referral.deliver", focal_point, DELIVERED)
    assert runtime.read_referral(returned).state == "follow_up"
    runtime.grant_consent(
        returned, scope="feedback_to_case_agency", actor=caseworker, given_by="survivor"
    )
    thai_focal_point = Actor("u-fp-th", "agency_focal_point", "TH-NGO-1", ("ngo",))
    score = {"facts": {"follow_up_score": 3}}
    with pytest.raises(RoleNotAllowed, match="for 'receiving_focal_point' of this referral"):
        runtime.fire(returned, "report_reintegration", thai_focal_point, score)
    with pytest.raises(RoleNotAllowed, match="for the managing agency"):
        runtime.fire(returned, "close", receiver_caseworker())
    done = runtime.fire(
        returned, "report_reintegration", focal_point, {"facts": {"follow_up_score": 7}}
    )
    assert done.state == "follow_up"
    assert "close" not in done.available_events
    assert "report_reintegration" in done.available_events


def test_the_sender_revokes_and_available_events_say_who_may(
    runtime: Runtime, returned: str, caseworker: Actor, focal_point: Actor
) -> None:
    seen_by_receiver = runtime.read_referral(returned, actor=focal_point).available_events
    assert set(seen_by_receiver) == {"return_referral.accept", "return_referral.decline"}
    seen_by_sender = runtime.read_referral(returned, actor=caseworker).available_events
    assert "return_referral.revoke" in seen_by_sender
    assert "return_referral.accept" not in seen_by_sender
    runtime.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]
    assert runtime.fire(returned, "return_referral.revoke", caseworker).state == "action_plan"
