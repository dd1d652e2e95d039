"""Case transfer (example corridor: ``transfer: {to: receiving_case_agency, role:
agency_focal_point, requester_roles: [caseworker, supervisor], consent: case_transfer, ...}``):
the managing agency asks another agency to take over the case, under the survivor's consent;
that agency's focal point accepts (it then manages the case) or declines; the requester may
cancel. Every step as it will be attacked: the wrong agency, the wrong role, each state, the
same step twice at once, no consent, and the former managing agency afterwards. On SQLite
and PostgreSQL; every agency and person is synthetic."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from sqlalchemy import select

from sop_engine.errors import (
    ConcurrentChange,
    ConsentMissing,
    InvalidInput,
    NotFound,
    RoleNotAllowed,
    SopEngineError,
    TransitionNotAllowed,
)
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.change import TRANSFER_TIMERS
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.transfer import TransferView
from tests.handoffs import answer_payload

T, TK, TM, OB, D = (
    tables.timeline_entries,
    tables.tasks,
    tables.timers,
    tables.outbox,
    tables.disclosures,
)

OLD, NEW, OTHER = "TH-NGO-1", "TH-NGO-A", "TH-NGO-Z"
"""The managing agency, the agency asked to take over, and a third agency (all synthetic)."""

RECEIVER = Actor("u-fp-a", "agency_focal_point", NEW, ("ngo",))
NEW_CASEWORKER = Actor("u-cw-a", "caseworker", NEW, ("ngo",))
OLD_FOCAL_POINT = Actor("u-fp-1", "agency_focal_point", OLD, ("ngo",))
OUTSIDER = Actor("u-cw-z", "caseworker", OTHER, ("ngo",))
OUTSIDE_FOCAL_POINT = Actor("u-fp-z", "agency_focal_point", OTHER, ("ngo",))
COORDINATOR = Actor("u-co", "coordinator", None, ())


def consent_to(runtime: Runtime, code: str, caseworker: Actor, agency: str = NEW) -> str:
    grant = runtime.grant_consent(
        code, scope="case_transfer", actor=caseworker, given_by="survivor",
        recipient_agency_id=agency,
    )  # fmt: skip
    return grant.id


def entries(runtime: Runtime, code: str, kind: str) -> list[Any]:
    with runtime.db.connect() as conn:
        referral_id = runtime.read_referral(code).id
        query = select(T).where(T.c.referral_id == referral_id, T.c.kind == kind).order_by(T.c.seq)
        return list(conn.execute(query))


def outbox(runtime: Runtime, code: str, template: str) -> list[Any]:
    with runtime.db.connect() as conn:
        referral_id = runtime.read_referral(code).id
        query = select(OB).where(OB.c.referral_id == referral_id, OB.c.template == template)
        return list(conn.execute(query))


def open_tasks(runtime: Runtime, code: str) -> list[tuple[str, str]]:
    with runtime.db.connect() as conn:
        referral_id = runtime.read_referral(code).id
        rows = conn.execute(
            select(TK.c.name, TK.c.agency_id).where(
                TK.c.referral_id == referral_id, TK.c.status == "open"
            )
        )
        return sorted((r.name, r.agency_id) for r in rows)


def transfer_timers(runtime: Runtime, code: str) -> int:
    with runtime.db.connect() as conn:
        referral_id = runtime.read_referral(code).id
        rows = conn.execute(
            select(TM.c.id).where(
                TM.c.referral_id == referral_id,
                TM.c.state == TRANSFER_TIMERS,
                TM.c.fired_at.is_(None),
            )
        )
        return len(list(rows))


def refused(
    runtime: Runtime, code: str, error: type[Exception], step: Callable[[], object]
) -> Exception:
    """``step`` fails with ``error`` (a refused state never passes for a refused role) and
    changes nothing."""
    before = runtime.read_referral(code)
    with runtime.db.connect() as conn:
        seq = conn.execute(select(T.c.seq).where(T.c.referral_id == before.id)).all()
    with pytest.raises(error) as caught:
        step()
    if error is TransitionNotAllowed:
        assert not isinstance(caught.value, RoleNotAllowed), repr(caught.value)
    after = runtime.read_referral(code)
    assert (after.version, after.owner_agency_id, after.agencies, after.state) == (
        before.version,
        before.owner_agency_id,
        before.agencies,
        before.state,
    )
    with runtime.db.connect() as conn:
        assert conn.execute(select(T.c.seq).where(T.c.referral_id == before.id)).all() == seq
    return caught.value


@pytest.fixture
def in_assessment(runtime: Runtime, caseworker: Actor, corridor_referral: Any) -> str:
    """A corridor referral in ``assessment``, its caseworker's ``assess`` task open."""
    code: str = corridor_referral(survivor_age=30, survivor_name="Synthetic Survivor T01").case_code
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    runtime.fire(
        code, "record_consent", caseworker, {"facts": {"safe_contact_method": "in_person"}}
    )
    return code


@pytest.fixture
def requested(runtime: Runtime, caseworker: Actor, referral_in_action_plan: str) -> str:
    """A referral in ``action_plan`` whose transfer to :data:`NEW` is pending."""
    code = referral_in_action_plan
    consent_to(runtime, code, caseworker)
    runtime.request_transfer(code, to_agency_id=NEW, actor=caseworker)
    return code


# -- requesting ---------------------------------------------------------------------------


def test_a_request_discloses_the_dataset_under_consent_and_tells_the_receiving_agency(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    grant_id = consent_to(runtime, code, caseworker)
    before = runtime.read_referral(code)

    view = runtime.request_transfer(code, to_agency_id=NEW, actor=caseworker)

    assert isinstance(view, TransferView)
    assert (view.status, view.from_agency_id, view.to_agency_id, view.grant_id) == (
        "pending", OLD, NEW, grant_id,
    )  # fmt: skip
    after = runtime.read_referral(code)
    assert view.version == after.version == before.version + 1
    assert (after.owner_agency_id, after.state) == (OLD, before.state)  # nothing moves yet
    assert after.agencies["receiving_case_agency"] == NEW
    [entry] = entries(runtime, code, "transfer_requested")
    assert (entry.consent_grant_id, entry.disclosed_to) == (grant_id, NEW)
    assert "survivor_name" in entry.disclosed_fields
    assert "Synthetic" not in str(entry.details)  # names only, never values
    [note] = outbox(runtime, code, "transfer_requested")
    assert (note.recipient_role, note.recipient_agency_id) == ("agency_focal_point", NEW)
    assert set(note.context) == {"case_code", "event", "state", "ask", "due_at", "reason"}
    assert transfer_timers(runtime, code) == 2  # one per escalation level

    # The receiving agency reads exactly the dataset, as disclosed, to decide.
    seen = runtime.read_disclosed(code, RECEIVER)
    assert set(seen.fields) == {
        "case_code", "consent_reference", "survivor_age", "risk_level", "service_needed",
        "safe_contact_method", "survivor_name",
    }  # fmt: skip
    assert str(seen.fields["survivor_name"]).startswith("Synthetic Survivor")
    assert "safety_plan_agreed" not in runtime.read_as_agency(code, RECEIVER).facts
    [check] = runtime.verify_timeline(code)
    assert check.ok


def test_without_a_covering_consent_nothing_is_disclosed_or_changed(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    error = refused(
        runtime, code, ConsentMissing,
        lambda: runtime.request_transfer(code, to_agency_id=NEW, actor=caseworker),
    )  # fmt: skip
    assert "TH-NGO-A" in str(error)
    consent_to(runtime, code, caseworker, agency=OTHER)  # consent to another agency only
    refused(
        runtime, code, ConsentMissing,
        lambda: runtime.request_transfer(code, to_agency_id=NEW, actor=caseworker),
    )  # fmt: skip
    with runtime.db.connect() as conn:
        referral_id = runtime.read_referral(code).id
        assert conn.execute(select(D).where(D.c.referral_id == referral_id)).all() == []
    with pytest.raises(NotFound):
        runtime.read_disclosed(code, RECEIVER)


def test_only_the_managing_agencys_requester_roles_request(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    consent_to(runtime, code, caseworker)
    for actor in (OUTSIDER, OLD_FOCAL_POINT, COORDINATOR, RECEIVER, NEW_CASEWORKER):
        refused(
            runtime, code, RoleNotAllowed,
            partial(runtime.request_transfer, code, to_agency_id=NEW, actor=actor),
        )  # fmt: skip


def test_an_unknown_unfit_or_own_agency_is_refused_by_name(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    consent_to(runtime, code, caseworker)
    for agency in ("TH-NGO-Q", "TH-HOSP-2", "LA-SW-1", OLD):
        error = refused(
            runtime, code, InvalidInput,
            partial(runtime.request_transfer, code, to_agency_id=agency, actor=caseworker),
        )  # fmt: skip
        assert isinstance(error, InvalidInput)
        assert error.field == "to_agency_id", agency


def test_only_one_transfer_is_pending_at_a_time(
    runtime: Runtime, caseworker: Actor, supervisor: Actor, requested: str
) -> None:
    consent_to(runtime, requested, caseworker, agency=OTHER)
    for agency in (OTHER, NEW):
        refused(
            runtime, requested, TransitionNotAllowed,
            partial(runtime.request_transfer, requested, to_agency_id=agency, actor=supervisor),
        )  # fmt: skip


def test_a_closed_or_erased_case_is_not_transferred(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    consent_to(runtime, code, caseworker)
    runtime.fire(code, "close", caseworker)
    refused(
        runtime, code, TransitionNotAllowed,
        lambda: runtime.request_transfer(code, to_agency_id=NEW, actor=caseworker),
    )  # fmt: skip
    runtime.erase(code, caseworker)
    refused(
        runtime, code, TransitionNotAllowed,
        lambda: runtime.request_transfer(code, to_agency_id=NEW, actor=caseworker),
    )  # fmt: skip


def test_a_stale_version_is_a_conflict(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    consent_to(runtime, code, caseworker)
    stale = runtime.read_referral(code).version - 1
    refused(
        runtime, code, ConcurrentChange,
        lambda: runtime.request_transfer(
            code, to_agency_id=NEW, actor=caseworker, expected_version=stale
        ),
    )  # fmt: skip


# -- accepting ----------------------------------------------------------------------------


def test_accepting_makes_the_receiving_agency_the_managing_agency(
    runtime: Runtime, caseworker: Actor, in_assessment: str
) -> None:
    code = in_assessment
    consent_to(runtime, code, caseworker)
    runtime.request_transfer(code, to_agency_id=NEW, actor=caseworker)
    assert open_tasks(runtime, code) == [("assess", OLD)]
    before = runtime.read_referral(code)

    view = runtime.accept_transfer(code, actor=RECEIVER)

    after = runtime.read_referral(code)
    assert view.status == "accepted"
    assert view.version == after.version == before.version + 1
    assert (after.owner_agency_id, after.state) == (NEW, "assessment")
    assert open_tasks(runtime, code) == [("assess", NEW)]  # the open task moved with the case
    assert [t.name for t in runtime.list_tasks(NEW_CASEWORKER)] == ["assess"]
    assert [t for t in runtime.list_tasks(caseworker) if t.case_code == code] == []
    assert transfer_timers(runtime, code) == 0
    [entry] = entries(runtime, code, "transfer_accepted")
    assert entry.details["from_agency_id"] == OLD
    assert entry.details["to_agency_id"] == NEW
    [note] = outbox(runtime, code, "transfer_accepted")
    assert (note.recipient_role, note.recipient_agency_id) == ("caseworker", OLD)
    # The new managing agency works the case: the SOP's transitions are its own now.
    assert "complete_assessment" in runtime.read_as_agency(code, NEW_CASEWORKER).available_events
    [check] = runtime.verify_timeline(code)
    assert check.ok


def test_the_former_managing_agency_can_no_longer_read_or_act(
    runtime: Runtime, caseworker: Actor, supervisor: Actor, requested: str
) -> None:
    code = requested
    runtime.accept_transfer(code, actor=RECEIVER)
    for actor in (caseworker, supervisor):
        with pytest.raises(NotFound):
            runtime.read_as_agency(code, actor)
        with pytest.raises(NotFound):
            runtime.fire(code, "start_follow_up", actor, hide_from_outsiders=True)
        with pytest.raises(NotFound):
            runtime.read_disclosed(code, actor)
        with pytest.raises(NotFound):
            runtime.list_transfers(code, actor)
        refused(runtime, code, RoleNotAllowed, partial(runtime.fire, code, "close", actor))
        refused(
            runtime, code, RoleNotAllowed,
            partial(runtime.reopen_case, code, reason="other", actor=actor),
        )  # fmt: skip
        refused(
            runtime, code, RoleNotAllowed,
            partial(runtime.request_transfer, code, to_agency_id=OTHER, actor=actor),
        )  # fmt: skip
        refused(runtime, code, RoleNotAllowed, partial(runtime.cancel_transfer, code, actor=actor))
    assert OLD not in runtime.read_referral(code).agencies.values()


def test_the_new_managing_agency_reads_the_dataset_not_what_stayed_behind(
    runtime: Runtime, requested: str
) -> None:
    runtime.accept_transfer(requested, actor=RECEIVER)
    seen = runtime.read_as_agency(requested, NEW_CASEWORKER)
    assert seen.facts["risk_level"] == "medium"
    assert "safety_plan_agreed" not in seen.facts  # outside the dataset: the old agency's
    assert "survivor_name" in seen.sealed_fields  # in the dataset, sealed as before


def test_only_the_receiving_agencys_answering_role_answers(
    runtime: Runtime, caseworker: Actor, requested: str
) -> None:
    code = requested
    for actor, error in (
        (caseworker, RoleNotAllowed),  # the requester cannot accept her own request
        (OLD_FOCAL_POINT, RoleNotAllowed),
        (OUTSIDE_FOCAL_POINT, RoleNotAllowed),
        (NEW_CASEWORKER, RoleNotAllowed),  # the right agency, the wrong role
        (COORDINATOR, RoleNotAllowed),
    ):
        refused(runtime, code, error, partial(runtime.accept_transfer, code, actor=actor))
        refused(
            runtime, code, error,
            partial(runtime.decline_transfer, code, reason="no_capacity", actor=actor),
        )  # fmt: skip


def test_an_answer_needs_a_pending_transfer(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    # An agency no transfer was ever sent to may not answer (403, as any other agency).
    refused(runtime, code, RoleNotAllowed, lambda: runtime.accept_transfer(code, actor=RECEIVER))
    refused(
        runtime, code, RoleNotAllowed,
        lambda: runtime.decline_transfer(code, reason="no_capacity", actor=RECEIVER),
    )  # fmt: skip
    refused(
        runtime, code, TransitionNotAllowed, lambda: runtime.cancel_transfer(code, actor=caseworker)
    )


def test_a_withdrawn_consent_blocks_acceptance_but_not_a_decline(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    grant_id = consent_to(runtime, code, caseworker)
    runtime.request_transfer(code, to_agency_id=NEW, actor=caseworker)
    runtime.withdraw_consent(code, grant_id, caseworker)
    error = refused(
        runtime, code, ConsentMissing, lambda: runtime.accept_transfer(code, actor=RECEIVER)
    )
    assert "declined or cancelled" in str(error)
    assert runtime.decline_transfer(code, reason="no_capacity", actor=RECEIVER).status == "declined"
    assert runtime.read_referral(code).owner_agency_id == OLD


# -- declining and cancelling ------------------------------------------------------------


def test_declining_takes_a_reason_and_changes_nothing_but_the_timeline(
    runtime: Runtime, caseworker: Actor, requested: str
) -> None:
    code = requested
    error = refused(
        runtime, code, InvalidInput,
        lambda: runtime.decline_transfer(code, reason="too busy", actor=RECEIVER),
    )  # fmt: skip
    assert isinstance(error, InvalidInput)
    assert error.field == "reason"
    before = runtime.read_referral(code)
    view = runtime.decline_transfer(code, reason="outside_service_area", actor=RECEIVER)
    after = runtime.read_referral(code)
    assert (view.status, view.reason) == ("declined", "outside_service_area")
    assert (after.owner_agency_id, after.state, after.version) == (
        OLD, before.state, before.version + 1,
    )  # fmt: skip
    [entry] = entries(runtime, code, "transfer_declined")
    assert entry.details["reason"] == "outside_service_area"
    [note] = outbox(runtime, code, "transfer_declined")
    assert (note.recipient_role, note.recipient_agency_id) == ("caseworker", OLD)
    assert note.context["reason"] == "outside_service_area"
    assert transfer_timers(runtime, code) == 0
    refused(
        runtime, code, TransitionNotAllowed, lambda: runtime.accept_transfer(code, actor=RECEIVER)
    )
    # The case may be offered to another agency now.
    consent_to(runtime, code, caseworker, agency=OTHER)
    assert runtime.request_transfer(code, to_agency_id=OTHER, actor=caseworker).status == "pending"
    assert [t.status for t in runtime.list_transfers(code, caseworker)] == ["declined", "pending"]


def test_the_requester_cancels_before_the_answer(
    runtime: Runtime, caseworker: Actor, supervisor: Actor, requested: str
) -> None:
    code = requested
    for actor in (RECEIVER, OUTSIDER, OLD_FOCAL_POINT):
        refused(runtime, code, RoleNotAllowed, partial(runtime.cancel_transfer, code, actor=actor))
    view = runtime.cancel_transfer(code, actor=supervisor)
    assert view.status == "cancelled"
    [note] = outbox(runtime, code, "transfer_cancelled")
    assert (note.recipient_role, note.recipient_agency_id) == ("agency_focal_point", NEW)
    assert transfer_timers(runtime, code) == 0
    refused(
        runtime, code, TransitionNotAllowed, lambda: runtime.accept_transfer(code, actor=RECEIVER)
    )
    refused(
        runtime, code, TransitionNotAllowed, lambda: runtime.cancel_transfer(code, actor=caseworker)
    )
    assert runtime.read_referral(code).owner_agency_id == OLD


def test_an_accepted_transfer_cannot_be_answered_or_cancelled_again(
    runtime: Runtime, caseworker: Actor, requested: str
) -> None:
    code = requested
    runtime.accept_transfer(code, actor=RECEIVER)
    refused(
        runtime, code, TransitionNotAllowed, lambda: runtime.accept_transfer(code, actor=RECEIVER)
    )
    refused(
        runtime, code, TransitionNotAllowed,
        lambda: runtime.decline_transfer(code, reason="no_capacity", actor=RECEIVER),
    )  # fmt: skip
    # The new managing agency may itself transfer the case on, under a consent for that.
    new_supervisor = Actor("u-sup-a", "supervisor", NEW, ("ngo",))
    refused(
        runtime, code, TransitionNotAllowed,
        lambda: runtime.cancel_transfer(code, actor=new_supervisor),
    )  # fmt: skip


# -- the answer's deadline ---------------------------------------------------------------


def test_a_late_answer_is_escalated_and_never_answered_by_the_engine(
    runtime: Runtime, caseworker: Actor, requested: str
) -> None:
    code = requested
    runtime.clock.advance(timedelta(days=3, minutes=1))  # type: ignore[attr-defined]
    outcomes = [o for o in runtime.sweep() if o.case_code == code]
    assert [o.outcome for o in outcomes] == ["escalated"]
    [reminder] = outbox(runtime, code, "deadline_reminder")
    assert (reminder.recipient_role, reminder.recipient_agency_id) == ("agency_focal_point", NEW)
    runtime.clock.advance(timedelta(days=1))  # type: ignore[attr-defined]
    assert [o.outcome for o in runtime.sweep() if o.case_code == code] == ["escalated"]
    agencies = {
        (n.recipient_role, n.recipient_agency_id)
        for n in outbox(runtime, code, "deadline_escalated")
    }
    assert agencies == {("supervisor", OLD), ("coordinator", None)}
    assert runtime.read_referral(code).owner_agency_id == OLD
    assert [e.details["deadline"] for e in entries(runtime, code, "escalation")][-2:] == [
        "transfer_answer",
        "transfer_answer",
    ]


def test_an_answered_transfer_escalates_no_more(
    runtime: Runtime, caseworker: Actor, requested: str
) -> None:
    runtime.decline_transfer(requested, reason="no_capacity", actor=RECEIVER)
    runtime.clock.advance(timedelta(days=5))  # type: ignore[attr-defined]
    assert [o for o in runtime.sweep() if o.case_code == requested] == []


# -- the same step twice at once -----------------------------------------------------------


def _at_once(steps: list[Callable[[], object]]) -> list[object]:
    """Run ``steps`` in threads released together; each one's result or error."""
    barrier = threading.Barrier(len(steps))
    results: list[object] = [None] * len(steps)

    def run(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[i] = steps[i]()
        except SopEngineError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(steps))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_the_same_request_twice_at_once_makes_one_transfer(
    runtime: Runtime, caseworker: Actor, referral_in_action_plan: str
) -> None:
    code = referral_in_action_plan
    consent_to(runtime, code, caseworker)
    version = runtime.read_referral(code).version
    results = _at_once(
        [lambda: runtime.request_transfer(code, to_agency_id=NEW, actor=caseworker)] * 4
    )
    made = [r for r in results if isinstance(r, TransferView)]
    assert len(made) == 1, results
    assert all(
        isinstance(r, (ConcurrentChange, TransitionNotAllowed)) for r in results if r not in made
    )
    assert runtime.read_referral(code).version == version + 1
    assert len(entries(runtime, code, "transfer_requested")) == 1
    assert [t.status for t in runtime.list_transfers(code, caseworker)] == ["pending"]


def test_accepting_and_cancelling_at_once_leaves_one_answer(
    runtime: Runtime, caseworker: Actor, requested: str
) -> None:
    results = _at_once(
        [
            lambda: runtime.accept_transfer(requested, actor=RECEIVER),
            lambda: runtime.cancel_transfer(requested, actor=caseworker),
            lambda: runtime.accept_transfer(requested, actor=RECEIVER),
        ]
    )
    won = [r for r in results if isinstance(r, TransferView)]
    assert len(won) == 1, results
    owner = runtime.read_referral(requested).owner_agency_id
    assert owner == (NEW if won[0].status == "accepted" else OLD)
    reader = Actor("u-any", "caseworker", owner, ("ngo",))
    assert [t.status for t in runtime.list_transfers(requested, reader)] == [won[0].status]
    kinds = [e.kind for e in entries(runtime, requested, "transfer_accepted")] + [
        e.kind for e in entries(runtime, requested, "transfer_cancelled")
    ]
    assert len(kinds) == 1


def test_a_case_closed_while_its_transfer_waits_is_not_taken_over(
    runtime: Runtime, caseworker: Actor, requested: str
) -> None:
    runtime.fire(requested, "close", caseworker)
    refused(
        runtime, requested, TransitionNotAllowed,
        lambda: runtime.accept_transfer(requested, actor=RECEIVER),
    )  # fmt: skip
    assert runtime.decline_transfer(requested, reason="no_capacity", actor=RECEIVER).reason == (
        "no_capacity"
    )
    assert runtime.read_referral(requested).owner_agency_id == OLD


def test_feedback_to_the_case_agency_moves_with_the_case_and_a_receiver_keeps_its_slot(
    runtime: Runtime, caseworker: Actor, focal_point: Actor, referral_in_action_plan: str
) -> None:
    """Regression: the case agency's slot, filled by the former managing agency and holding
    feedback disclosed to it, was kept by it after the transfer, so it still took part."""
    code = referral_in_action_plan
    runtime.grant_consent(code, scope="cross_border_return", actor=caseworker, given_by="survivor")
    runtime.fire(code, "refer_for_return", caseworker, {"recipient_agency_id": "LA-SW-1"})
    for action in ("acknowledge", "accept", "deliver"):
        runtime.fire(code, f"return_referral.{action}", focal_point, answer_payload(action))
    runtime.grant_consent(
        code, scope="feedback_to_case_agency", actor=caseworker, given_by="survivor"
    )
    runtime.fire(code, "report_reintegration", focal_point, {"facts": {"follow_up_score": 7}})
    assert runtime.read_referral(code).agencies["case_agency"] == OLD
    consent_to(runtime, code, caseworker)
    runtime.request_transfer(code, to_agency_id=NEW, actor=caseworker)
    runtime.accept_transfer(code, actor=RECEIVER)

    after = runtime.read_referral(code)
    assert after.agencies["case_agency"] == NEW
    assert after.agencies["receiving_focal_point"] == "LA-SW-1"  # the receiver keeps its part
    assert OLD not in after.agencies.values()
    with pytest.raises(NotFound):
        runtime.read_as_agency(code, caseworker)
    with pytest.raises(NotFound):
        runtime.read_disclosed(code, caseworker)
    assert "report_reintegration" in runtime.read_as_agency(code, focal_point).available_events
