"""Consent as a ledger: no disclosure without a covering, unexpired grant; children's age
bands; withdrawal that reaches every holder; overrides that stand out."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from sop_engine.clock import ManualClock
from sop_engine.errors import ConsentMissing, GuardFailed, InvalidInput
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.consent import age_band, check_basis
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.referrals import ReferralView
from tests.handoffs import answer_payload

RETURN = {"recipient_agency_id": "LA-SW-1"}


def test_disclosure_without_consent_is_refused(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    # The corridor's refer_for_return also checks consent in its guard.
    with pytest.raises(GuardFailed, match=r"consent\.cross_border_return"):
        runtime.fire(code, "refer_for_return", caseworker, RETURN)
    assert runtime.read_referral(code).state == "action_plan"


def test_disclosure_is_refused_without_a_grant_even_if_the_guard_allows(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    """refer_for_health_care has no consent guard; fire still demands the handoff's grant."""
    code = referral_in_action_plan
    with pytest.raises(ConsentMissing, match="record consent for scope 'health_referral'"):
        runtime.fire(
            code, "refer_for_health_care", caseworker, {"recipient_agency_id": "TH-HOSP-1"}
        )
    runtime.grant_consent(code, scope="health_referral", actor=caseworker, given_by="survivor")
    result = runtime.fire(
        code, "refer_for_health_care", caseworker, {"recipient_agency_id": "TH-HOSP-1"}
    )
    assert result.state == "health_referral.sent"
    assert result.consent_grant_id is not None


def test_a_grant_for_another_agency_does_not_cover(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    runtime.grant_consent(
        code,
        scope="health_referral",
        actor=caseworker,
        given_by="survivor",
        recipient_agency_id="TH-HOSP-2",
    )
    with pytest.raises(ConsentMissing):
        runtime.fire(
            code, "refer_for_health_care", caseworker, {"recipient_agency_id": "TH-HOSP-1"}
        )


def test_an_expired_grant_does_not_cover(
    runtime: Runtime, clock: ManualClock, caseworker: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    grant = runtime.grant_consent(
        code, scope="health_referral", actor=caseworker, given_by="survivor"
    )
    assert grant.expires_at == runtime.clock.now() + timedelta(days=30)  # the scope's valid_for
    short = runtime.grant_consent(
        code,
        scope="health_referral",
        actor=caseworker,
        given_by="survivor",
        expires_at=runtime.clock.now() + timedelta(hours=1),
    )
    runtime.withdraw_consent(code, grant.id, caseworker)
    clock.advance(timedelta(hours=2))
    assert short.expires_at is not None
    assert short.expires_at < runtime.clock.now()
    with pytest.raises(ConsentMissing, match="expired or was withdrawn"):
        runtime.fire(
            code, "refer_for_health_care", caseworker, {"recipient_agency_id": "TH-HOSP-1"}
        )


def test_withdrawal_blocks_the_next_disclosure_and_tells_every_holder(
    runtime: Runtime, caseworker: Actor, focal_point: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    grant = runtime.grant_consent(
        code, scope="cross_border_return", actor=caseworker, given_by="survivor"
    )
    runtime.fire(code, "refer_for_return", caseworker, RETURN)
    for event in ("acknowledge", "accept", "deliver"):
        runtime.fire(code, f"return_referral.{event}", focal_point, answer_payload(event))
    runtime.fire(code, "send_feedback", caseworker)  # allowed: consent stands
    told = runtime.withdraw_consent(code, grant.id, caseworker)
    assert told == ["LA-SW-1"]
    with pytest.raises(ConsentMissing):
        runtime.fire(code, "send_feedback", caseworker)
    view = runtime.read_referral(code)
    with runtime.db.connect() as conn:
        o, tk = tables.outbox, tables.tasks
        notices = conn.execute(
            select(o).where(o.c.referral_id == view.id, o.c.template == "consent_withdrawn")
        ).all()
        tasks = conn.execute(
            select(tk).where(tk.c.referral_id == view.id, tk.c.name == "acknowledge_withdrawal")
        ).all()
    assert [(n.recipient_agency_id, n.recipient_role) for n in notices] == [
        ("LA-SW-1", "agency_focal_point")
    ]
    assert [(t.agency_id, t.status) for t in tasks] == [("LA-SW-1", "open")]
    assert runtime.acknowledge_withdrawal(code, focal_point) == 1
    grants = runtime.list_grants(code)
    assert grants[-1].withdrawn_at is not None


def test_withdrawal_mid_handoff_allows_only_revoke_or_decline(
    runtime: Runtime, caseworker: Actor, focal_point: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    grant = runtime.grant_consent(
        code, scope="cross_border_return", actor=caseworker, given_by="survivor"
    )
    runtime.fire(code, "refer_for_return", caseworker, RETURN)
    runtime.withdraw_consent(code, grant.id, caseworker)
    with pytest.raises(ConsentMissing, match="can only be revoked or declined"):
        runtime.fire(code, "return_referral.acknowledge", focal_point)
    result = runtime.fire(code, "return_referral.revoke", caseworker)
    assert result.state == "action_plan"


def test_override_needs_reason_justification_and_another_persons_sign_off(
    runtime: Runtime,
    caseworker: Actor,
    supervisor: Actor,
    referral_in_action_plan: str,
    corridor_referral: Callable[..., ReferralView],
) -> None:
    facts_high = {"recipient_agency_id": "TH-HOSP-1"}
    override = {
        "reason": "life_at_risk",
        "justification": "Severe injuries; the survivor is unconscious and cannot consent.",
        "signed_off_by": supervisor.id,
        "signed_off_role": "supervisor",
    }
    medium = referral_in_action_plan
    with pytest.raises(GuardFailed, match="guard of 'emergency_health_referral' is not met"):
        runtime.fire(
            medium, "emergency_health_referral", caseworker, {**facts_high, "override": override}
        )
    code = _high_risk_referral(runtime, caseworker, corridor_referral)
    view = runtime.read_referral(code)
    with pytest.raises(ConsentMissing, match="needs an override"):
        runtime.fire(code, "emergency_health_referral", caseworker, facts_high)
    with pytest.raises(InvalidInput, match="at least 20 characters"):
        runtime.fire(
            code,
            "emergency_health_referral",
            caseworker,
            {**facts_high, "override": {**override, "justification": "urgent"}},
        )
    with pytest.raises(InvalidInput, match="cannot be the one who asks"):
        runtime.fire(
            code,
            "emergency_health_referral",
            caseworker,
            {**facts_high, "override": {**override, "signed_off_by": caseworker.id}},
        )
    with pytest.raises(InvalidInput, match=r"override\.reason must be one of life_at_risk"):
        runtime.fire(
            code,
            "emergency_health_referral",
            caseworker,
            {**facts_high, "override": {**override, "reason": "convenience"}},
        )
    result = runtime.fire(
        code, "emergency_health_referral", caseworker, {**facts_high, "override": override}
    )
    assert result.override
    assert result.consent_grant_id is None
    with runtime.db.connect() as conn:
        t = tables.timeline_entries
        entry = conn.execute(
            select(t).where(t.c.seq == result.timeline_seq, t.c.referral_id == view.id)
        ).one()
    assert entry.kind == "override"
    assert entry.override is True
    assert entry.details["override"] == {
        "reason": "life_at_risk",
        "signed_off_by": "u-sup",
        "signed_off_role": "supervisor",
    }
    # The justification is free text: it is kept, but sealed with the case key.
    assert "unconscious" not in str(entry.details)
    assert len(entry.details["justification_sealed"]) > 40


def _high_risk_referral(
    runtime: Runtime, caseworker: Actor, corridor_referral: Callable[..., ReferralView]
) -> str:
    view = corridor_referral(survivor_age=31)
    code = view.case_code
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    runtime.fire(code, "record_consent", caseworker)
    high = {"risk_level": "high", "service_needed": "clinical_care", "safety_plan_agreed": False}
    runtime.fire(code, "complete_assessment", caseworker, {"facts": high})
    return code


@pytest.mark.parametrize(
    ("age", "given_by", "assent", "ok"),
    [
        (30, "survivor", "not_required", True),
        (30, "caregiver", "not_required", False),
        (16, "survivor", "not_required", True),
        (16, "caregiver", "not_required", False),
        (13, "caregiver", "written", True),
        (13, "caregiver", "verbal", False),
        (13, "survivor", "written", False),
        (8, "caregiver", "verbal", True),
        (8, "caregiver", "none", False),
        (3, "caregiver", "not_required", True),
        (3, "survivor", "not_required", False),
    ],
)
def test_who_may_consent_depends_on_age(age: int, given_by: str, assent: str, ok: bool) -> None:
    if ok:
        assert check_basis(age, given_by, assent, None) == age_band(age)
    else:
        with pytest.raises(InvalidInput):
            check_basis(age, given_by, assent, None)


def test_a_substitute_for_an_unsafe_caregiver_needs_a_reason() -> None:
    with pytest.raises(InvalidInput, match="needs a written reason"):
        check_basis(10, "trusted_adult", "verbal", None)
    assert (
        check_basis(10, "trusted_adult", "verbal", "The caregiver is the alleged perpetrator").name
        == "6-11"
    )


def test_consent_needs_the_survivors_age(
    runtime: Runtime,
    caseworker: Actor,
    corridor_referral: Callable[..., ReferralView],
) -> None:
    view = corridor_referral()
    with pytest.raises(InvalidInput, match="record the survivor's age") as caught:
        runtime.grant_consent(
            view.case_code, scope="case_management", actor=caseworker, given_by="survivor"
        )
    assert caught.value.field == "survivor_age"
    child = runtime.grant_consent(
        view.case_code,
        scope="case_management",
        actor=caseworker,
        given_by="caregiver",
        survivor_age=9,
        assent="verbal",
    )
    assert child.age_band == "6-11"


def test_grants_and_withdrawals_are_on_the_timeline(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    grant = runtime.grant_consent(
        code, scope="health_referral", actor=caseworker, given_by="survivor"
    )
    runtime.withdraw_consent(code, grant.id, caseworker)
    view = runtime.read_referral(code)
    with runtime.db.connect() as conn:
        t = tables.timeline_entries
        kinds = conn.execute(
            select(t.c.kind, t.c.consent_grant_id)
            .where(t.c.referral_id == view.id)
            .order_by(t.c.seq)
        ).all()
    assert ("consent_granted", grant.id) in kinds
    assert ("consent_withdrawn", grant.id) in kinds
    with pytest.raises(InvalidInput, match="already withdrawn"):
        runtime.withdraw_consent(code, grant.id, caseworker)
