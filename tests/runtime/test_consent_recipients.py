"""Consent names its recipient: one agency of the directory, or agencies of a type in a
country, and the data categories the survivor agreed to. A disclosure outside the grant is
refused, naming what is missing; an agency the directory does not list is refused with a
"did you mean" before anything is disclosed.

Regression: a referral went to a Thai shelter under a scope limited to Cambodia, and to a
mistyped agency id, both counted as disclosed; a grant always copied the scope's full data
categories; ``/disclosed`` showed a field's current value, not the value disclosed.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from sop_engine.errors import ConsentMissing, InvalidInput
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.recipients import UnknownAgency
from tests.handoffs import answer_payload

RECEIVER, OTHER_LAO = "LA-SW-1", "LA-SW-2"


def _disclosures(runtime: Runtime) -> int:
    with runtime.db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(tables.disclosures)).scalar_one())


def test_a_grant_names_a_listed_agency_that_fits_the_scope(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    grant = {"scope": "cross_border_return", "actor": caseworker, "given_by": "survivor"}
    with pytest.raises(UnknownAgency, match=r"no agency 'LA-SW-1x'.*did you mean 'LA-SW-1'"):
        runtime.grant_consent(code, **grant, recipient_agency_id="LA-SW-1x")
    with pytest.raises(InvalidInput, match="the SOP places that part in LA") as wrong_country:
        runtime.grant_consent(code, **grant, recipient_agency_id="TH-MSDHS")
    assert wrong_country.value.field == "recipient_agency_id"
    with pytest.raises(InvalidInput, match="type government_social_welfare"):
        runtime.grant_consent(code, **grant, recipient_agency_id="LA-HOSP-1")
    with pytest.raises(InvalidInput, match="covers LA only, not KH"):
        runtime.grant_consent(code, **grant, country="KH")
    with pytest.raises(InvalidInput, match=r"must be some of .*\(not health\)") as beyond:
        runtime.grant_consent(code, **grant, data_categories=["case_basic", "health"])
    assert beyond.value.field == "data_categories"
    with pytest.raises(InvalidInput, match="recipient_agency_type must be one of"):
        runtime.grant_consent(code, **grant, recipient_agency_type="health")
    recorded = runtime.grant_consent(code, **grant, recipient_agency_id=RECEIVER)
    assert (recorded.recipient_agency_id, recorded.country) == (RECEIVER, "LA")
    assert recorded.data_categories == ("case_basic", "contact")
    assert [g.id for g in runtime.list_grants(code)][-1] == recorded.id


def test_case_management_consent_names_the_managing_agency(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    [grant] = runtime.list_grants(referral_in_action_plan)
    assert (grant.recipient_slot, grant.recipient_agency_id) == ("case_agency", "TH-NGO-1")


def test_a_disclosure_to_another_agency_than_the_one_consented_to_is_refused(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    runtime.grant_consent(code, scope="cross_border_return", actor=caseworker,
                          given_by="survivor", recipient_agency_id=RECEIVER)  # fmt: skip
    before = _disclosures(runtime)
    with pytest.raises(ConsentMissing, match=f"does not cover agency {OTHER_LAO}"):
        runtime.fire(code, "refer_for_return", caseworker, {"recipient_agency_id": OTHER_LAO})
    with pytest.raises(UnknownAgency, match="did you mean"):
        runtime.fire(code, "refer_for_return", caseworker, {"recipient_agency_id": "LA-SW-9X"})
    view = runtime.read_referral(code)
    assert view.state == "action_plan"
    assert "receiving_focal_point" not in view.agencies
    assert _disclosures(runtime) == before
    sent = runtime.fire(code, "refer_for_return", caseworker, {"recipient_agency_id": RECEIVER})
    assert sent.disclosed_to == RECEIVER


def test_a_type_and_country_grant_covers_only_that_kind_of_agency_there(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    """health_referral: a Thai health provider; a grant for that type in TH covers any."""
    code = referral_in_action_plan
    runtime.grant_consent(code, scope="health_referral", actor=caseworker, given_by="survivor",
                          recipient_agency_type="health")  # fmt: skip
    with pytest.raises(InvalidInput, match="the SOP places that part in TH"):
        runtime.fire(
            code, "refer_for_health_care", caseworker, {"recipient_agency_id": "KH-HOSP-1"}
        )
    with pytest.raises(InvalidInput, match="type health"):
        runtime.fire(code, "refer_for_health_care", caseworker, {"recipient_agency_id": "TH-NGO-Z"})
    sent = runtime.fire(
        code, "refer_for_health_care", caseworker, {"recipient_agency_id": "TH-HOSP-2"}
    )
    assert sent.disclosed_to == "TH-HOSP-2"


def test_a_category_the_survivor_did_not_agree_to_is_not_disclosed(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    """The return dataset holds a contact method (category contact): a grant for case_basic
    alone does not cover it."""
    code = referral_in_action_plan
    runtime.grant_consent(code, scope="cross_border_return", actor=caseworker,
                          given_by="survivor", data_categories=["case_basic"])  # fmt: skip
    with pytest.raises(ConsentMissing, match="does not cover data categories contact"):
        runtime.fire(code, "refer_for_return", caseworker, {"recipient_agency_id": RECEIVER})
    assert runtime.read_referral(code).state == "action_plan"


def test_the_receiver_reads_values_as_disclosed_not_as_they_are_now(
    runtime: Runtime, caseworker: Actor, focal_point: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    runtime.grant_consent(code, scope="cross_border_return", actor=caseworker, given_by="survivor")
    runtime.fire(code, "refer_for_return", caseworker, {"recipient_agency_id": RECEIVER})
    for answer in ("acknowledge", "accept", "deliver"):
        runtime.fire(code, f"return_referral.{answer}", focal_point, answer_payload(answer))
    assert runtime.read_disclosed(code, focal_point).fields["risk_level"] == "medium"
    runtime.fire(code, "record_follow_up", caseworker, {"facts": {"risk_level": "low"}})
    assert runtime.read_referral(code).facts["risk_level"] == "low"
    assert runtime.read_disclosed(code, focal_point).fields["risk_level"] == "medium"
    runtime.fire(code, "send_feedback", caseworker)  # discloses the risk level again
    assert runtime.read_disclosed(code, focal_point).fields["risk_level"] == "low"


def test_what_the_receiver_writes_reaches_the_managing_agency_only_as_disclosed(
    runtime: Runtime, caseworker: Actor, focal_point: Actor, referral_in_action_plan: str
) -> None:
    """report_reintegration: the Lao focal point's score, disclosed back to the Thai case
    agency under the survivor's own consent for that feedback."""
    code = referral_in_action_plan
    runtime.grant_consent(code, scope="cross_border_return", actor=caseworker, given_by="survivor")
    runtime.fire(code, "refer_for_return", caseworker, {"recipient_agency_id": RECEIVER})
    for answer in ("acknowledge", "accept", "deliver"):
        runtime.fire(code, f"return_referral.{answer}", focal_point, answer_payload(answer))
    score = {"facts": {"follow_up_score": 4}}
    with pytest.raises(ConsentMissing, match="scope 'feedback_to_case_agency'"):
        runtime.fire(code, "report_reintegration", focal_point, score)
    runtime.grant_consent(code, scope="feedback_to_case_agency", actor=caseworker,
                          given_by="survivor")  # fmt: skip
    runtime.fire(code, "report_reintegration", focal_point, score)
    assert runtime.read_as_agency(code, caseworker).facts["follow_up_score"] == 4
    assert runtime.read_as_agency(code, focal_point).facts["follow_up_score"] == 4
    assert "safety_plan_agreed" not in runtime.read_as_agency(code, focal_point).facts
    assert runtime.read_as_agency(code, focal_point).facts["service_needed"] == "safety_and_shelter"


def test_a_fact_written_by_the_receiver_and_not_disclosed_stays_the_receivers(
    runtime: Runtime, caseworker: Actor, focal_point: Actor, referral_in_action_plan: str
) -> None:
    """The managing agency's own view, without feedback: a value the receiver wrote is not
    shown to it, even though the referral row holds it."""
    code = referral_in_action_plan
    runtime.grant_consent(code, scope="cross_border_return", actor=caseworker, given_by="survivor")
    runtime.fire(code, "refer_for_return", caseworker, {"recipient_agency_id": RECEIVER})
    for answer in ("acknowledge", "accept", "deliver"):
        runtime.fire(code, f"return_referral.{answer}", focal_point, answer_payload(answer))
    runtime.grant_consent(code, scope="feedback_to_case_agency", actor=caseworker,
                          given_by="survivor")  # fmt: skip
    runtime.fire(code, "report_reintegration", focal_point, {"facts": {"follow_up_score": 4}})
    runtime.fire(code, "report_reintegration", focal_point, {"facts": {"follow_up_score": 6}})
    assert runtime.read_as_agency(code, caseworker).facts["follow_up_score"] == 6
    runtime.withdraw_consent(code, runtime.list_grants(code)[-1].id, caseworker)
    seen = runtime.read_as_agency(code, caseworker)
    assert "follow_up_score" not in seen.facts  # its only basis was withdrawn
    assert runtime.read_referral(code).facts["follow_up_score"] == 6
    assert runtime.read_as_agency(code, focal_point).facts["follow_up_score"] == 6
