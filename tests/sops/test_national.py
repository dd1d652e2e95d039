"""The national SOPs of the Mekong region (Thailand, Cambodia, Lao PDR, Viet Nam and Myanmar's
border areas): each runs a referral end to end, escalates a referral nobody acknowledged to
its national lead bodies without moving the case, keeps the clinical clocks on the incident,
assigns by risk, and lets nobody under 15 consent alone. A last test walks every Mekong SOP
and checks that no health step waits on a police step.

Every name, agency and fact here is synthetic.
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
from sop_engine.errors import GuardFailed, InvalidInput, TransitionNotAllowed
from sop_engine.language.compiler import SopLibrary, compile_documents
from sop_engine.language.source import parse_source
from sop_engine.language.spec import DeadlineSpec, SopSpec
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from tests.agencies import agency_directory
from tests.handoffs import DELIVERED
from tests.shipped import shipped_library

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "sop_definitions"
MEKONG = DEFINITIONS / "mekong"
BASELINE = "mekong.baseline"
START = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
"""08:30 in Bangkok, Phnom Penh, Vientiane and Hanoi, 08:00 in Yangon, on a Monday."""

OUT, TM, T = tables.outbox, tables.timers, tables.timeline_entries
H = timedelta(hours=1)

_survivor_numbers = itertools.count(1)


@dataclass(frozen=True)
class National:
    """What one national SOP must say, written out here rather than read from the SOP."""

    key: str
    country: str
    languages: tuple[str, ...]
    timezone: str
    context: str
    hotline: str
    """The hotline exactly as DOMAIN.md's table states it."""
    lead_roles: tuple[str, ...]
    """National lead-body roles told at the top of every ladder that reaches the coordinator."""
    health_lead_roles: tuple[str, ...]
    """Those told at the top of the health-referral ladder."""
    bodies: tuple[str, ...]
    """Lead bodies (DOMAIN.md, "The region") that the SOP's roles and agencies must name."""
    health_acknowledge: timedelta = 1 * H
    other_roles: tuple[str, ...] = ()
    """Further national roles: declared, with a description, used where their remit fits."""

    @property
    def ngo(self) -> str:
        return f"{self.country}-NGO-1"

    @property
    def hospital(self) -> str:
        return f"{self.country}-HOSP-1"


NATIONALS = (
    National(
        key="national.th",
        country="TH",
        languages=("en", "th"),
        timezone="Asia/Bangkok",
        context="development",
        hotline="1300 (MSDHS); +66-99-130-1300 for Thais abroad",
        lead_roles=("msdhs_focal_point",),
        health_lead_roles=("msdhs_focal_point", "oscc_focal_point"),
        bodies=("Ministry of Social Development and Human Security", "One Stop Crisis Centre"),
    ),
    National(
        key="national.kh",
        country="KH",
        languages=("en", "km"),
        timezone="Asia/Phnom_Penh",
        context="development",
        hotline="117 (police, trafficking)",
        lead_roles=("mosvy_focal_point", "mowa_focal_point"),
        health_lead_roles=("mosvy_focal_point", "mowa_focal_point"),
        bodies=(
            "Ministry of Social Affairs, Veterans and Youth Rehabilitation",
            "Ministry of Women's Affairs",
            "National Committee for Counter Trafficking",
        ),
        other_roles=("ncct_focal_point",),
    ),
    National(
        key="national.la",
        country="LA",
        languages=("en", "lo"),
        timezone="Asia/Vientiane",
        context="development",
        hotline="1554 (Lao Youth Union counselling)",
        lead_roles=("lwu_cpc_focal_point", "mlsw_focal_point"),
        health_lead_roles=("lwu_cpc_focal_point", "mlsw_focal_point"),
        bodies=(
            "Lao Women's Union Counselling and Protection Centre",
            "Ministry of Labour and Social Welfare",
        ),
    ),
    National(
        key="national.vn",
        country="VN",
        languages=("en", "vi"),
        timezone="Asia/Ho_Chi_Minh",
        context="development",
        hotline="111 (child protection, 24/7)",
        lead_roles=("molisa_focal_point", "vwu_focal_point"),
        health_lead_roles=("molisa_focal_point", "vwu_focal_point"),
        bodies=("MOLISA", "Viet Nam Women's Union"),
    ),
    National(
        key="national.mm-border",
        country="MM",
        languages=("en", "my"),
        timezone="Asia/Yangon",
        context="humanitarian",
        hotline="none found",
        lead_roles=("gbv_subcluster_coordinator",),
        health_lead_roles=("gbv_subcluster_coordinator",),
        bodies=("GBV sub-cluster", "Department of Social Welfare"),
        health_acknowledge=3 * H,  # remote camps: see the SOP's description
        other_roles=("dsw_focal_point",),  # never notified automatically (post-2021)
    ),
)

ACKNOWLEDGE_DIFFERENCES = {
    # The only deadline values a national SOP changes (the rest are the baseline's, for want
    # of a public source that says otherwise): acknowledgement times in remote camps.
    "national.mm-border": {
        "health_referral": 3 * H,
        "shelter_referral": 6 * H,
        "psychosocial_referral": 48 * H,
        "justice_referral": 48 * H,
    },
}


# -- fixtures (copied from tests/runtime/conftest.py: this file keeps its own) -------------


@pytest.fixture(scope="session")
def national_library() -> SopLibrary:
    """The baseline and the national SOPs only, so that these tests do not depend on the
    corridor SOPs written alongside them."""
    files = [MEKONG / f"{BASELINE}.sop.yaml", *(MEKONG / f"{n.key}.sop.yaml" for n in NATIONALS)]
    return SopLibrary.load(files)


@pytest.fixture(scope="session")
def keyring() -> MasterKeyring:
    return MasterKeyring(MasterKey.generate("test"))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def runtime(
    engine: Engine, national_library: SopLibrary, keyring: MasterKeyring, clock: ManualClock
) -> Runtime:
    """A runtime on SQLite, then on PostgreSQL: a test using it runs once on each."""
    return Runtime(engine, national_library, keyring, clock, directory=agency_directory())


@pytest.fixture(params=NATIONALS, ids=lambda n: n.key)
def national(request: pytest.FixtureRequest) -> National:
    chosen: National = request.param
    return chosen


@dataclass(frozen=True)
class People:
    caseworker: Actor
    supervisor: Actor
    health_focal_point: Actor


@pytest.fixture
def people(national: National) -> People:
    return People(
        caseworker=Actor("u-cw", "caseworker", national.ngo, ("ngo",)),
        supervisor=Actor("u-sup", "supervisor", national.ngo, ("ngo",)),
        health_focal_point=Actor("u-hfp", "agency_focal_point", national.hospital, ("health",)),
    )


# -- helpers ------------------------------------------------------------------------------


def _new_referral(
    runtime: Runtime,
    national: National,
    people: People,
    *,
    age: int = 27,
    incident_at: datetime | None = None,
) -> str:
    view = runtime.create_referral(
        sop_key=national.key,
        sop_version=1,
        actor=people.caseworker,
        origin_country=national.country,
        destination_country=national.country,
        incident_at=incident_at,
        disclosed_at=runtime.clock.now() - H,
        facts={
            "survivor_age": age,
            "survivor_name": f"Synthetic Survivor {next(_survivor_numbers):03d}",
        },
    )
    assert view.state == "intake"
    return view.case_code


def _register(
    runtime: Runtime, national: National, people: People, code: str, risk: str = "medium"
) -> str:
    facts = {
        "nationality": national.country,
        "safe_contact_method": "through_caseworker",
        "risk_level": risk,
        "service_needed": "clinical_care",
    }
    return runtime.fire(code, "register", people.caseworker, {"facts": facts}).state


def _in_assessment(
    runtime: Runtime, national: National, people: People, incident_at: datetime | None = None
) -> str:
    code = _new_referral(runtime, national, people, incident_at=incident_at)
    runtime.grant_consent(
        code, scope="case_management", actor=people.caseworker, given_by="survivor"
    )
    assert _register(runtime, national, people, code) == "awaiting_assignment"
    assert runtime.fire(code, "assign_caseworker", people.supervisor).state == "assessment"
    return code


def _refer_for_health_care(runtime: Runtime, national: National, people: People, code: str) -> Any:
    runtime.grant_consent(
        code, scope="health_referral", actor=people.caseworker, given_by="survivor"
    )
    return runtime.fire(
        code, "refer_for_health_care", people.caseworker, {"recipient_agency_id": national.hospital}
    )


def _notices(runtime: Runtime, code: str) -> list[tuple[str, str, str | None]]:
    view = runtime.read_referral(code)
    with runtime.db.connect() as conn:
        rows = conn.execute(
            select(OUT.c.template, OUT.c.recipient_role, OUT.c.recipient_agency_id)
            .where(OUT.c.referral_id == view.id)
            .order_by(OUT.c.created_at, OUT.c.id)
        ).all()
    return [(r.template, r.recipient_role, r.recipient_agency_id) for r in rows]


def _timers(runtime: Runtime, code: str, state: str) -> dict[tuple[str, int], datetime]:
    view = runtime.read_referral(code)
    with runtime.db.connect() as conn:
        rows = conn.execute(
            select(TM.c.deadline, TM.c.level, TM.c.due_at).where(
                TM.c.referral_id == view.id, TM.c.state == state
            )
        ).all()
    return {(r.deadline, r.level): _aware(r.due_at) for r in rows}


def _aware(value: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; they are stored in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# -- the SOPs as written ------------------------------------------------------------------


def test_each_national_sop_names_its_country_bodies_language_and_clock(
    national: National, national_library: SopLibrary
) -> None:
    spec = national_library.get(national.key, 1).spec
    assert spec.extends == f"{BASELINE}@1"
    assert spec.jurisdiction.countries == (national.country,)
    assert spec.jurisdiction.context == national.context
    assert spec.languages == national.languages
    assert spec.timezone == national.timezone
    assert national.hotline in " ".join(spec.description.split())
    assert spec.sources, "sources are replaced whole: each national SOP lists its own"
    for slot in spec.agencies.values():
        assert slot.country == national.country, slot.name
    baseline = national_library.get(BASELINE, 1).spec
    for name in (*national.health_lead_roles, *national.lead_roles, *national.other_roles):
        assert name in spec.roles
        assert name not in baseline.roles
        assert spec.roles[name].description
    named = " ".join(
        [spec.description]
        + [r.description for r in spec.roles.values()]
        + [a.description for a in spec.agencies.values()]
    )
    for body in national.bodies:
        assert body in " ".join(named.split()), body
    if national.context == "humanitarian":
        assert "post-2021 arrangements are uncertain" in " ".join(spec.description.split())


def _deadlines(spec: SopSpec) -> dict[str, DeadlineSpec]:
    """Every deadline of every state (handoff stages included), as ``state/deadline``."""
    return {
        f"{state.name}/{deadline.name}": deadline
        for state in spec.states.values()
        for deadline in state.deadlines.values()
    }


def test_deadlines_are_the_baselines_and_only_the_top_rung_adds_national_bodies(
    national: National, national_library: SopLibrary
) -> None:
    """No deadline value is invented; ladders keep their timing and reach the lead bodies."""
    spec = national_library.get(national.key, 1).spec
    baseline = national_library.get(BASELINE, 1).spec
    differences = ACKNOWLEDGE_DIFFERENCES.get(national.key, {})
    for name, handoff in spec.handoffs.items():
        base = baseline.handoffs[name]
        assert handoff.acknowledge_within == differences.get(name, base.acknowledge_within)
        assert (handoff.respond_within, handoff.deliver_within) == (
            base.respond_within,
            base.deliver_within,
        )
    assert spec.handoffs["health_referral"].acknowledge_within == national.health_acknowledge
    base_deadlines = _deadlines(baseline)
    national_roles = set(spec.roles) - set(baseline.roles)
    told: set[str] = set()
    for where, deadline in _deadlines(spec).items():
        base_deadline = base_deadlines[where]
        if deadline.name != "acknowledge":  # compared with the handoffs above
            assert (deadline.after, deadline.anchor) == (
                base_deadline.after,
                base_deadline.anchor,
            ), where
        ladder, base_ladder = deadline.escalation, base_deadline.escalation
        assert [(lv.after, lv.template, lv.fire) for lv in ladder] == [
            (lv.after, lv.template, lv.fire) for lv in base_ladder
        ], where
        assert [lv.notify for lv in ladder[:-1]] == [lv.notify for lv in base_ladder[:-1]], where
        top, base_top = ladder[-1].notify, base_ladder[-1].notify
        assert top[: len(base_top)] == base_top, where  # the coordinator is still told
        added = set(top[len(base_top) :])
        assert added <= national_roles, where
        if "coordinator" in base_top:
            assert set(national.lead_roles) <= added, where
        told |= added
    for name, clock in spec.clocks.items():
        base_clock = baseline.clocks[name]
        assert (clock.after, clock.anchor, clock.stops_when) == (
            base_clock.after,
            base_clock.anchor,
            base_clock.stops_when,
        ), name
        ladder, base_ladder = clock.ladder, base_clock.ladder
        assert [(lv.after, lv.template) for lv in ladder] == [
            (lv.after, lv.template) for lv in base_ladder
        ], name
        for lv, base_lv in zip(ladder, base_ladder, strict=True):
            assert lv.notify[: len(base_lv.notify)] == base_lv.notify, name
            added = set(lv.notify[len(base_lv.notify) :])
            assert added <= national_roles, name
            if "coordinator" in base_lv.notify:
                assert set(national.lead_roles) <= added, name
            told |= added
    assert told == national_roles - {"dsw_focal_point"}  # every national role is used but one


# -- (a) the main path --------------------------------------------------------------------


def test_main_path_from_intake_to_closure(
    runtime: Runtime, clock: ManualClock, national: National, people: People
) -> None:
    code = _in_assessment(runtime, national, people, incident_at=START - 20 * H)
    assessed = {
        "risk_level": "medium",
        "service_needed": "clinical_care",
        "services_requested": ["clinical_care", "psychosocial_support"],
        "safety_plan_agreed": True,
    }
    result = runtime.fire(code, "complete_assessment", people.caseworker, {"facts": assessed})
    assert result.state == "action_plan"

    sent = _refer_for_health_care(runtime, national, people, code)
    # The health referral runs beside the case, which stays in its action plan.
    assert (sent.state, dict(sent.handoffs)) == (
        "action_plan",
        {"health_referral": "health_referral.sent"},
    )
    assert sent.disclosed_to == national.hospital
    assert sent.consent_grant_id is not None
    assert ("referral_received", "agency_focal_point", national.hospital) in _notices(runtime, code)
    focal = people.health_focal_point
    acknowledged = runtime.fire(code, "health_referral.acknowledge", focal)
    assert acknowledged.handoffs == {"health_referral": "health_referral.acknowledged"}
    accepted = runtime.fire(code, "health_referral.accept", focal)
    assert accepted.handoffs == {"health_referral": "health_referral.accepted"}
    clock.advance(2 * H)
    delivered = runtime.fire(code, "health_referral.deliver", focal, DELIVERED)
    assert (delivered.state, dict(delivered.handoffs)) == ("action_plan", {})

    care_at = clock.now()
    result = runtime.fire(
        code,
        "record_health_care",
        people.caseworker,
        {"facts": {"health_care_given": True, "health_care_at": care_at.isoformat()}},
    )
    assert result.state == "action_plan"
    assert runtime.fire(code, "start_follow_up", people.caseworker).state == "follow_up"
    medical = _timers(runtime, code, "@clock")  # from the day of care, in every state
    assert medical[("medical_2_weeks", 1)] == care_at + timedelta(weeks=2) - timedelta(days=2)
    assert medical[("medical_2_weeks", 2)] == care_at + timedelta(weeks=2)
    assert medical[("medical_6_months", 2)] == care_at + timedelta(weeks=26)
    assert not {name for name, _ in medical} & {"pep", "emergency_contraception"}  # care given

    # Ten days after care the medical follow-ups are still ahead: the case cannot close.
    clock.advance(timedelta(days=10))
    closing = {"facts": {"closure_reason": "needs_met"}}
    with pytest.raises(TransitionNotAllowed, match="medical_2_weeks"):
        runtime.fire(code, "close_case", people.caseworker, closing)
    clock.advance(timedelta(days=4))
    seen = {"medical_follow_up_2_weeks_at": clock.now().isoformat()}
    runtime.fire(code, "record_follow_up", people.caseworker, {"facts": seen})
    for later in ("medical_3_months", "medical_6_months"):
        runtime.waive_clock(code, later, reason="survivor_moved_away", actor=people.supervisor)
    closed = runtime.fire(code, "close_case", people.caseworker, closing)
    assert closed.state == "closed"
    view = runtime.read_referral(code)
    assert view.closed_at is not None
    assert view.agencies == {"case_agency": national.ngo, "health_provider": national.hospital}
    assert ("case_closed", "caseworker", national.ngo) in _notices(runtime, code)
    with runtime.db.connect() as conn:
        steps = conn.execute(
            select(T.c.to_state)
            .where(T.c.referral_id == view.id, T.c.kind == "transition")
            .order_by(T.c.seq)
        ).all()
    assert [s.to_state for s in steps] == [
        "awaiting_assignment",
        "assessment",
        "action_plan",
        "health_referral.sent",
        "health_referral.acknowledged",
        "health_referral.accepted",
        "health_referral.delivered",
        "action_plan",
        "follow_up",
        "follow_up",
        "closed",
    ]
    checks = runtime.verify_timeline(code)
    assert [c.ok for c in checks] == [True]


# -- (b) the main escalation -------------------------------------------------------------


def test_an_unacknowledged_health_referral_escalates_to_the_national_lead_bodies(
    runtime: Runtime, clock: ManualClock, national: National, people: People
) -> None:
    # The survivor came in after the clinical windows had closed, so that only the health
    # referral's own ladder speaks here (the clinical clocks have tests of their own).
    code = _in_assessment(runtime, national, people, incident_at=START - 200 * H)
    sent = _refer_for_health_care(runtime, national, people, code)
    assert sent.handoffs == {"health_referral": "health_referral.sent"}
    sent_at = clock.now()
    before = len(_notices(runtime, code))
    due = sent_at + national.health_acknowledge

    clock.set(due - timedelta(minutes=1))
    assert runtime.sweep() == []

    # Level 1 at the due time: the hospital's focal point and the caseworker are reminded.
    # Level 2 an hour later: the caseworker's supervisor. Level 3 four hours after the due
    # time: every coordinator of the SOP and the national lead bodies. The runtime tells the
    # health provider's focal point (its task's slot), the managing agency's staff (roles at
    # the case_agency slot), and every holder of the SOP-wide roles (no agency).
    expected: list[set[tuple[str, str, str | None]]] = [
        {
            ("deadline_reminder", "agency_focal_point", national.hospital),
            ("deadline_reminder", "caseworker", national.ngo),
        },
        {("deadline_escalated", "supervisor", national.ngo)},
        {("deadline_escalated", "coordinator", None)}
        | {("deadline_escalated", role, None) for role in national.health_lead_roles},
    ]
    for after, notified in zip((0 * H, 1 * H, 4 * H), expected, strict=True):
        clock.set(due + after)
        outcomes = runtime.sweep()
        assert [(o.outcome, o.fired_event) for o in outcomes] == [("escalated", None)]
        new = _notices(runtime, code)[before:]
        before += len(new)
        assert sorted(new, key=str) == sorted(notified, key=str)
        view = runtime.read_referral(code)
        assert view.handoffs == {"health_referral": "health_referral.sent"}  # nothing moved
        assert view.agencies == {"case_agency": national.ngo, "health_provider": national.hospital}

    clock.advance(timedelta(days=2))
    # The referral's ladder is spent. What fires now is the case's own: the referral runs
    # beside it, so the assessment's clinical and service deadlines kept running.
    later = runtime.sweep()
    assert later
    view = runtime.read_referral(code)
    assert view.state == "assessment"
    with runtime.db.connect() as conn:
        after_send = conn.execute(
            select(T.c.kind, T.c.to_state, T.c.disclosed_to, T.c.details)
            .where(T.c.referral_id == view.id, T.c.seq > sent.timeline_seq)
            .order_by(T.c.seq)
        ).all()
    own = {d.name for d in national_spec_deadlines(runtime, code)}
    assert {e.details["deadline"] for e in after_send[3:]} <= own
    after_send = after_send[:3]
    assert [(e.kind, e.to_state, e.disclosed_to) for e in after_send] == [
        ("escalation", None, None)
    ] * 3
    assert [e.details["level"] for e in after_send] == [1, 2, 3]
    assert runtime.verify_timeline(code)[0].ok
    # The hospital can still answer: escalation told people and decided nothing.
    late = runtime.fire(code, "health_referral.acknowledge", people.health_focal_point)
    assert late.handoffs == {"health_referral": "health_referral.acknowledged"}


def national_spec_deadlines(runtime: Runtime, code: str) -> list[DeadlineSpec]:
    """The deadlines of the state the case is in."""
    view = runtime.read_referral(code)
    spec = runtime.services.sop(view.sop_key, view.sop_version).spec
    return list(spec.states[view.state].deadlines.values())


# -- (c) the clinical clock ---------------------------------------------------------------


def test_clinical_clocks_run_from_the_incident_and_health_comes_before_justice(
    runtime: Runtime, national: National, people: People, national_library: SopLibrary
) -> None:
    incident = START - 70 * H
    code = _in_assessment(runtime, national, people, incident_at=incident)
    now = runtime.clock.now()
    timers = _timers(runtime, code, "@clock")  # the case's clocks, in no state
    assert timers[("pep", 1)] == incident + 48 * H  # 24 h before the window closes
    assert timers[("pep", 2)] == incident + 54 * H  # the coordinator and the lead bodies
    assert all(due < now for (name, level), due in timers.items() if name == "pep" and level < 3)
    assert timers[("pep", 3)] == incident + 72 * H == now + 2 * H
    assert timers[("emergency_contraception", 1)] == incident + 96 * H
    assert timers[("emergency_contraception", 3)] == incident + 120 * H
    assert _timers(runtime, code, "assessment").keys() == {
        ("assessment_done", 1),
        ("assessment_done", 2),
        ("assessment_done", 3),
    }

    # Health care can be referred from the assessment; justice only from the action plan.
    available = runtime.read_referral(code, actor=people.caseworker).available_events
    assert "refer_for_health_care" in available
    assert "refer_for_legal_aid" not in available
    assert "mandated_report" not in available
    spec = national_library.get(national.key, 1).spec
    into_justice = [
        t for t in spec.transitions if t.target == "justice_referral.sent" and t.handoff is None
    ]
    assert into_justice
    assert {t.sources for t in into_justice} == {("action_plan",)}
    health = next(t for t in spec.transitions if t.id == "refer_for_health_care")
    assert {"assessment", "action_plan"} <= set(health.sources)
    runtime.grant_consent(
        code, scope="justice_referral", actor=people.caseworker, given_by="survivor"
    )
    with pytest.raises(TransitionNotAllowed):
        runtime.fire(code, "refer_for_legal_aid", people.caseworker, {"recipient_agency_id": "X"})
    referred = _refer_for_health_care(runtime, national, people, code)
    assert referred.handoffs == {"health_referral": "health_referral.sent"}


# -- (d) risk-driven assignment -----------------------------------------------------------


@pytest.mark.parametrize(
    ("risk", "state", "within"),
    [("high", "awaiting_assignment_urgent", 1 * H), ("medium", "awaiting_assignment", 3 * H)],
    ids=["high_risk", "medium_risk"],
)
def test_risk_at_registration_sets_the_assignment_deadline(
    runtime: Runtime, national: National, people: People, risk: str, state: str, within: timedelta
) -> None:
    code = _new_referral(runtime, national, people)
    runtime.grant_consent(
        code, scope="case_management", actor=people.caseworker, given_by="survivor"
    )
    assert _register(runtime, national, people, code, risk) == state
    timers = _timers(runtime, code, state)
    assert timers[("assign", 1)] == runtime.clock.now() + within
    assert timers[("assign", 2)] == runtime.clock.now() + within + H


# -- (e) children's consent --------------------------------------------------------------


def test_a_child_of_13_cannot_consent_alone_but_her_caregiver_with_written_assent_can(
    runtime: Runtime, national: National, people: People
) -> None:
    code = _new_referral(runtime, national, people, age=13)
    with pytest.raises(GuardFailed):
        _register(runtime, national, people, code)  # no consent yet
    with pytest.raises(InvalidInput, match="cannot consent alone") as alone:
        runtime.grant_consent(
            code, scope="case_management", actor=people.caseworker, given_by="survivor"
        )
    assert alone.value.field == "given_by"
    with pytest.raises(InvalidInput, match="written assent"):
        runtime.grant_consent(
            code,
            scope="case_management",
            actor=people.caseworker,
            given_by="caregiver",
            assent="verbal",
        )
    grant = runtime.grant_consent(
        code,
        scope="case_management",
        actor=people.caseworker,
        given_by="caregiver",
        assent="written",
    )
    assert grant.age_band == "12-14"
    assert _register(runtime, national, people, code) == "awaiting_assignment"


# -- every Mekong SOP: no health step waits on a police step ------------------------------


@pytest.fixture(scope="module")
def whole_library() -> SopLibrary:
    return shipped_library()


@pytest.mark.parametrize(
    "path", sorted(MEKONG.glob("*.sop.yaml")), ids=lambda p: p.name.removesuffix(".sop.yaml")
)
def test_no_health_step_waits_on_a_police_step(path: Path, whole_library: SopLibrary) -> None:
    """Compiled, so the health-first rule holds (the compiler refuses an SOP breaking it);
    and the referrals to services run beside the case, health care among them."""
    sops = [s for s in whole_library if Path(s.spec.file).resolve() == path.resolve()]
    assert sops, f"{path.name} did not compile"
    for sop in sops:
        spec = sop.spec
        assert {
            "health_referral",
            "psychosocial_referral",
            "shelter_referral",
            "justice_referral",
        } <= set(spec.regions), sop.ref


def test_the_compiler_refuses_the_baseline_with_health_behind_a_police_step() -> None:
    """The rule itself: the baseline with its justice referral occupying the case's state
    (health care then waits until the police answer) is refused, at the justice referral."""
    text = (MEKONG / "mekong.baseline.sop.yaml").read_text("utf-8")
    start = text.index("\n  justice_referral:\n", text.index("\nstates:\n"))
    parallel = text.index("      parallel: true", start)
    line_end = text.index("\n", parallel)
    gated = (
        text[:parallel]
        + "      delivered: action_plan\n      declined: action_plan\n      revoked: action_plan"
        + text[line_end:]
    )
    compiled, found = compile_documents([parse_source(gated, "mekong.baseline.sop.yaml")])
    assert not compiled
    problems = [p for p in found if "health first" in p.message]
    assert [(p.state, p.line) for p in problems] == [
        ("justice_referral", text[:start].count("\n") + 2)
    ]
    assert "without a justice step" in problems[0].message


def test_every_national_sop_is_in_the_library(whole_library: SopLibrary) -> None:
    keys = {s.key for s in whole_library}
    assert {n.key for n in NATIONALS} <= keys
