"""fire: the one entry point. Each test reads as a step of a referral a caseworker would take."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Table, func, select

from sop_engine.errors import (
    ConcurrentChange,
    GuardFailed,
    IdempotencyKeyReused,
    InvalidInput,
    MissingFacts,
    NotFound,
    RoleNotAllowed,
    TransitionNotAllowed,
)
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime

ASSESSMENT = {
    "risk_level": "medium",
    "service_needed": "safety_and_shelter",
    "safety_plan_agreed": True,
}


def count(runtime: Runtime, t: Table, **where: Any) -> int:
    query = select(func.count()).select_from(t)
    for column, value in where.items():
        query = query.where(t.c[column] == value)
    with runtime.db.connect() as conn:
        return int(conn.scalar(query) or 0)


def new_referral(runtime: Runtime, caseworker: Actor, **facts: Any) -> str:
    view = runtime.create_referral(
        sop_key="example.corridor",
        sop_version=1,
        actor=caseworker,
        origin_country="TH",
        destination_country="LA",
        incident_at=runtime.clock.now() - timedelta(hours=30),
        facts={"survivor_age": 24, **facts},
    )
    return view.case_code


def test_a_new_referral_starts_in_the_initial_state_with_its_tasks_and_timers(
    runtime: Runtime, caseworker: Actor
) -> None:
    code = new_referral(runtime, caseworker)
    view = runtime.read_referral(code, actor=caseworker)
    assert view.state == "intake"
    assert view.version == 1
    assert view.available_events == ("record_consent",)
    assert count(runtime, tables.tasks, referral_id=view.id, state="intake", status="open") == 1
    # The corridor overrides the baseline's 3 h assignment deadline to 1 h; three levels.
    with runtime.db.connect() as conn:
        t = tables.timers
        dues = conn.scalars(
            select(t.c.due_at).where(t.c.referral_id == view.id).order_by(t.c.level)
        )
        assert [d - runtime.clock.now() for d in dues] == [
            timedelta(hours=1),
            timedelta(hours=2),
            timedelta(hours=5),
        ]


def test_case_codes_are_random_and_say_nothing(runtime: Runtime, caseworker: Actor) -> None:
    codes = {new_referral(runtime, caseworker) for _ in range(5)}
    assert len(codes) == 5
    for code in codes:
        assert len(code) == 14
        assert code.count("-") == 2


def test_fire_moves_the_state_and_bumps_the_version(runtime: Runtime, caseworker: Actor) -> None:
    code = new_referral(runtime, caseworker)
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    result = runtime.fire(
        code, "record_consent", caseworker, {"facts": {"safe_contact_method": "text_message"}}
    )
    assert (result.from_state, result.state) == ("intake", "assessment")
    assert result.version == 3  # created (1), consent granted (2), record_consent (3)
    assert "complete_assessment" in result.available_events
    assert result.timeline_seq == 3
    view = runtime.read_referral(code)
    assert view.state == "assessment"
    assert view.version == 3
    # Leaving intake closed its task and dropped its timers; assessment's were started.
    assert count(runtime, tables.tasks, referral_id=view.id, state="intake", status="done") == 1
    assert count(runtime, tables.timers, referral_id=view.id, state="intake") == 0
    assert count(runtime, tables.timers, referral_id=view.id, state="assessment") == 2


def test_an_event_not_possible_now_is_refused_and_lists_what_is(
    runtime: Runtime, caseworker: Actor
) -> None:
    code = new_referral(runtime, caseworker)
    with pytest.raises(
        TransitionNotAllowed, match="'close' cannot happen in state 'intake'"
    ) as caught:
        runtime.fire(code, "close", caseworker)
    assert caught.value.available == ("record_consent",)
    with pytest.raises(TransitionNotAllowed, match="unknown event"):
        runtime.fire(code, "teleport", caseworker)


def test_the_wrong_role_is_refused(runtime: Runtime, caseworker: Actor, focal_point: Actor) -> None:
    code = new_referral(runtime, caseworker)
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    with pytest.raises(
        RoleNotAllowed, match="role 'agency_focal_point' may not fire 'record_consent'"
    ):
        runtime.fire(code, "record_consent", focal_point)


def test_another_agency_is_refused(runtime: Runtime, caseworker: Actor) -> None:
    code = new_referral(runtime, caseworker)
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    stranger = Actor("u-x", "caseworker", "KH-NGO-9", ("ngo",))
    with pytest.raises(RoleNotAllowed, match="your agency does not take part in this referral"):
        runtime.fire(code, "record_consent", stranger)
    assert isinstance(RoleNotAllowed("x"), PermissionError)


def test_hidden_from_outsiders_the_referral_does_not_exist(
    runtime: Runtime, caseworker: Actor
) -> None:
    """The API's way: another agency's attempt is answered like a case code that does not
    exist, even with a stale version that would otherwise say the referral's version."""
    code = new_referral(runtime, caseworker)
    stranger = Actor("u-x", "caseworker", "KH-NGO-9", ("ngo",))
    for version in (None, 99):
        with pytest.raises(NotFound, match=f"no referral {code}"):
            runtime.fire(code, "record_consent", stranger, expected_version=version,
                         hide_from_outsiders=True)  # fmt: skip
    assert runtime.read_referral(code).version == 1


@pytest.mark.parametrize(
    ("types", "refused"),
    [(("health",), True), (("health", "ngo"), False), ((), False)],
    ids=["none-of-the-roles-types", "one-of-them", "types-unknown"],
)
def test_the_roles_agency_types_are_checked(
    runtime: Runtime, caseworker: Actor, types: tuple[str, ...], refused: bool
) -> None:
    """example.baseline's caseworker belongs at an NGO or a social welfare office: a
    caseworker of a health agency is refused; an agency whose types are unknown is not."""
    code = new_referral(runtime, caseworker)
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    colleague = Actor("u-cw3", "caseworker", caseworker.agency_id, types)
    payload = {"facts": {"safe_contact_method": "text_message"}}
    if refused:
        with pytest.raises(RoleNotAllowed, match="type health cannot hold role 'caseworker'"):
            runtime.fire(code, "record_consent", colleague, payload)
        assert "record_consent" not in runtime.read_referral(code, actor=colleague).available_events
    else:
        assert runtime.fire(code, "record_consent", colleague, payload).state != "intake"


def test_agency_types_are_a_tuple_never_a_bare_string() -> None:
    with pytest.raises(TypeError, match="tuple of types"):
        # A bare string where a tuple belongs is the mistake under test.
        Actor("u-x", "caseworker", "TH-NGO-1", "ngo")  # type: ignore[arg-type]


def test_a_guard_that_fails_is_refused_with_its_expression(
    runtime: Runtime, caseworker: Actor
) -> None:
    code = new_referral(runtime, caseworker)
    # No consent recorded: record_consent's guard (consent.case_management) is false.
    with pytest.raises(
        GuardFailed, match=r"guard of 'record_consent' is not met: consent.case_management"
    ):
        runtime.fire(code, "record_consent", caseworker)
    assert runtime.read_referral(code).version == 1  # nothing was written


def test_facts_are_checked_against_the_sop(runtime: Runtime, caseworker: Actor) -> None:
    code = new_referral(runtime, caseworker)
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    with pytest.raises(InvalidInput, match=r"facts\.safe_contact_method must be one of") as caught:
        runtime.fire(
            code, "record_consent", caseworker, {"facts": {"safe_contact_method": "pigeon"}}
        )
    assert caught.value.field == "facts.safe_contact_method"
    with pytest.raises(
        InvalidInput, match=r"unknown fact 'risk_levl' \(did you mean 'risk_level'\?\)"
    ):
        runtime.fire(code, "record_consent", caseworker, {"facts": {"risk_levl": "high"}})
    with pytest.raises(InvalidInput, match="this event may not set fact 'risk_level'"):
        runtime.fire(code, "record_consent", caseworker, {"facts": {"risk_level": "high"}})
    with pytest.raises(InvalidInput, match="unknown payload key 'fact'"):
        runtime.fire(code, "record_consent", caseworker, {"fact": {}})


def test_required_facts_must_be_known_before_entering(runtime: Runtime, caseworker: Actor) -> None:
    code = new_referral(runtime, caseworker)
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    runtime.fire(code, "record_consent", caseworker)
    with pytest.raises(GuardFailed, match=r"has\(facts\.risk_level\)"):
        runtime.fire(
            code, "complete_assessment", caseworker, {"facts": {"safety_plan_agreed": True}}
        )
    # action_plan requires risk_level and service_needed; the guard wants risk_level set.
    with pytest.raises(MissingFacts, match="requires service_needed") as caught:
        runtime.fire(code, "complete_assessment", caseworker, {"facts": {"risk_level": "low"}})
    assert caught.value.missing == ("service_needed",)


def test_unknown_referral(runtime: Runtime, caseworker: Actor) -> None:
    with pytest.raises(NotFound, match="no referral NOPE"):
        runtime.fire("NOPE", "close", caseworker)


def test_stale_expected_version_is_a_conflict_with_the_current_version(
    runtime: Runtime, caseworker: Actor
) -> None:
    code = new_referral(runtime, caseworker)
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    with pytest.raises(ConcurrentChange) as caught:
        runtime.fire(code, "record_consent", caseworker, expected_version=1)
    assert caught.value.current_version == 2
    assert runtime.fire(code, "record_consent", caseworker, expected_version=2).version == 3


def test_idempotency_key_returns_the_first_result_and_changes_nothing(
    runtime: Runtime, caseworker: Actor
) -> None:
    code = new_referral(runtime, caseworker)
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    payload = {"facts": {"safe_contact_method": "text_message"}}
    first = runtime.fire(code, "record_consent", caseworker, payload, idempotency_key="k-1")
    entries = count(runtime, tables.timeline_entries)
    again = runtime.fire(code, "record_consent", caseworker, payload, idempotency_key="k-1")
    assert again.replayed
    assert not first.replayed
    assert again.to_json() == first.to_json()
    assert count(runtime, tables.timeline_entries) == entries
    assert runtime.read_referral(code).version == first.version
    with pytest.raises(IdempotencyKeyReused):
        runtime.fire(
            code, "complete_assessment", caseworker, {"facts": ASSESSMENT}, idempotency_key="k-1"
        )
    # The same key from another user is another request.
    other = Actor("u-cw2", "caseworker", "TH-NGO-1", ("ngo",))
    assert not runtime.fire(
        code, "complete_assessment", other, {"facts": ASSESSMENT}, idempotency_key="k-1"
    ).replayed


def test_entering_a_handoff_assigns_its_task_to_the_receiving_agency_and_notifies(
    runtime: Runtime, caseworker: Actor, focal_point: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    runtime.grant_consent(code, scope="cross_border_return", actor=caseworker, given_by="survivor")
    with pytest.raises(InvalidInput, match="say which agency receives the referral"):
        runtime.fire(code, "refer_for_return", caseworker)
    result = runtime.fire(code, "refer_for_return", caseworker, {"recipient_agency_id": "LA-SW-1"})
    assert result.state == "return_referral.sent"
    assert result.disclosed_to == "LA-SW-1"
    assert result.consent_grant_id is not None
    view = runtime.read_referral(code, actor=focal_point)
    assert view.agencies["receiving_focal_point"] == "LA-SW-1"
    assert view.available_events == ("return_referral.acknowledge", "return_referral.decline")
    with runtime.db.connect() as conn:
        tk = tables.tasks
        task = conn.execute(
            select(tk).where(tk.c.referral_id == view.id, tk.c.status == "open")
        ).one()
        assert (task.name, task.agency_id, task.role) == (
            "acknowledge",
            "LA-SW-1",
            "agency_focal_point",
        )
        o = tables.outbox
        messages = conn.execute(select(o).where(o.c.referral_id == view.id)).all()
    received = [m for m in messages if m.template == "referral_received"]
    assert [(m.recipient_role, m.recipient_agency_id) for m in received] == [
        ("agency_focal_point", "LA-SW-1")
    ]
    assert received[0].context["service"] == "return and reintegration"
    assert received[0].context["due_at"] is not None
    for m in messages:
        assert "Synthetic" not in str(m.context)
        assert m.context["case_code"] == code


def test_only_the_receiving_agency_answers_a_handoff(
    runtime: Runtime, caseworker: Actor, focal_point: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    runtime.grant_consent(code, scope="cross_border_return", actor=caseworker, given_by="survivor")
    runtime.fire(code, "refer_for_return", caseworker, {"recipient_agency_id": "LA-SW-1"})
    impostor = Actor("u-fp2", "agency_focal_point", "LA-SW-2", ("government_social_welfare",))
    with pytest.raises(RoleNotAllowed, match="only the agency that received the referral"):
        runtime.fire(code, "return_referral.acknowledge", impostor)
    runtime.fire(code, "return_referral.acknowledge", focal_point)
    with pytest.raises(InvalidInput, match="declining needs a reason"):
        runtime.fire(code, "return_referral.decline", focal_point)
    with pytest.raises(
        InvalidInput, match="reason must be one of no_capacity, family_tracing_failed"
    ):
        runtime.fire(code, "return_referral.decline", focal_point, {"reason": "busy"})
    result = runtime.fire(code, "return_referral.decline", focal_point, {"reason": "no_capacity"})
    assert result.state == "action_plan"


def test_a_decline_cancels_the_receiving_agency_task(
    runtime: Runtime, caseworker: Actor, focal_point: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    runtime.grant_consent(code, scope="cross_border_return", actor=caseworker, given_by="survivor")
    runtime.fire(code, "refer_for_return", caseworker, {"recipient_agency_id": "LA-SW-1"})
    runtime.fire(code, "return_referral.decline", focal_point, {"reason": "no_capacity"})
    referral_id = runtime.read_referral(code).id
    assert (
        count(
            runtime, tables.tasks, referral_id=referral_id, name="acknowledge", status="cancelled"
        )
        == 1
    )


def test_a_final_state_closes_the_referral(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    result = runtime.fire(code, "close", caseworker)
    assert result.state == "closed"
    assert result.available_events == ()
    assert runtime.read_referral(code).closed_at == runtime.clock.now()
