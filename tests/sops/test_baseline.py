"""The Mekong baseline itself runs: its main path and its main escalation, as a regional
template before any national or corridor SOP overrides it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from tests.agencies import agency_directory
from tests.handoffs import answer_payload

MEKONG = Path(__file__).resolve().parents[2] / "sop_definitions" / "mekong"
CASEWORKER = Actor("u-cw", "caseworker", "KH-NGO-1", ("ngo",))
SUPERVISOR = Actor("u-sup", "supervisor", "KH-NGO-1", ("ngo",))
CLINIC = Actor("u-fp", "agency_focal_point", "KH-CLINIC-1", ("health",))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2027, 2, 1, 2, 0, tzinfo=UTC))


@pytest.fixture
def runtime(engine: Engine, clock: ManualClock) -> Runtime:
    library = SopLibrary.load([MEKONG / "mekong.baseline.sop.yaml"])
    return Runtime(
        engine,
        library,
        MasterKeyring(MasterKey.generate("test")),
        clock,
        directory=agency_directory(),
    )


def _to_health_referral(runtime: Runtime, clock: ManualClock) -> str:
    view = runtime.create_referral(
        sop_key="mekong.baseline",
        sop_version=1,
        actor=CASEWORKER,
        origin_country="KH",
        destination_country="KH",
        incident_at=clock.now() - timedelta(hours=20),
        disclosed_at=clock.now(),
        facts={"survivor_age": 26},
    )
    code = view.case_code
    runtime.grant_consent(code, scope="case_management", actor=CASEWORKER, given_by="survivor")
    screening = {"risk_level": "medium", "service_needed": "clinical_care"}
    assert runtime.fire(code, "register", CASEWORKER, {"facts": screening}).state == (
        "awaiting_assignment"
    )
    assert runtime.fire(code, "assign_caseworker", SUPERVISOR).state == "assessment"
    runtime.grant_consent(
        code, scope="health_referral", actor=CASEWORKER, given_by="survivor", country="KH"
    )
    sent = runtime.fire(
        code, "refer_for_health_care", CASEWORKER, {"recipient_agency_id": "KH-CLINIC-1"}
    )
    assert (sent.state, dict(sent.handoffs)) == (
        "assessment",
        {"health_referral": "health_referral.sent"},
    )
    return code


def test_main_path(runtime: Runtime, clock: ManualClock) -> None:
    """Intake, consent, assignment, assessment and plan, a health referral through its four
    stages, care recorded, follow-up, closure with its criteria met."""
    view = runtime.create_referral(
        sop_key="mekong.baseline",
        sop_version=1,
        actor=CASEWORKER,
        origin_country="KH",
        destination_country="KH",
        incident_at=clock.now() - timedelta(hours=20),
        disclosed_at=clock.now(),
        facts={"survivor_age": 26},
    )
    code = view.case_code
    runtime.grant_consent(code, scope="case_management", actor=CASEWORKER, given_by="survivor")
    screening = {"risk_level": "medium", "service_needed": "clinical_care"}
    runtime.fire(code, "register", CASEWORKER, {"facts": screening})
    runtime.fire(code, "assign_caseworker", SUPERVISOR)
    plan = {"risk_level": "medium", "service_needed": "clinical_care", "safety_plan_agreed": True}
    assert runtime.fire(code, "complete_assessment", CASEWORKER, {"facts": plan}).state == (
        "action_plan"
    )
    runtime.grant_consent(
        code, scope="health_referral", actor=CASEWORKER, given_by="survivor", country="KH"
    )
    runtime.fire(code, "refer_for_health_care", CASEWORKER, {"recipient_agency_id": "KH-CLINIC-1"})
    for action in ("acknowledge", "accept", "deliver"):
        clock.advance(timedelta(minutes=30))
        runtime.fire(code, f"health_referral.{action}", CLINIC, answer_payload(action))
    care = {"health_care_given": True, "health_care_at": clock.now().isoformat()}
    runtime.fire(code, "record_health_care", CASEWORKER, {"facts": care})
    follow_up = runtime.fire(code, "start_follow_up", CASEWORKER)
    assert follow_up.state == "follow_up"
    assert follow_up.warnings == ()  # the medical follow-up clock started from the care
    clock.advance(timedelta(days=14))
    seen = {"medical_follow_up_2_weeks_at": clock.now().isoformat()}
    runtime.fire(code, "record_follow_up", CASEWORKER, {"facts": seen})
    for later in ("medical_3_months", "medical_6_months"):  # she was seen at another clinic
        runtime.waive_clock(code, later, reason="care_given_elsewhere", actor=SUPERVISOR)
    closed = runtime.fire(
        code, "close_case", CASEWORKER, {"facts": {"closure_reason": "needs_met"}}
    )
    assert closed.state == "closed"
    assert runtime.verify_timeline(code)[0].ok


def test_main_escalation_reaches_both_the_clinic_and_the_case_agency(
    runtime: Runtime, clock: ManualClock
) -> None:
    code = _to_health_referral(runtime, clock)
    referral_id = runtime.read_referral(code).id
    clock.advance(timedelta(hours=5, minutes=1))  # acknowledgement 1 h; ladder +0, +1 h, +4 h
    runtime.sweep()
    out = tables.outbox
    with runtime.db.connect() as conn:
        rows = conn.execute(
            select(out.c.template, out.c.recipient_role, out.c.recipient_agency_id).where(
                out.c.referral_id == referral_id,
                out.c.template != "referral_received",
                out.c.template != "task_assigned",
            )
        ).all()
    assert {tuple(r) for r in rows} == {
        ("deadline_reminder", "agency_focal_point", "KH-CLINIC-1"),
        ("deadline_reminder", "caseworker", "KH-NGO-1"),
        ("deadline_escalated", "supervisor", "KH-NGO-1"),
        ("deadline_escalated", "coordinator", None),
    }
    view = runtime.read_referral(code)
    assert (view.state, dict(view.handoffs)) == (  # nothing moved it
        "assessment",
        {"health_referral": "health_referral.sent"},
    )
