"""The consent-scoped read: a receiving agency reads exactly the fields disclosed to it,
identifying ones decrypted, while the consent behind them stands; every read and every
refusal is in the access log. Every value is synthetic."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from sop_engine.clock import ManualClock
from sop_engine.errors import ConsentMissing, NotFound
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.disclosed import READ_ACTION, DisclosureWithdrawn
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.referrals import ReferralView
from tests.handoffs import answer_payload

RETURN = {"recipient_agency_id": "LA-SW-1"}
DATASET = {"case_code", "service_needed", "risk_level", "safe_contact_method", "consent_reference"}
"""The return handoff's dataset in example.corridor."""
HOSPITAL = Actor("u-hosp", "agency_focal_point", "TH-HOSP-1")
THIRD = Actor("u-kh", "agency_focal_point", "KH-NGO-3")


def _send_for_return(runtime: Runtime, caseworker: Actor, code: str, **grant: object) -> str:
    """Consent for the return, then the referral sent to LA-SW-1; the grant's id."""
    g = runtime.grant_consent(
        code, scope="cross_border_return", actor=caseworker, given_by="survivor", **grant
    )
    runtime.fire(code, "refer_for_return", caseworker, RETURN)
    return g.id


def _reads(runtime: Runtime, code: str) -> list[tuple[str | None, str, tuple[str, ...]]]:
    return [
        (a.actor_agency_id, a.outcome, a.fields)
        for a in runtime.access_log(case_code=code)
        if a.action == READ_ACTION
    ]


def test_the_receiving_agency_reads_exactly_the_disclosed_fields_decrypted(
    runtime: Runtime, caseworker: Actor, focal_point: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    grant_id = _send_for_return(runtime, caseworker, code)
    view = runtime.read_disclosed(code, focal_point)
    assert set(view.fields) == DATASET
    assert view.fields["safe_contact_method"] == "text_message"  # identifying: decrypted
    assert view.fields["risk_level"] == "medium"
    assert view.fields["case_code"] == code
    assert view.fields["consent_reference"] == grant_id
    assert "survivor_name" not in view.fields  # recorded, sealed, never disclosed
    assert "Synthetic Survivor" not in repr(view)
    assert view.withheld == ()
    assert [(b.grant_id, b.readable) for b in view.disclosures] == [(grant_id, True)]
    assert _reads(runtime, code) == [("LA-SW-1", "granted", tuple(sorted(DATASET)))]


def test_withdrawal_stops_the_read_and_the_refusal_is_logged(
    runtime: Runtime, caseworker: Actor, focal_point: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    grant_id = _send_for_return(runtime, caseworker, code)
    runtime.withdraw_consent(code, grant_id, caseworker)
    with pytest.raises(DisclosureWithdrawn, match="was withdrawn") as refused:
        runtime.read_disclosed(code, focal_point)
    assert isinstance(refused.value, ConsentMissing)  # answered 403 consent_missing
    assert "text_message" not in str(refused.value)
    assert _reads(runtime, code) == [("LA-SW-1", "refused", tuple(sorted(DATASET)))]


def test_an_expired_grant_stops_the_read(
    runtime: Runtime,
    clock: ManualClock,
    caseworker: Actor,
    focal_point: Actor,
    referral_in_action_plan: str,
) -> None:
    code = referral_in_action_plan
    _send_for_return(runtime, caseworker, code, expires_at=runtime.clock.now() + timedelta(hours=1))
    assert set(runtime.read_disclosed(code, focal_point).fields) == DATASET
    clock.advance(timedelta(hours=2))
    with pytest.raises(DisclosureWithdrawn, match="was expired"):
        runtime.read_disclosed(code, focal_point)
    assert [outcome for _, outcome, _ in _reads(runtime, code)] == ["granted", "refused"]


def test_withdrawal_stops_only_what_was_disclosed_under_that_grant(
    runtime: Runtime,
    clock: ManualClock,
    caseworker: Actor,
    focal_point: Actor,
    referral_in_action_plan: str,
) -> None:
    """The handoff disclosed five fields under the first grant; feedback later disclosed
    three under a second. Withdrawing the first leaves the second's three readable."""
    code = referral_in_action_plan
    first = _send_for_return(runtime, caseworker, code)
    for answer in ("acknowledge", "accept", "deliver"):
        runtime.fire(code, f"return_referral.{answer}", focal_point, answer_payload(answer))
    clock.advance(timedelta(days=1))
    second = runtime.grant_consent(
        code, scope="cross_border_return", actor=caseworker, given_by="survivor"
    )
    runtime.fire(code, "send_feedback", caseworker)  # case_code, risk_level, consent_reference
    runtime.withdraw_consent(code, first, caseworker)
    view = runtime.read_disclosed(code, focal_point)
    assert set(view.fields) == {"case_code", "risk_level", "consent_reference"}
    assert view.fields["consent_reference"] == second.id
    assert set(view.withheld) == {"service_needed", "safe_contact_method"}
    assert [b.lapsed for b in view.disclosures] == ["withdrawn", None]


def _overridden_to_hospital(
    runtime: Runtime,
    caseworker: Actor,
    supervisor: Actor,
    corridor_referral: Callable[..., ReferralView],
) -> str:
    """A high-risk referral shared with TH-HOSP-1 without consent, under an override."""
    code = corridor_referral(survivor_age=31, survivor_name="Synthetic Survivor 991").case_code
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    runtime.fire(
        code, "record_consent", caseworker, {"facts": {"safe_contact_method": "phone_call"}}
    )
    high = {"risk_level": "high", "service_needed": "clinical_care", "safety_plan_agreed": False}
    runtime.fire(code, "complete_assessment", caseworker, {"facts": high})
    override = {
        "reason": "life_at_risk",
        "justification": "Synthetic: severe injuries, the survivor cannot consent now.",
        "signed_off_by": supervisor.id,
        "signed_off_role": "supervisor",
    }
    result = runtime.fire(
        code,
        "emergency_health_referral",
        caseworker,
        {"recipient_agency_id": HOSPITAL.agency_id, "override": override},
    )
    assert result.override
    return code


def test_an_override_disclosure_stays_readable_until_the_case_is_erased(
    runtime: Runtime,
    caseworker: Actor,
    supervisor: Actor,
    corridor_referral: Callable[..., ReferralView],
) -> None:
    code = _overridden_to_hospital(runtime, caseworker, supervisor, corridor_referral)
    view = runtime.read_disclosed(code, HOSPITAL)
    assert view.fields["safe_contact_method"] == "phone_call"
    assert view.fields["consent_reference"] is None  # no grant: an override
    assert [(b.override, b.readable) for b in view.disclosures] == [(True, True)]

    runtime.erase(code, caseworker)
    erased = runtime.read_disclosed(code, HOSPITAL)
    assert erased.erased
    assert "safe_contact_method" not in erased.fields  # identifying: gone with the case key
    assert "safe_contact_method" in erased.withheld
    assert erased.fields["risk_level"] == "high"
    assert "phone_call" not in repr(erased)


def test_an_agency_outside_the_referral_learns_nothing_and_is_logged(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    _send_for_return(runtime, caseworker, code)
    with pytest.raises(NotFound) as outside:
        runtime.read_disclosed(code, THIRD)
    with pytest.raises(NotFound) as unknown:
        runtime.read_disclosed("AAAA-BBBB-CCCC", THIRD)
    assert str(outside.value) == str(unknown.value).replace("AAAA-BBBB-CCCC", code)
    assert _reads(runtime, code) == [("KH-NGO-3", "refused", ())]
    unknown_logged = [a for a in runtime.access_log(agency_id="KH-NGO-3") if a.case_code is None]
    assert [(a.action, a.outcome) for a in unknown_logged] == [(READ_ACTION, "refused")]


def test_the_managing_agency_was_disclosed_nothing(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    """Its own case's identifying data is not read through this route."""
    code = referral_in_action_plan
    _send_for_return(runtime, caseworker, code)
    with pytest.raises(NotFound, match="nothing of referral"):
        runtime.read_disclosed(code, caseworker)
    assert _reads(runtime, code) == [("TH-NGO-1", "refused", ())]


def test_disclosed_fields_names_what_an_agency_may_read_without_values(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    grant_id = _send_for_return(runtime, caseworker, code)
    assert runtime.disclosed_fields(code, "LA-SW-1").readable == DATASET
    assert runtime.disclosed_fields(code, "KH-NGO-3").disclosures == ()
    runtime.withdraw_consent(code, grant_id, caseworker)
    held = runtime.disclosed_fields(code, "LA-SW-1")
    assert held.readable == frozenset()
    assert held.withheld == DATASET
    assert runtime.access_log(case_code=code) == []  # names only: nothing read, nothing logged
