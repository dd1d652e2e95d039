"""Deadlines are durable timers: started on entering a state, stopped on leaving it, each
escalation level fired once, and never for a state already left."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Row, select

from sop_engine.clock import ManualClock
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.deadlines import EscalationOutcome, TimerClaim, renew_claims, sweep_batch
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.referrals import ReferralView
from tests.handoffs import answer_payload

TM, OUT, T = tables.timers, tables.outbox, tables.timeline_entries


def _timers(runtime: Runtime, referral_id: str) -> list[Row[Any]]:
    with runtime.db.connect() as conn:
        return list(
            conn.execute(select(TM).where(TM.c.referral_id == referral_id).order_by(TM.c.id))
        )


def test_clinical_deadlines_run_from_the_incident_not_from_the_referral(
    runtime: Runtime,
    caseworker: Actor,
    corridor_referral: Callable[..., ReferralView],
) -> None:
    incident = runtime.clock.now() - timedelta(hours=70)
    view = corridor_referral(incident_at=incident, survivor_age=22)
    runtime.grant_consent(
        view.case_code, scope="case_management", actor=caseworker, given_by="survivor"
    )
    runtime.fire(view.case_code, "record_consent", caseworker)
    pep = [t for t in _timers(runtime, view.id) if t.deadline == "pep_window"]
    assert [t.due_at for t in pep] == [incident + timedelta(hours=72)]


def test_a_deadline_without_its_timestamp_is_not_started_and_says_so(
    runtime: Runtime,
    caseworker: Actor,
    corridor_referral: Callable[..., ReferralView],
) -> None:
    view = corridor_referral(survivor_age=22)
    runtime.grant_consent(
        view.case_code, scope="case_management", actor=caseworker, given_by="survivor"
    )
    result = runtime.fire(view.case_code, "record_consent", caseworker)
    assert result.warnings == (
        "deadline 'pep_window' not started: its timestamp is unknown",
        "deadline 'emergency_contraception' not started: its timestamp is unknown",
    )
    assert [t.deadline for t in _timers(runtime, view.id) if t.state == "assessment"] == []


def test_each_level_escalates_once_to_its_roles(
    runtime: Runtime,
    clock: ManualClock,
    caseworker: Actor,
    corridor_referral: Callable[..., ReferralView],
) -> None:
    view = corridor_referral(survivor_age=22)
    assert runtime.claim_due_timers() == []
    clock.advance(timedelta(hours=1))  # level 1 of 'assign' (1 h in this corridor) is due
    claims = runtime.claim_due_timers(worker="w1")
    assert [(c.deadline, c.level) for c in claims] == [("assign", 1)]
    assert runtime.claim_due_timers(worker="w2") == []  # leased to w1
    outcome = runtime.fire_escalation(claims[0])
    assert outcome.outcome == "escalated"
    assert runtime.fire_escalation(claims[0]).outcome == "already_fired"
    clock.advance(timedelta(hours=4))  # levels 2 and 3
    outcomes = runtime.sweep()
    assert [o.outcome for o in outcomes] == ["escalated", "escalated"]
    with runtime.db.connect() as conn:
        notified = conn.execute(
            select(OUT.c.template, OUT.c.recipient_role, OUT.c.recipient_agency_id)
            .where(OUT.c.referral_id == view.id)
            .order_by(OUT.c.created_at, OUT.c.recipient_role)
        ).all()
        entries = conn.execute(
            select(T.c.kind, T.c.details).where(
                T.c.referral_id == view.id, T.c.kind == "escalation"
            )
        ).all()
    assert sorted(tuple(n) for n in notified) == sorted(
        [
            ("deadline_reminder", "caseworker", "TH-NGO-1"),  # level 1: the assignee
            ("deadline_escalated", "supervisor", "TH-NGO-1"),  # level 2: her supervisor
            ("deadline_escalated", "coordinator", None),  # level 3: the SOP's coordinators
        ]
    )
    assert [e.details["level"] for e in entries] == [1, 2, 3]
    assert runtime.sweep() == []


def test_leaving_the_state_stops_its_timers(
    runtime: Runtime,
    clock: ManualClock,
    caseworker: Actor,
    corridor_referral: Callable[..., ReferralView],
) -> None:
    view = corridor_referral(survivor_age=22)
    runtime.grant_consent(
        view.case_code, scope="case_management", actor=caseworker, given_by="survivor"
    )
    clock.advance(timedelta(hours=1))
    claim = runtime.claim_due_timers(worker="w1")[0]
    runtime.fire(view.case_code, "record_consent", caseworker)  # leaves intake before the sweep
    assert runtime.fire_escalation(claim).outcome == "stale"
    with runtime.db.connect() as conn:
        assert conn.execute(select(OUT).where(OUT.c.referral_id == view.id)).first() is None
    clock.advance(timedelta(hours=10))
    assert all(c.state == "assessment" for c in runtime.claim_due_timers(worker="w1"))


def test_an_escalation_level_may_fire_an_event(
    runtime: Runtime,
    clock: ManualClock,
    caseworker: Actor,
    focal_point: Actor,
    referral_in_action_plan: str,
) -> None:
    code = referral_in_action_plan
    runtime.grant_consent(code, scope="cross_border_return", actor=caseworker, given_by="survivor")
    runtime.fire(code, "refer_for_return", caseworker, {"recipient_agency_id": "LA-SW-1"})
    for event in ("acknowledge", "accept", "deliver"):
        runtime.fire(code, f"return_referral.{event}", focal_point, answer_payload(event))
    assert runtime.read_referral(code).state == "follow_up"
    clock.advance(timedelta(days=17, minutes=1))  # two weeks, then three days more: level 2
    outcomes = [o for o in runtime.sweep() if o.fired_event]
    assert [(o.outcome, o.fired_event) for o in outcomes] == [("escalated", "flag_for_review")]
    view = runtime.read_referral(code)
    assert view.state == "case_review"
    with runtime.db.connect() as conn:
        last = conn.execute(
            select(T).where(T.c.referral_id == view.id).order_by(T.c.seq.desc()).limit(1)
        ).one()
    assert (last.kind, last.actor_role, last.event, last.to_state) == (
        "escalation",
        "system",
        "flag_for_review",
        "case_review",
    )
    assert runtime.verify_timeline(code)[0].ok


def test_a_sweep_still_working_renews_its_claims_so_no_other_sweep_takes_them(
    runtime: Runtime, clock: ManualClock, corridor_referral: Callable[..., ReferralView]
) -> None:
    for _ in range(3):
        corridor_referral(survivor_age=22)
    clock.advance(timedelta(hours=1))  # one 'assign' level due on each
    lease = timedelta(seconds=60)
    taken_by_others: list[int] = []

    def slow_fire(claim: TimerClaim) -> EscalationOutcome:
        clock.advance(timedelta(seconds=40))  # each escalation takes 40 s: the batch, 120 s
        taken_by_others.append(len(runtime.claim_due_timers(worker="w2", lease=lease)))
        return runtime.fire_escalation(claim)

    outcomes = sweep_batch(runtime.services, slow_fire, 10, worker="w1", lease=lease)
    assert [o.outcome for o in outcomes] == ["escalated"] * 3
    assert taken_by_others == [0, 0, 0]  # without renewal, w2 takes the third at 80 s


def test_a_claim_lost_while_the_batch_worked_is_left_to_the_sweep_that_took_it(
    runtime: Runtime, clock: ManualClock, corridor_referral: Callable[..., ReferralView]
) -> None:
    for _ in range(2):
        corridor_referral(survivor_age=22)
    clock.advance(timedelta(hours=1))
    lease = timedelta(seconds=60)
    others: list[TimerClaim] = []

    def stalled_fire(claim: TimerClaim) -> EscalationOutcome:
        outcome = runtime.fire_escalation(claim)
        clock.advance(timedelta(seconds=90))  # then stalled past the whole lease
        others.extend(runtime.claim_due_timers(worker="w2", lease=lease))
        return outcome

    outcomes = sweep_batch(runtime.services, stalled_fire, 10, worker="w1", lease=lease)
    assert [o.outcome for o in outcomes] == ["escalated", "lost_claim"]
    [taken] = others
    assert outcomes[1].timer_id == taken.timer_id
    assert runtime.fire_escalation(taken).outcome == "escalated"  # once, by w2


def test_renewing_extends_only_the_claims_still_ours(
    runtime: Runtime, clock: ManualClock, corridor_referral: Callable[..., ReferralView]
) -> None:
    corridor_referral(survivor_age=22)
    corridor_referral(survivor_age=22)
    clock.advance(timedelta(hours=1))
    lease = timedelta(seconds=60)
    first, second = runtime.claim_due_timers(worker="w1", lease=lease)
    runtime.fire_escalation(first)
    clock.advance(timedelta(seconds=30))
    [renewed] = renew_claims(runtime.services, [first, second], lease)
    assert renewed.timer_id == second.timer_id  # a fired timer is not renewed
    assert renewed.lease_until == clock.now() + lease
    assert renew_claims(runtime.services, [second], lease) == []  # the old lease is gone
    assert renew_claims(runtime.services, [], lease) == []
