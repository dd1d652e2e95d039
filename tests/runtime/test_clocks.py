"""Case clocks on the Mekong baseline: the clinical windows run from the incident in every
state, from intake on, through handoffs, until care is recorded; the medical follow-ups keep
the case open until they took place or were waived. Each test runs on SQLite and on
PostgreSQL, with the injected clock.

Every name, agency and fact here is synthetic.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from sop_engine.clock import ManualClock
from sop_engine.errors import InvalidInput, NotFound, RoleNotAllowed, TransitionNotAllowed
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.clocks import CLOCK_STATE, ESTABLISH_INCIDENT_TIME
from sop_engine.runtime.engine import Runtime

TM, OUT, T, TK = tables.timers, tables.outbox, tables.timeline_entries, tables.tasks
H = timedelta(hours=1)
BASELINE = "mekong.baseline"
CASEWORKER = Actor("u-cw", "caseworker", "KH-NGO-1", ("ngo",))
SUPERVISOR = Actor("u-sup", "supervisor", "KH-NGO-1", ("ngo",))
CLINIC = Actor("u-fp", "agency_focal_point", "KH-CLINIC-1", ("health",))
SCREENING = {"risk_level": "medium", "service_needed": "clinical_care"}
PLAN = {"risk_level": "medium", "service_needed": "clinical_care", "safety_plan_agreed": True}


def _new(runtime: Runtime, incident_at: datetime | None) -> str:
    view = runtime.create_referral(
        sop_key=BASELINE,
        sop_version=1,
        actor=CASEWORKER,
        origin_country="KH",
        destination_country="KH",
        incident_at=incident_at,
        disclosed_at=runtime.clock.now(),
        facts={"survivor_age": 26},
    )
    runtime.grant_consent(
        view.case_code, scope="case_management", actor=CASEWORKER, given_by="survivor"
    )
    return view.case_code


def _to_assessment(runtime: Runtime, code: str) -> None:
    runtime.fire(code, "register", CASEWORKER, {"facts": SCREENING})
    assert runtime.fire(code, "assign_caseworker", SUPERVISOR).state == "assessment"


def _to_action_plan(runtime: Runtime, code: str) -> None:
    _to_assessment(runtime, code)
    result = runtime.fire(code, "complete_assessment", CASEWORKER, {"facts": PLAN})
    assert result.state == "action_plan"


def _refer_for_health(runtime: Runtime, code: str) -> None:
    runtime.grant_consent(
        code, scope="health_referral", actor=CASEWORKER, given_by="survivor", country="KH"
    )
    sent = runtime.fire(
        code, "refer_for_health_care", CASEWORKER, {"recipient_agency_id": "KH-CLINIC-1"}
    )
    assert sent.handoffs == {"health_referral": "health_referral.sent"}  # beside the case


def _clock_timers(runtime: Runtime, code: str) -> dict[tuple[str, int], tuple[Any, ...]]:
    """(clock, level) -> (timer id, due, fired) of the referral's clock timers."""
    referral_id = runtime.read_referral(code).id
    with runtime.db.connect() as conn:
        rows = conn.execute(
            select(TM).where(TM.c.referral_id == referral_id, TM.c.state == CLOCK_STATE)
        ).all()
    return {(r.deadline, r.level): (r.id, r.due_at, r.fired_at is not None) for r in rows}


def _entries(runtime: Runtime, code: str, *kinds: str) -> list[Any]:
    referral_id = runtime.read_referral(code).id
    with runtime.db.connect() as conn:
        return list(
            conn.execute(
                select(T.c.kind, T.c.from_state, T.c.details, T.c.at)
                .where(T.c.referral_id == referral_id, T.c.kind.in_(kinds))
                .order_by(T.c.seq)
            )
        )


def _clock_outcomes(runtime: Runtime) -> list[tuple[str, str]]:
    """Sweep; the (clock, outcome) of each clock level the sweep claimed."""
    claims = runtime.claim_due_timers(worker="w1")
    clock_claims = {c.timer_id: c.deadline for c in claims if c.state == CLOCK_STATE}
    outcomes = [runtime.fire_escalation(c) for c in claims]
    return [(clock_claims[o.timer_id], o.outcome) for o in outcomes if o.timer_id in clock_claims]


def test_a_survivor_arriving_70_hours_after_the_incident_is_alerted_at_once_in_intake(
    runtime: Runtime, clock: ManualClock
) -> None:
    incident = clock.now() - 70 * H
    code = _new(runtime, incident)
    assert runtime.read_referral(code).state == "intake"
    timers = _clock_timers(runtime, code)
    assert timers[("pep", 1)][1] == incident + 48 * H  # already due: she is told now
    assert timers[("pep", 3)][1] == incident + 72 * H

    assert _clock_outcomes(runtime) == [("pep", "escalated"), ("pep", "escalated")]
    referral_id = runtime.read_referral(code).id
    with runtime.db.connect() as conn:
        told = conn.execute(
            select(OUT.c.recipient_role, OUT.c.recipient_agency_id, OUT.c.created_at).where(
                OUT.c.referral_id == referral_id, OUT.c.template == "deadline_escalated"
            )
        ).all()
    assert {(t.recipient_role, t.recipient_agency_id) for t in told} == {
        ("caseworker", "KH-NGO-1"),
        ("supervisor", "KH-NGO-1"),
        ("coordinator", None),
    }
    assert all(t.created_at < incident + 72 * H for t in told)  # before the window closes
    (first, second) = _entries(runtime, code, "escalation")
    assert (first.details["clock"], first.details["reminder"]) == ("pep", True)
    assert first.details["state"] == second.details["state"] == "intake"
    assert first.from_state is None  # the case's, not the intake task's, escalation

    clock.set(incident + 72 * H)
    assert _clock_outcomes(runtime) == [("pep", "escalated")]  # the window has closed
    assert runtime.read_referral(code).state == "intake"  # nothing moved the case


def test_the_clock_follows_the_case_through_every_state_and_handoff(
    runtime: Runtime, clock: ManualClock
) -> None:
    incident = clock.now() - 10 * H
    code = _new(runtime, incident)
    started = _clock_timers(runtime, code)
    _to_assessment(runtime, code)
    _refer_for_health(runtime, code)
    runtime.fire(code, "health_referral.acknowledge", CLINIC)
    assert _clock_timers(runtime, code) == started  # the same rows, never restarted

    clock.set(incident + 48 * H)
    assert _clock_outcomes(runtime) == [("pep", "escalated")]
    (entry,) = [e for e in _entries(runtime, code, "escalation") if "clock" in e.details]
    assert entry.details["state"] == "assessment"  # the health referral open beside it
    assert entry.details["clock"] == "pep"
    runtime.fire(code, "health_referral.accept", CLINIC)
    result = runtime.fire(code, "complete_assessment", CASEWORKER, {"facts": PLAN})
    assert result.state == "action_plan"
    assert _clock_timers(runtime, code) == {
        k: v for k, v in _clock_timers(runtime, code).items() if k in started
    }
    clock.set(incident + 54 * H)
    assert _clock_outcomes(runtime) == [("pep", "escalated")]
    assert [
        e.details["state"] for e in _entries(runtime, code, "escalation") if "clock" in e.details
    ] == ["assessment", "action_plan"]


@pytest.mark.parametrize(
    ("event", "facts"),
    [
        ("record_health_care", {"health_care_given": True}),
        ("record_health_care_declined", {"health_care_declined": True}),
    ],
    ids=["care_given", "care_declined"],
)
def test_no_alert_once_care_is_recorded_as_given_or_declined(
    runtime: Runtime, clock: ManualClock, event: str, facts: dict[str, Any]
) -> None:
    incident = clock.now() - 50 * H
    code = _new(runtime, incident)
    _to_assessment(runtime, code)
    assert _clock_outcomes(runtime) == [("pep", "escalated")]  # 48 h: the first reminder
    if event == "record_health_care":
        facts = {**facts, "health_care_at": clock.now().isoformat()}
    assert runtime.fire(code, event, CASEWORKER, {"facts": facts}).state == "assessment"
    stopped = _entries(runtime, code, "clock_stopped")
    assert [e.details["clock"] for e in stopped] == ["pep", "emergency_contraception"]
    timers = _clock_timers(runtime, code)
    assert {k for k, (_, _, fired) in timers.items() if not fired} <= {
        (name, level) for name, level in timers if name.startswith("medical_")
    }
    clock.advance(timedelta(days=6))
    assert [o for o in _clock_outcomes(runtime) if not o[0].startswith("medical_")] == []


def test_reentering_a_state_does_not_restart_a_clock(runtime: Runtime, clock: ManualClock) -> None:
    incident = clock.now() - 40 * H
    code = _new(runtime, incident)
    _to_action_plan(runtime, code)
    clock.set(incident + 49 * H)
    assert _clock_outcomes(runtime) == [("pep", "escalated")]
    before = _clock_timers(runtime, code)
    _refer_for_health(runtime, code)
    assert runtime.fire(code, "health_referral.revoke", CASEWORKER).state == "action_plan"
    assert _clock_timers(runtime, code) == before  # fired stays fired, nothing added
    assert _clock_outcomes(runtime) == []  # and not told again on re-entry


def test_the_incident_time_recorded_later_starts_the_clocks(
    runtime: Runtime, clock: ManualClock
) -> None:
    view = runtime.create_referral(
        sop_key=BASELINE,
        sop_version=1,
        actor=CASEWORKER,
        origin_country="KH",
        destination_country="KH",
        facts={"survivor_age": 26},
    )
    code = view.case_code
    assert "clock 'pep' not started: its timestamp is unknown" in view.warnings
    assert _clock_timers(runtime, code) == {}
    with runtime.db.connect() as conn:
        (task,) = conn.execute(
            select(TK).where(TK.c.referral_id == view.id, TK.c.name == ESTABLISH_INCIDENT_TIME)
        ).all()
    assert (task.status, task.agency_id, task.role, task.state) == (
        "open",
        "KH-NGO-1",
        "caseworker",
        None,
    )
    assert "incident-time" in task.ask
    assert "pep" in task.ask

    runtime.grant_consent(code, scope="case_management", actor=CASEWORKER, given_by="survivor")
    waits = {
        f"clock {c!r} not started: its timestamp is unknown"
        for c in ("pep", "emergency_contraception")
    }
    registered = runtime.fire(code, "register", CASEWORKER, {"facts": SCREENING})
    assert waits <= set(registered.warnings)  # with every event while the time is unknown
    assert runtime.fire(code, "assign_caseworker", SUPERVISOR).state == "assessment"
    first = clock.now() - 60 * H
    runtime.record_incident_time(
        code, incident_at=first, reason="first_established", actor=CASEWORKER
    )
    planned = runtime.fire(code, "complete_assessment", CASEWORKER, {"facts": PLAN})
    assert not set(planned.warnings) & waits  # and none once it is known
    timers = _clock_timers(runtime, code)
    assert timers[("pep", 3)][1] == first + 72 * H
    assert timers[("emergency_contraception", 3)][1] == first + 120 * H
    with runtime.db.connect() as conn:
        assert conn.execute(select(TK.c.status).where(TK.c.id == task.id)).scalar() == "done"
    assert _clock_outcomes(runtime) == [("pep", "escalated"), ("pep", "escalated")]

    later = clock.now() - 30 * H  # she remembered better: the windows run from the new time
    runtime.record_incident_time(
        code, incident_at=later, reason="survivor_recalled", actor=CASEWORKER
    )
    timers = _clock_timers(runtime, code)
    assert (timers[("pep", 1)][2], timers[("pep", 2)][2]) == (True, True)  # fired, and stay so
    assert timers[("pep", 3)][1] == later + 72 * H
    assert timers[("emergency_contraception", 1)][1] == later + 96 * H

    # The medical record shows it was a week earlier: both windows had closed long ago, so
    # nobody is told now; what was told stays on the timeline.
    runtime.record_incident_time(
        code, incident_at=clock.now() - 200 * H, reason="medical_record", actor=CASEWORKER
    )
    timers = _clock_timers(runtime, code)
    assert sorted(timers) == [("pep", 1), ("pep", 2)]
    assert _clock_outcomes(runtime) == []


def _with_care(runtime: Runtime, clock: ManualClock) -> tuple[str, datetime]:
    code = _new(runtime, clock.now() - 20 * H)
    _to_action_plan(runtime, code)
    care_at = clock.now()
    care = {"health_care_given": True, "health_care_at": care_at.isoformat()}
    runtime.fire(code, "record_health_care", CASEWORKER, {"facts": care})
    return code, care_at


def test_the_medical_follow_ups_keep_the_case_open_until_met_or_waived(
    runtime: Runtime, clock: ManualClock
) -> None:
    code, care_at = _with_care(runtime, clock)
    timers = _clock_timers(runtime, code)
    assert timers[("medical_2_weeks", 2)][1] == care_at + timedelta(weeks=2)
    assert timers[("medical_6_months", 2)][1] == care_at + timedelta(weeks=26)
    assert runtime.fire(code, "start_follow_up", CASEWORKER).state == "follow_up"
    closing = {"facts": {"closure_reason": "needs_met"}}
    clock.advance(timedelta(days=10))
    with pytest.raises(TransitionNotAllowed) as refused:
        runtime.fire(code, "close_case", CASEWORKER, closing)
    message = str(refused.value)
    assert all(c in message for c in ("medical_2_weeks", "medical_3_months", "medical_6_months"))
    assert f"/referrals/{code}/clocks/medical_2_weeks/waive" in message
    assert runtime.read_referral(code).state == "follow_up"

    clock.advance(timedelta(days=4))
    seen = {"medical_follow_up_2_weeks_at": clock.now().isoformat()}
    runtime.fire(code, "record_follow_up", CASEWORKER, {"facts": seen})
    runtime.waive_clock(code, "medical_3_months", reason="survivor_moved_away", actor=SUPERVISOR)
    with pytest.raises(TransitionNotAllowed, match="medical_6_months"):
        runtime.fire(code, "close_case", CASEWORKER, closing)
    runtime.waive_clock(code, "medical_6_months", reason="care_given_elsewhere", actor=CASEWORKER)
    assert runtime.fire(code, "close_case", CASEWORKER, closing).state == "closed"
    ended = [
        (e.kind, e.details["clock"], e.details.get("reason"))
        for e in _entries(runtime, code, "clock_stopped", "clock_waived")
    ]
    assert ended == [
        ("clock_stopped", "pep", None),
        ("clock_stopped", "emergency_contraception", None),
        ("clock_stopped", "medical_2_weeks", None),
        ("clock_waived", "medical_3_months", "survivor_moved_away"),
        ("clock_waived", "medical_6_months", "care_given_elsewhere"),
    ]
    assert not [k for k, (_, _, fired) in _clock_timers(runtime, code).items() if not fired]
    assert runtime.verify_timeline(code)[0].ok


def test_a_case_without_care_closes_and_then_tells_nobody(
    runtime: Runtime, clock: ManualClock
) -> None:
    code = _new(runtime, clock.now() - 10 * H)  # the follow-ups never start without care
    _to_assessment(runtime, code)
    assert runtime.fire(code, "consent_withdrawn", CASEWORKER).state == "closed"
    assert not [k for k, (_, _, fired) in _clock_timers(runtime, code).items() if not fired]
    clock.advance(timedelta(days=6))
    assert _clock_outcomes(runtime) == []


def test_only_the_managing_agency_waives_a_clock_in_the_clocks_roles(
    runtime: Runtime, clock: ManualClock
) -> None:
    code, _ = _with_care(runtime, clock)
    others = (
        CLINIC,  # another agency, on the referral
        Actor("u-cw2", "caseworker", "KH-NGO-2", ("ngo",)),  # another agency, not on it
        Actor("u-fp2", "agency_focal_point", "KH-NGO-1", ("ngo",)),  # not a waiving role
    )
    version = runtime.read_referral(code).version
    for actor in others:
        with pytest.raises(RoleNotAllowed):
            runtime.waive_clock(code, "medical_2_weeks", reason="survivor_declined", actor=actor)
    with pytest.raises(InvalidInput, match="reason must be one of"):
        runtime.waive_clock(code, "medical_2_weeks", reason="no_time", actor=CASEWORKER)
    with pytest.raises(NotFound, match="did you mean 'medical_2_weeks'"):
        runtime.waive_clock(code, "medical_2_week", reason="survivor_declined", actor=CASEWORKER)
    assert runtime.read_referral(code).version == version  # refused, and nothing written
    runtime.waive_clock(code, "medical_2_weeks", reason="survivor_declined", actor=CASEWORKER)
    with pytest.raises(TransitionNotAllowed, match="already waived"):
        runtime.waive_clock(code, "medical_2_weeks", reason="survivor_declined", actor=CASEWORKER)
    with pytest.raises(TransitionNotAllowed, match="already stopped"):
        runtime.waive_clock(code, "pep", reason="survivor_declined", actor=CASEWORKER)


def test_an_erased_case_tells_nobody_of_its_clocks(runtime: Runtime, clock: ManualClock) -> None:
    code = _new(runtime, clock.now() - 70 * H)
    claims = runtime.claim_due_timers(worker="w1")
    assert {c.deadline for c in claims if c.state == CLOCK_STATE} == {"pep"}
    runtime.erase(code, SUPERVISOR)
    assert {runtime.fire_escalation(c).outcome for c in claims} == {"stale"}
    referral_id = runtime.read_referral(code).id
    with runtime.db.connect() as conn:
        assert conn.execute(select(OUT.c.id).where(OUT.c.referral_id == referral_id)).all() == []
