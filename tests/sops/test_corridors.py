"""The five Mekong return corridors, each driven as a synthetic referral on SQLite and
PostgreSQL: the main path from intake to closure, the escalation of an unanswered
family-tracing request on both sides of the border, the clinical-clock rule, and consent
withdrawal in the middle of the corridor.

A corridor's origin is the host country where the survivor is; its destination is the
country she returns to. Every name, agency and fact here is synthetic.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.errors import ConsentMissing, GuardFailed, RoleNotAllowed
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.ledger import GrantRecord
from tests.agencies import agency_directory
from tests.handoffs import answer_payload

MEKONG = Path(__file__).resolve().parents[2] / "sop_definitions" / "mekong"
START = datetime(2027, 3, 1, 1, 30, tzinfo=UTC)
"""08:30 in Bangkok and Phnom Penh on a Monday, after the SOPs take effect."""

DISCLOSURE, OUTBOX = tables.disclosures, tables.outbox
TASK, TIMER = tables.tasks, tables.timers
TRACING_DATASET = [
    "case_code",
    "service_needed",
    "risk_level",
    "safe_contact_method",
    "consent_reference",
    "survivor_name",
    "home_locality",
]
DEFAULT_DATASET = TRACING_DATASET[:5]
HANDOFF = ("acknowledge", "accept", "deliver")

_survivor_numbers = itertools.count(1)


@dataclass(frozen=True)
class Corridor:
    key: str
    host: str
    """The corridor's origin: the country where the survivor is when the referral starts."""
    home: str
    """The corridor's destination: the country she returns to."""
    focal_agency: str
    border_point: str

    @property
    def host_agency(self) -> str:
        return f"{self.host}-SYN-NGO-1"

    @property
    def hospital(self) -> str:
        return f"{self.host}-SYN-OSCC-1"

    @property
    def reintegration_agency(self) -> str:
        return f"{self.home}-SYN-NGO-REINT"

    @property
    def caseworker(self) -> Actor:
        return Actor("u-cw", "caseworker", self.host_agency, ("ngo",))

    @property
    def supervisor(self) -> Actor:
        return Actor("u-sup", "supervisor", self.host_agency, ("ngo",))

    @property
    def focal_point(self) -> Actor:
        return Actor(
            "u-fp", "agency_focal_point", self.focal_agency, ("government_social_welfare",)
        )

    @property
    def reintegration(self) -> Actor:
        return Actor("u-rp", "agency_focal_point", self.reintegration_agency, ("ngo",))


CORRIDORS = [
    Corridor("corridor.th-kh", "TH", "KH", "KH-SYN-MOSVY-FP", "aranyaprathet_poipet"),
    Corridor(
        "corridor.th-la", "TH", "LA", "LA-SYN-MLSW-FP", "friendship_bridge_1_nong_khai_vientiane"
    ),
    Corridor("corridor.th-mm", "TH", "MM", "MM-SYN-DSW-FP", "mae_sot_myawaddy"),
    Corridor("corridor.th-vn", "TH", "VN", "VN-SYN-MOLISA-FP", "noi_bai_airport_hanoi"),
    Corridor("corridor.vn-kh", "KH", "VN", "VN-SYN-MOLISA-FP", "bavet_moc_bai"),
]


@pytest.fixture(scope="module")
def library() -> SopLibrary:
    """The baseline and the corridors only, so that SOPs being written next door cannot
    break these tests."""
    return SopLibrary.load(
        [MEKONG / "mekong.baseline.sop.yaml", *sorted(MEKONG.glob("corridor.*.sop.yaml"))]
    )


@pytest.fixture(scope="module")
def keyring() -> MasterKeyring:
    return MasterKeyring(MasterKey.generate("test"))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def runtime(
    engine: Engine, library: SopLibrary, keyring: MasterKeyring, clock: ManualClock
) -> Runtime:
    """A runtime on SQLite, then on PostgreSQL: a test using it runs once on each."""
    return Runtime(engine, library, keyring, clock, directory=agency_directory())


@pytest.fixture(params=CORRIDORS, ids=[c.key for c in CORRIDORS])
def corridor(request: pytest.FixtureRequest) -> Corridor:
    c: Corridor = request.param
    return c


def test_every_corridor_file_is_tested(library: SopLibrary) -> None:
    sops = {s.key: s.spec for s in library if s.key.startswith("corridor.")}
    assert sorted(sops) == [c.key for c in CORRIDORS]
    for c in CORRIDORS:
        spec = sops[c.key]
        assert (spec.jurisdiction.origin, spec.jurisdiction.destination) == (c.host, c.home)
        assert spec.extends == "mekong.baseline@1"
        assert c.border_point in spec.facts["border_point"].values


# -- steps shared by the tests ---------------------------------------------------------------


def _grant(runtime: Runtime, code: str, scope: str, actor: Actor) -> GrantRecord:
    return runtime.grant_consent(code, scope=scope, actor=actor, given_by="survivor")


def _open_return(runtime: Runtime, c: Corridor, *, incident_hours: float | None = 240.0) -> str:
    """A referral in ``return_documentation``: consented, registered, assigned, assessed, and
    the survivor has chosen to return."""
    cw = c.caseworker
    now = runtime.clock.now()
    view = runtime.create_referral(
        sop_key=c.key,
        sop_version=1,
        actor=cw,
        origin_country=c.host,
        destination_country=c.home,
        incident_at=now - timedelta(hours=incident_hours) if incident_hours is not None else None,
        disclosed_at=now - timedelta(hours=2),
        facts={
            "survivor_age": 24,
            "survivor_name": f"Synthetic Survivor {next(_survivor_numbers):03d}",
        },
    )
    code = view.case_code
    _grant(runtime, code, "case_management", cw)
    screening = {
        "nationality": c.home,
        "safe_contact_method": "through_caseworker",
        "risk_level": "medium",
        "service_needed": "repatriation",
    }
    runtime.fire(code, "register", cw, {"facts": screening})
    runtime.fire(code, "assign_caseworker", c.supervisor)
    assessed = {
        "risk_level": "medium",
        "service_needed": "repatriation",
        "safety_plan_agreed": True,
    }
    runtime.fire(code, "complete_assessment", cw, {"facts": assessed})
    choice = {"wishes_to_return": True, "home_locality": "Synthetic village, synthetic district"}
    assert runtime.fire(code, "prepare_return", cw, {"facts": choice}).state == (
        "return_documentation"
    )
    return code


def _request_tracing(runtime: Runtime, c: Corridor, code: str) -> GrantRecord:
    grant = _grant(runtime, code, "family_tracing", c.caseworker)
    sent = runtime.fire(
        code, "request_family_tracing", c.caseworker, {"recipient_agency_id": c.focal_agency}
    )
    assert (sent.state, sent.disclosed_to, sent.consent_grant_id) == (
        "family_tracing.sent",
        c.focal_agency,
        grant.id,
    )
    return grant


def _trace_safe(runtime: Runtime, c: Corridor, code: str) -> None:
    for step in HANDOFF:
        runtime.fire(code, f"family_tracing.{step}", c.focal_point, answer_payload(step))
    result = {"family_assessment_result": "safe_to_return"}
    reported = runtime.fire(code, "report_family_assessment", c.focal_point, {"facts": result})
    assert reported.state == "return_coordination"


def _fetch(runtime: Runtime, statement: Any) -> list[Any]:
    with runtime.db.connect() as conn:
        return list(conn.execute(statement))


def _id(runtime: Runtime, code: str) -> str:
    return runtime.read_referral(code).id


def _disclosures(runtime: Runtime, code: str) -> list[tuple[str, str, list[str]]]:
    d = DISCLOSURE
    rows = _fetch(
        runtime,
        select(d.c.agency_slot, d.c.agency_id, d.c.fields)
        .where(d.c.referral_id == _id(runtime, code))
        .order_by(d.c.id),
    )
    return [(r.agency_slot, r.agency_id, list(r.fields)) for r in rows]


def _outbox(runtime: Runtime, code: str, *templates: str) -> list[tuple[str, str, str | None]]:
    o = OUTBOX
    rows = _fetch(
        runtime,
        select(o.c.template, o.c.recipient_role, o.c.recipient_agency_id).where(
            o.c.referral_id == _id(runtime, code), o.c.template.in_(templates)
        ),
    )
    return sorted(((r[0], r[1], r[2]) for r in rows), key=str)


# -- (a) the main path -----------------------------------------------------------------------


def test_main_path_from_intake_through_return_to_closure(
    runtime: Runtime, clock: ManualClock, corridor: Corridor
) -> None:
    c = corridor
    cw, fp = c.caseworker, c.focal_point
    code = _open_return(runtime, c)
    _request_tracing(runtime, c, code)
    with pytest.raises(RoleNotAllowed, match="only the agency that received the referral"):
        runtime.fire(code, "family_tracing.acknowledge", c.reintegration)
    _trace_safe(runtime, c, code)

    # Return coordination: the date and the border point go to the focal point, under their
    # own consent; the handover deadline runs from the planned return time.
    _grant(runtime, code, "return_coordination", cw)
    return_at = clock.now() + timedelta(days=7)
    plan = {"return_date": return_at.isoformat(), "border_point": c.border_point}
    with pytest.raises(RoleNotAllowed):
        runtime.fire(code, "schedule_return", fp, {"facts": plan})
    scheduled = runtime.fire(code, "schedule_return", cw, {"facts": plan})
    assert (scheduled.state, scheduled.disclosed_to) == ("border_handover", c.focal_agency)
    handover_due = _fetch(
        runtime,
        select(TIMER.c.deadline_due_at).where(
            TIMER.c.referral_id == _id(runtime, code), TIMER.c.deadline == "handover"
        ),
    )
    assert {r.deadline_due_at for r in handover_due} == {return_at + timedelta(hours=4)}

    # Handover at the border and reception on the other side.
    clock.advance(timedelta(days=7, hours=1))
    handed_over = {"handover_at": clock.now().isoformat()}
    with pytest.raises(RoleNotAllowed):
        runtime.fire(code, "confirm_handover", cw, {"facts": handed_over})
    assert runtime.fire(code, "confirm_handover", fp, {"facts": handed_over}).state == "reception"

    # Reintegration services in the country of return: a handoff from its focal point.
    _grant(runtime, code, "reintegration_referral", fp)
    referred = runtime.fire(
        code,
        "refer_for_reintegration",
        fp,
        {
            "recipient_agency_id": c.reintegration_agency,
            "facts": {"service_needed": "economic_reintegration"},
        },
    )
    assert (referred.state, referred.disclosed_to) == (
        "reintegration_referral.sent",
        c.reintegration_agency,
    )
    for step in HANDOFF:
        runtime.fire(code, f"reintegration_referral.{step}", c.reintegration, answer_payload(step))
    progress = {"reintegration_status": "in_progress", "risk_level": "low"}
    followed = runtime.fire(code, "record_reintegration_follow_up", fp, {"facts": progress})
    assert followed.state == "reintegration_follow_up"
    # What the destination writes is its own until it is fed back under consent.
    seen_at_home = runtime.read_as_agency(code, cw).facts
    assert "reintegration_status" not in seen_at_home
    assert "risk_level" not in seen_at_home
    assert runtime.read_as_agency(code, fp).facts["reintegration_status"] == "in_progress"

    # Feedback to the agency in the former host country, under its own consent.
    clock.advance(timedelta(days=30))
    _grant(runtime, code, "feedback_to_host_agency", fp)
    feedback = runtime.fire(
        code,
        "send_feedback_to_host",
        fp,
        {
            "recipient_agency_id": c.host_agency,
            "facts": {"reintegration_status": "services_completed"},
        },
    )
    assert (feedback.state, feedback.disclosed_to) == ("return_closure_review", c.host_agency)
    seen_at_home = runtime.read_as_agency(code, cw).facts
    assert seen_at_home["reintegration_status"] == "services_completed"
    assert seen_at_home["risk_level"] == "low"
    closed = runtime.fire(code, "close_case", cw, {"facts": {"closure_reason": "needs_met"}})
    assert closed.state == "closed"

    view = runtime.read_referral(code)
    assert view.state == "closed"
    assert view.closed_at is not None
    assert _disclosures(runtime, code) == [
        ("receiving_focal_point", c.focal_agency, TRACING_DATASET),
        (
            "receiving_focal_point",
            c.focal_agency,
            ["case_code", "risk_level", "return_date", "border_point", "consent_reference"],
        ),
        ("reintegration_provider", c.reintegration_agency, DEFAULT_DATASET),
        (
            "case_agency",
            c.host_agency,
            ["case_code", "risk_level", "reintegration_status", "consent_reference"],
        ),
    ]
    told = _outbox(runtime, code, "referral_received", "feedback_received", "case_closed")
    assert told == sorted(
        [
            ("referral_received", "agency_focal_point", c.focal_agency),
            ("referral_received", "agency_focal_point", c.reintegration_agency),
            ("feedback_received", "caseworker", c.host_agency),  # the assessment's result
            ("feedback_received", "caseworker", c.host_agency),  # the handover
            ("feedback_received", "caseworker", c.host_agency),  # reintegration feedback
            ("case_closed", "caseworker", c.host_agency),
            ("case_closed", "agency_focal_point", c.focal_agency),
        ],
        key=str,
    )
    (check,) = runtime.verify_timeline(code)
    assert check.ok

    # She comes back months later: the host agency reopens the case into assessment.
    clock.advance(timedelta(days=120))
    reopened = runtime.reopen_case(code, reason="survivor_returned", actor=cw)
    assert (reopened.state, reopened.closed_at) == ("assessment", None)


# -- (b) the family-tracing request is not acknowledged in time ------------------------------


def test_unacknowledged_family_tracing_escalates_on_both_sides_and_moves_nothing(
    runtime: Runtime, clock: ManualClock, corridor: Corridor
) -> None:
    c = corridor
    code = _open_return(runtime, c)
    _request_tracing(runtime, c, code)
    before = runtime.read_referral(code)

    clock.advance(timedelta(days=2))  # acknowledge_within: the focal point and the caseworker
    assert [o.outcome for o in runtime.sweep()] == ["escalated"]
    assert _outbox(runtime, code, "deadline_reminder") == sorted(
        [
            ("deadline_reminder", "agency_focal_point", c.focal_agency),
            ("deadline_reminder", "caseworker", c.host_agency),
        ],
        key=str,
    )
    clock.advance(timedelta(days=3))  # +1 day: the host supervisor; +3 days: the coordinators
    outcomes = runtime.sweep()
    assert [(o.outcome, o.fired_event) for o in outcomes] == [("escalated", None)] * 2
    assert runtime.sweep() == []
    assert _outbox(runtime, code, "deadline_escalated") == sorted(
        [
            ("deadline_escalated", "supervisor", c.host_agency),
            ("deadline_escalated", "coordinator", None),
        ],
        key=str,
    )

    after = runtime.read_referral(code)
    assert after.state == "family_tracing.sent"
    assert (after.owner_agency_id, dict(after.agencies)) == (
        before.owner_agency_id,
        dict(before.agencies),
    )
    assert _disclosures(runtime, code) == [
        ("receiving_focal_point", c.focal_agency, TRACING_DATASET)
    ]
    (check,) = runtime.verify_timeline(code)
    assert check.ok
    # The focal point can still answer: nothing was taken away from it, nothing sent elsewhere.
    acknowledged = runtime.fire(code, "family_tracing.acknowledge", c.focal_point)
    assert acknowledged.state == "family_tracing.acknowledged"


# -- (c) the clinical clock ------------------------------------------------------------------


def test_open_clinical_windows_send_health_care_to_a_local_provider_first(
    runtime: Runtime, corridor: Corridor
) -> None:
    c = corridor
    cw = c.caseworker
    code = _open_return(runtime, c, incident_hours=70.0)
    _grant(runtime, code, "family_tracing", cw)
    with pytest.raises(GuardFailed, match=r"guard of 'request_family_tracing'.*hours_since"):
        runtime.fire(code, "request_family_tracing", cw, {"recipient_agency_id": c.focal_agency})
    assert runtime.read_referral(code).state == "return_documentation"
    assert _disclosures(runtime, code) == []

    _grant(runtime, code, "health_referral", cw)
    local = runtime.fire(code, "refer_for_health_care", cw, {"recipient_agency_id": c.hospital})
    # The local referral runs beside the return, which stays in its documentation.
    assert (local.state, dict(local.handoffs), local.disclosed_to) == (
        "return_documentation",
        {"health_referral": "health_referral.sent"},
        c.hospital,
    )
    hospital = Actor("u-oscc", "agency_focal_point", c.hospital, ("health",))
    for step in HANDOFF:
        runtime.fire(code, f"health_referral.{step}", hospital, answer_payload(step))
    care = {"health_care_given": True, "health_care_at": runtime.clock.now().isoformat()}
    cared = runtime.fire(code, "record_health_care", cw, {"facts": care})
    assert (cared.state, dict(cared.handoffs)) == ("return_documentation", {})

    # Once care was given, the cross-border request may go, still within the 120 hours.
    sent = runtime.fire(code, "request_family_tracing", cw, {"recipient_agency_id": c.focal_agency})
    assert sent.state == "family_tracing.sent"
    assert [d[:2] for d in _disclosures(runtime, code)] == [
        ("health_provider", c.hospital),
        ("receiving_focal_point", c.focal_agency),
    ]


def test_an_unknown_incident_time_keeps_the_windows_open_until_it_is_recorded(
    runtime: Runtime, corridor: Corridor
) -> None:
    """Fail closed: without the incident time the windows may be open, so the cross-border
    step waits, and the refusal says to record the time; once recorded (here 130 h ago, the
    windows closed), the step goes."""
    c = corridor
    cw = c.caseworker
    code = _open_return(runtime, c, incident_hours=None)
    _grant(runtime, code, "family_tracing", cw)
    tracing = {"recipient_agency_id": c.focal_agency}
    with pytest.raises(GuardFailed, match="the incident time is unknown"):
        runtime.fire(code, "request_family_tracing", cw, tracing)
    assert _disclosures(runtime, code) == []
    incident = runtime.clock.now() - timedelta(hours=130)
    runtime.record_incident_time(code, incident_at=incident, reason="first_established", actor=cw)
    sent = runtime.fire(code, "request_family_tracing", cw, tracing)
    assert sent.state == "family_tracing.sent"


# -- (d) consent withdrawn in the middle of the corridor -------------------------------------


def test_withdrawal_mid_corridor_tells_the_holder_and_blocks_the_next_disclosure(
    runtime: Runtime, corridor: Corridor
) -> None:
    c = corridor
    cw = c.caseworker
    code = _open_return(runtime, c)
    tracing = _request_tracing(runtime, c, code)
    _trace_safe(runtime, c, code)
    coordination = _grant(runtime, code, "return_coordination", cw)

    # The survivor no longer agrees to share her data with the authority of her home country.
    assert runtime.withdraw_consent(code, tracing.id, cw) == [c.focal_agency]
    assert runtime.withdraw_consent(code, coordination.id, cw) == []  # nothing shared under it
    plan = {
        "return_date": (runtime.clock.now() + timedelta(days=7)).isoformat(),
        "border_point": c.border_point,
    }
    # schedule_return has no consent in its guard: the runtime refuses the disclosure itself.
    with pytest.raises(ConsentMissing, match=r"record consent for scope 'return_coordination'"):
        runtime.fire(code, "schedule_return", cw, {"facts": plan})
    view = runtime.read_referral(code)
    assert view.state == "return_coordination"
    assert "return_date" not in view.facts
    assert len(_disclosures(runtime, code)) == 1
    assert _outbox(runtime, code, "consent_withdrawn") == [
        ("consent_withdrawn", "agency_focal_point", c.focal_agency)
    ]
    acknowledge = _fetch(
        runtime,
        select(TASK.c.agency_id, TASK.c.status).where(
            TASK.c.referral_id == _id(runtime, code), TASK.c.name == "acknowledge_withdrawal"
        ),
    )
    assert [tuple(t) for t in acknowledge] == [(c.focal_agency, "open")]

    # Her choice stands: the return is called off and the focal point told to stop work.
    cancelled = runtime.fire(code, "cancel_return", cw)
    assert cancelled.state == "action_plan"
    assert _outbox(runtime, code, "referral_revoked") == [
        ("referral_revoked", "agency_focal_point", c.focal_agency)
    ]
    (check,) = runtime.verify_timeline(code)
    assert check.ok


# -- beyond the four: the other outcomes of the assessment, and a late handover ------------


def test_not_safe_or_inconclusive_assessment_leads_back_to_the_host_action_plan(
    runtime: Runtime, corridor: Corridor
) -> None:
    c = corridor
    cw = c.caseworker
    code = _open_return(runtime, c)
    _request_tracing(runtime, c, code)
    for result in ("not_safe_to_return", "inconclusive"):
        if result == "inconclusive":  # she still wishes to return: ask again
            runtime.fire(code, "prepare_return", cw, {"facts": {"wishes_to_return": True}})
            runtime.fire(
                code, "request_family_tracing", cw, {"recipient_agency_id": c.focal_agency}
            )
        for step in HANDOFF:
            runtime.fire(code, f"family_tracing.{step}", c.focal_point, answer_payload(step))
        facts = {"family_assessment_result": result}
        with pytest.raises(RoleNotAllowed):  # the receiving focal point reports, nobody else
            runtime.fire(code, "report_family_assessment", cw, {"facts": facts})
        back = runtime.fire(code, "report_family_assessment", c.focal_point, {"facts": facts})
        assert back.state == "action_plan"
        assert runtime.read_referral(code).facts["family_assessment_result"] == result
    assert (
        _outbox(runtime, code, "feedback_received")
        == [("feedback_received", "caseworker", c.host_agency)] * 2
    )


def test_late_handover_escalates_on_both_sides_from_the_planned_return_time(
    runtime: Runtime, clock: ManualClock, corridor: Corridor
) -> None:
    c = corridor
    code = _open_return(runtime, c)
    _request_tracing(runtime, c, code)
    _trace_safe(runtime, c, code)
    _grant(runtime, code, "return_coordination", c.caseworker)
    return_at = clock.now() + timedelta(days=3)
    plan = {"return_date": return_at.isoformat(), "border_point": c.border_point}
    runtime.fire(code, "schedule_return", c.caseworker, {"facts": plan})

    clock.set(return_at + timedelta(hours=3, minutes=59))
    assert runtime.sweep() == []  # 4 hours of grace after the planned time
    clock.set(return_at + timedelta(hours=10))  # reminder, +2 h supervisor, +6 h coordinators
    assert [o.outcome for o in runtime.sweep()] == ["escalated"] * 3
    assert _outbox(runtime, code, "deadline_reminder", "deadline_escalated") == sorted(
        [
            ("deadline_reminder", "agency_focal_point", c.focal_agency),
            ("deadline_reminder", "caseworker", c.host_agency),
            ("deadline_escalated", "supervisor", c.host_agency),
            ("deadline_escalated", "coordinator", None),
        ],
        key=str,
    )
    assert runtime.read_referral(code).state == "border_handover"
    postponed = runtime.fire(code, "postpone_return", c.supervisor)
    assert postponed.state == "return_coordination"
