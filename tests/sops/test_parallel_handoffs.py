"""Several referrals open at once: the Mekong baseline's four service referrals run beside
the case, each through its own four stages, deadlines, escalations and consent, while the
case's own steps go on. Health care never waits on the police."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.errors import (
    ConcurrentChange,
    ConsentMissing,
    RoleNotAllowed,
    SopEngineError,
    TransitionNotAllowed,
)
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from tests.agencies import agency_directory
from tests.handoffs import DELIVERED

MEKONG = Path(__file__).resolve().parents[2] / "sop_definitions" / "mekong"
CASEWORKER = Actor("u-cw", "caseworker", "KH-NGO-1", ("ngo",))
SUPERVISOR = Actor("u-sup", "supervisor", "KH-NGO-1", ("ngo",))
CLINIC = Actor("u-clinic", "agency_focal_point", "KH-CLINIC-1", ("health",))
LEGAL = Actor("u-legal", "agency_focal_point", "KH-LEGAL-1", ("legal_aid",))
SHELTER = Actor("u-shelter", "agency_focal_point", "KH-SHELTER-1", ("shelter",))
COUNSELLOR = Actor("u-pss", "agency_focal_point", "KH-NGO-3", ("ngo",))
H = timedelta(hours=1)
OUT, TM, T = tables.outbox, tables.timers, tables.timeline_entries

REFERRALS = {  # transition, consent scope, receiving agency
    "health_referral": ("refer_for_health_care", "health_referral", CLINIC),
    "justice_referral": ("refer_for_legal_aid", "justice_referral", LEGAL),
    "shelter_referral": ("refer_for_shelter", "shelter_referral", SHELTER),
    "psychosocial_referral": (
        "refer_for_psychosocial_support",
        "psychosocial_referral",
        COUNSELLOR,
    ),
}


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


def _in_action_plan(runtime: Runtime, clock: ManualClock) -> str:
    view = runtime.create_referral(
        sop_key="mekong.baseline",
        sop_version=1,
        actor=CASEWORKER,
        origin_country="KH",
        destination_country="KH",
        incident_at=clock.now() - 20 * H,
        disclosed_at=clock.now(),
        facts={"survivor_age": 26},
    )
    code = view.case_code
    runtime.grant_consent(code, scope="case_management", actor=CASEWORKER, given_by="survivor")
    screening = {"risk_level": "medium", "service_needed": "clinical_care"}
    runtime.fire(code, "register", CASEWORKER, {"facts": screening})
    runtime.fire(code, "assign_caseworker", SUPERVISOR)
    plan = {**screening, "safety_plan_agreed": True}
    assert runtime.fire(code, "complete_assessment", CASEWORKER, {"facts": plan}).state == (
        "action_plan"
    )
    return code


def _refer(runtime: Runtime, code: str, handoff: str) -> object:
    event, scope, to = REFERRALS[handoff]
    runtime.grant_consent(code, scope=scope, actor=CASEWORKER, given_by="survivor", country="KH")
    return runtime.fire(code, event, CASEWORKER, {"recipient_agency_id": to.agency_id})


def _notices(runtime: Runtime, code: str) -> list[tuple[str, str, str | None]]:
    referral_id = runtime.read_referral(code).id
    with runtime.db.connect() as conn:
        rows = conn.execute(
            select(OUT.c.template, OUT.c.recipient_role, OUT.c.recipient_agency_id)
            .where(OUT.c.referral_id == referral_id)
            .order_by(OUT.c.created_at, OUT.c.id)
        ).all()
    return [(r.template, r.recipient_role, r.recipient_agency_id) for r in rows]


def test_a_pending_justice_referral_never_holds_up_health_care(
    runtime: Runtime, clock: ManualClock
) -> None:
    """The audit's case: the police side has not answered, and the health referral goes at
    once; then all four services are open side by side, each moving on its own."""
    code = _in_action_plan(runtime, clock)
    justice = _refer(runtime, code, "justice_referral")
    assert (justice.state, dict(justice.handoffs)) == (  # type: ignore[attr-defined]
        "action_plan",
        {"justice_referral": "justice_referral.sent"},
    )
    health = _refer(runtime, code, "health_referral")
    assert health.disclosed_to == CLINIC.agency_id  # type: ignore[attr-defined]
    _refer(runtime, code, "shelter_referral")
    _refer(runtime, code, "psychosocial_referral")
    view = runtime.read_referral(code)
    assert view.state == "action_plan"
    assert view.handoffs == {h: f"{h}.sent" for h in REFERRALS}

    # Each answer moves its own referral only, and its sender hears it.
    runtime.fire(code, "health_referral.acknowledge", CLINIC)
    runtime.fire(code, "health_referral.accept", CLINIC)
    runtime.fire(code, "justice_referral.decline", LEGAL, {"reason": "no_capacity"})
    runtime.fire(code, "shelter_referral.acknowledge", SHELTER)
    view = runtime.read_referral(code)
    assert (view.state, view.handoffs) == (
        "action_plan",
        {
            "health_referral": "health_referral.accepted",
            "shelter_referral": "shelter_referral.acknowledged",
            "psychosocial_referral": "psychosocial_referral.sent",
        },
    )
    told = _notices(runtime, code)
    assert ("referral_declined", "caseworker", CASEWORKER.agency_id) in told
    assert ("referral_accepted", "caseworker", CASEWORKER.agency_id) in told
    delivered = runtime.fire(code, "health_referral.deliver", CLINIC, DELIVERED)
    assert "health_referral" not in delivered.handoffs

    # The timeline shows each referral's stages, and where each one ended.
    with runtime.db.connect() as conn:
        moves = conn.execute(
            select(T.c.event, T.c.from_state, T.c.to_state)
            .where(T.c.referral_id == view.id, T.c.event.like("health_referral.%"))
            .order_by(T.c.seq)
        ).all()
    assert [tuple(m) for m in moves] == [
        ("health_referral.acknowledge", "health_referral.sent", "health_referral.acknowledged"),
        ("health_referral.accept", "health_referral.acknowledged", "health_referral.accepted"),
        ("health_referral.deliver", "health_referral.accepted", "health_referral.delivered"),
    ]
    assert runtime.verify_timeline(code)[0].ok


def test_each_open_referral_keeps_its_deadlines_while_the_case_moves_on(
    runtime: Runtime, clock: ManualClock
) -> None:
    code = _in_action_plan(runtime, clock)
    _refer(runtime, code, "justice_referral")  # acknowledge within 1 day
    _refer(runtime, code, "health_referral")  # acknowledge within 1 hour
    assert runtime.fire(code, "start_follow_up", CASEWORKER).state == "follow_up"
    view = runtime.read_referral(code)
    with runtime.db.connect() as conn:
        timers = {
            (r.state, r.deadline)
            for r in conn.execute(
                select(TM.c.state, TM.c.deadline).where(TM.c.referral_id == view.id)
            )
        }
    assert {("health_referral.sent", "acknowledge"), ("justice_referral.sent", "acknowledge")} <= (
        timers
    )

    clock.advance(H + timedelta(minutes=1))
    before = len(_notices(runtime, code))
    assert [o.outcome for o in runtime.sweep()] == ["escalated"]
    assert ("deadline_reminder", "agency_focal_point", CLINIC.agency_id) in _notices(runtime, code)[
        before:
    ]
    clock.advance(timedelta(days=1))
    runtime.sweep()
    assert ("deadline_reminder", "agency_focal_point", LEGAL.agency_id) in _notices(runtime, code)
    # Nothing moved: escalations notify, and the case is where the caseworker put it.
    view = runtime.read_referral(code)
    assert view.state == "follow_up"
    assert view.handoffs == {
        "health_referral": "health_referral.sent",
        "justice_referral": "justice_referral.sent",
    }
    # An answer stops its own timers only.
    runtime.fire(code, "health_referral.acknowledge", CLINIC)
    with runtime.db.connect() as conn:
        pending = {
            r.state
            for r in conn.execute(
                select(TM.c.state).where(TM.c.referral_id == view.id, TM.c.fired_at.is_(None))
            )
        }
    assert "health_referral.sent" not in pending
    assert "justice_referral.sent" in pending


def test_the_case_closes_only_once_no_referral_is_open(
    runtime: Runtime, clock: ManualClock
) -> None:
    code = _in_action_plan(runtime, clock)
    _refer(runtime, code, "shelter_referral")
    closing = {"facts": {"closure_reason": "needs_met"}}
    with pytest.raises(TransitionNotAllowed, match=r"still open: shelter_referral \(sent\)"):
        runtime.fire(code, "close_case", CASEWORKER, closing)
    with pytest.raises(TransitionNotAllowed, match="still open"):
        runtime.fire(code, "consent_withdrawn", CASEWORKER)
    assert runtime.read_referral(code).closed_at is None
    runtime.fire(code, "shelter_referral.revoke", CASEWORKER)
    assert ("referral_revoked", "agency_focal_point", SHELTER.agency_id) in _notices(runtime, code)
    assert runtime.fire(code, "close_case", CASEWORKER, closing).state == "closed"


def test_each_referral_is_answered_only_by_its_own_agency(
    runtime: Runtime, clock: ManualClock
) -> None:
    code = _in_action_plan(runtime, clock)
    _refer(runtime, code, "justice_referral")
    _refer(runtime, code, "health_referral")
    for actor, other in ((CLINIC, "justice_referral"), (LEGAL, "health_referral")):
        for action in ("acknowledge", "decline"):
            with pytest.raises(RoleNotAllowed):
                runtime.fire(code, f"{other}.{action}", actor, {"reason": "no_capacity"})
        with pytest.raises(RoleNotAllowed):
            runtime.fire(code, f"{other}.revoke", actor)
    with pytest.raises(RoleNotAllowed):  # the sender revokes; the receiver declines
        runtime.fire(code, "health_referral.revoke", CLINIC)
    with pytest.raises(RoleNotAllowed):  # a receiver does not send the case on
        runtime.fire(code, "refer_for_shelter", CLINIC, {"recipient_agency_id": "KH-SHELTER-1"})
    assert runtime.read_referral(code).handoffs == {
        "justice_referral": "justice_referral.sent",
        "health_referral": "health_referral.sent",
    }


def test_an_agency_sees_only_the_referrals_it_takes_part_in(
    runtime: Runtime, clock: ManualClock
) -> None:
    """That a justice referral is open is itself sensitive: the clinic is never shown it,
    neither in the referral it reads nor in the answer to what it fires."""
    code = _in_action_plan(runtime, clock)
    _refer(runtime, code, "justice_referral")
    _refer(runtime, code, "health_referral")
    assert runtime.read_as_agency(code, CLINIC).handoffs == {
        "health_referral": "health_referral.sent"
    }
    assert runtime.read_as_agency(code, LEGAL).handoffs == {
        "justice_referral": "justice_referral.sent"
    }
    assert set(runtime.read_as_agency(code, CASEWORKER).handoffs) == {
        "justice_referral",
        "health_referral",
    }
    answered = runtime.fire(code, "health_referral.acknowledge", CLINIC)
    assert answered.handoffs == {"health_referral": "health_referral.acknowledged"}
    assert "justice_referral.decline" in runtime.read_as_agency(code, LEGAL).available_events
    assert not any(
        e.startswith("justice_referral.")
        for e in runtime.read_as_agency(code, CLINIC).available_events
    )


def test_a_referral_is_sent_once_while_open_and_again_once_it_ended(
    runtime: Runtime, clock: ManualClock
) -> None:
    code = _in_action_plan(runtime, clock)
    _refer(runtime, code, "health_referral")
    with pytest.raises(TransitionNotAllowed, match=r"health_referral\.sent"):
        runtime.fire(code, "refer_for_health_care", CASEWORKER)
    runtime.fire(code, "health_referral.decline", CLINIC, {"reason": "no_capacity"})
    assert runtime.read_referral(code).handoffs == {}
    again = runtime.fire(code, "refer_for_health_care", CASEWORKER)
    assert again.handoffs == {"health_referral": "health_referral.sent"}
    assert again.disclosed_to == CLINIC.agency_id


def test_withdrawn_consent_stops_only_its_own_referral(
    runtime: Runtime, clock: ManualClock
) -> None:
    code = _in_action_plan(runtime, clock)
    _refer(runtime, code, "justice_referral")
    _refer(runtime, code, "health_referral")
    grant = next(g for g in runtime.list_grants(code) if g.scope == "justice_referral")
    runtime.withdraw_consent(code, grant.id, CASEWORKER)
    with runtime.db.connect() as conn:
        withdrawn = conn.execute(
            select(T.c.details).where(
                T.c.kind == "consent_withdrawn", T.c.consent_grant_id == grant.id
            )
        ).scalar_one()
    assert withdrawn["pending_handoff"] == "justice_referral"
    with pytest.raises(ConsentMissing, match="justice_referral"):
        runtime.fire(code, "justice_referral.acknowledge", LEGAL)
    # Health care goes on: its own consent stands.
    runtime.fire(code, "health_referral.acknowledge", CLINIC)
    assert runtime.read_referral(code).handoffs == {
        "justice_referral": "justice_referral.sent",
        "health_referral": "health_referral.acknowledged",
    }
    runtime.fire(code, "justice_referral.decline", LEGAL, {"reason": "survivor_declined"})
    assert "justice_referral" not in runtime.read_referral(code).handoffs


def test_the_same_answer_twice_at_once_moves_the_referral_once(
    runtime: Runtime, clock: ManualClock
) -> None:
    code = _in_action_plan(runtime, clock)
    _refer(runtime, code, "health_referral")
    barrier = threading.Barrier(2)
    results: list[object] = []

    def answer() -> None:
        barrier.wait()
        try:
            results.append(runtime.fire(code, "health_referral.acknowledge", CLINIC))
        except (ConcurrentChange, TransitionNotAllowed) as exc:
            results.append(exc)
        except SopEngineError as exc:  # anything else is a bug: fail the test with it
            results.append(AssertionError(repr(exc)))

    threads = [threading.Thread(target=answer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not [r for r in results if isinstance(r, AssertionError)], results
    assert len([r for r in results if not isinstance(r, Exception)]) == 1, results
    view = runtime.read_referral(code)
    assert view.handoffs == {"health_referral": "health_referral.acknowledged"}
    with runtime.db.connect() as conn:
        acks = conn.execute(
            select(T.c.seq).where(
                T.c.referral_id == view.id, T.c.event == "health_referral.acknowledge"
            )
        ).all()
    assert len(acks) == 1
    assert runtime.verify_timeline(code)[0].ok
