"""Outcomes flow back: the referring agency hears every answer to its handoff (acknowledged,
accepted, declined with the reason, delivered with the outcome), and the receiving agency
hears a revoke. A delivery reports its outcome: successful, or unsuccessful with one of the
handoff's reasons. On SQLite and PostgreSQL, with the example corridor (Thailand to Lao PDR):
its caseworker at TH-NGO-1 sends, the focal point at LA-SW-1 answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from notifications.catalogue import template_names
from sop_engine.errors import InvalidInput
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from tests.handoffs import answer_payload
from tests.runtime.conftest import ASSESSMENT, CORRIDOR
from tests.shipped import ROOT

OUT, T = tables.outbox, tables.timeline_entries
RECEIVER, SENDER = "LA-SW-1", "TH-NGO-1"


@pytest.fixture
def sent(runtime: Runtime, caseworker: Actor, referral_in_action_plan: str) -> str:
    """The corridor referral, sent to the Lao focal point for return."""
    code = referral_in_action_plan
    runtime.grant_consent(code, scope="cross_border_return", actor=caseworker, given_by="survivor")
    runtime.fire(code, "refer_for_return", caseworker, {"recipient_agency_id": RECEIVER})
    return code


def _messages(runtime: Runtime, code: str, template: str) -> list[Any]:
    referral = runtime.read_referral(code)
    with runtime.db.connect() as conn:
        return list(
            conn.execute(
                select(OUT).where(OUT.c.referral_id == referral.id, OUT.c.template == template)
            )
        )


def _last_entry(runtime: Runtime, code: str) -> Any:
    referral = runtime.read_referral(code)
    with runtime.db.connect() as conn:
        return conn.execute(
            select(T).where(T.c.referral_id == referral.id).order_by(T.c.seq.desc()).limit(1)
        ).one()


def test_the_sender_hears_the_acknowledgement_the_acceptance_and_the_delivery(
    runtime: Runtime, sent: str, focal_point: Actor
) -> None:
    told = {
        "acknowledge": "referral_acknowledged",
        "accept": "referral_accepted",
        "deliver": "referral_delivered",
    }
    for action, template in told.items():
        assert _messages(runtime, sent, template) == []
        runtime.fire(sent, f"return_referral.{action}", focal_point, answer_payload(action))
        [message] = _messages(runtime, sent, template)
        # To the handoff's sender role at the agency that sent it, never to the receiver.
        assert (message.recipient_role, message.recipient_agency_id) == ("caseworker", SENDER)
        assert message.context["event"] == f"return_referral.{action}"
    [delivered] = _messages(runtime, sent, "referral_delivered")
    assert (delivered.context["outcome"], delivered.context["reason"]) == ("successful", None)
    entry = _last_entry(runtime, sent)
    assert (entry.event, entry.details["outcome"]) == ("return_referral.deliver", "successful")
    assert "reason" not in entry.details


def test_a_decline_tells_the_sender_the_reason(
    runtime: Runtime, sent: str, focal_point: Actor
) -> None:
    runtime.fire(sent, "return_referral.decline", focal_point, {"reason": "no_capacity"})
    [message] = _messages(runtime, sent, "referral_declined")
    assert (message.recipient_role, message.recipient_agency_id) == ("caseworker", SENDER)
    assert message.context["reason"] == "no_capacity"


def test_a_revoke_tells_the_receiver_to_stop(
    runtime: Runtime, sent: str, caseworker: Actor, focal_point: Actor
) -> None:
    runtime.fire(sent, "return_referral.acknowledge", focal_point)
    runtime.fire(sent, "return_referral.revoke", caseworker)
    [message] = _messages(runtime, sent, "referral_revoked")
    assert (message.recipient_role, message.recipient_agency_id) == (
        "agency_focal_point",
        RECEIVER,
    )


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (None, "outcome"),
        ({"outcome": "done"}, "outcome"),
        ({"outcome": "unsuccessful"}, "reason"),
        ({"outcome": "unsuccessful", "reason": "no_capacity"}, "reason"),  # a decline reason
        ({"outcome": "successful", "reason": "other"}, "reason"),
    ],
    ids=["none", "unknown outcome", "no reason", "reason not listed", "reason with success"],
)
def test_a_delivery_without_a_proper_outcome_is_refused_and_changes_nothing(
    runtime: Runtime, sent: str, focal_point: Actor, payload: Any, field: str
) -> None:
    for action in ("acknowledge", "accept"):
        runtime.fire(sent, f"return_referral.{action}", focal_point)
    before = runtime.read_referral(sent)
    with pytest.raises(InvalidInput) as refused:
        runtime.fire(sent, "return_referral.deliver", focal_point, payload)
    assert refused.value.field == field
    after = runtime.read_referral(sent)
    assert (after.state, after.version) == (before.state, before.version)
    assert _messages(runtime, sent, "referral_delivered") == []


def test_an_unsuccessful_delivery_records_and_tells_its_reason(
    runtime: Runtime, sent: str, focal_point: Actor
) -> None:
    for action in ("acknowledge", "accept"):
        runtime.fire(sent, f"return_referral.{action}", focal_point)
    not_done = {"outcome": "unsuccessful", "reason": "survivor_did_not_attend"}
    runtime.fire(sent, "return_referral.deliver", focal_point, not_done)
    entry = _last_entry(runtime, sent)
    assert (entry.details["outcome"], entry.details["reason"]) == (
        "unsuccessful",
        "survivor_did_not_attend",
    )
    [message] = _messages(runtime, sent, "referral_delivered")
    assert (message.context["outcome"], message.context["reason"]) == (
        "unsuccessful",
        "survivor_did_not_attend",
    )


def test_the_deliver_task_shows_the_unsuccessful_reasons_and_answers_with_an_outcome(
    runtime: Runtime, sent: str, focal_point: Actor
) -> None:
    for action in ("acknowledge", "accept"):
        runtime.fire(sent, f"return_referral.{action}", focal_point)
    [task] = [t for t in runtime.list_tasks(focal_point) if t.name == "deliver"]
    reasons = runtime.library.get(CORRIDOR).spec.handoffs["return_referral"].unsuccessful_reasons
    assert task.unsuccessful_reasons == reasons
    with pytest.raises(InvalidInput, match="needs its outcome"):
        runtime.answer_handoff(task.id, "deliver", focal_point)
    done = runtime.answer_handoff(task.id, "deliver", focal_point, outcome="successful")
    assert done.state == "follow_up"


NO_REASON = """\
key: test.decline-without-reason
version: 1
extends: example.corridor@1
title: The example corridor, where a decline needs no reason
states:
  return_referral:
    handoff:
      reason_required: false
"""


def test_a_handoff_that_needs_no_decline_reason_is_declined_without_one_through_its_task(
    runtime: Runtime, caseworker: Actor, focal_point: Actor, tmp_path: Path
) -> None:
    (tmp_path / "test.decline-without-reason.sop.yaml").write_text(NO_REASON, encoding="utf-8")
    library = SopLibrary.load([ROOT / "sop_definitions", tmp_path], template_names())
    own = Runtime(runtime.db, library, runtime.services.keyring, runtime.clock,
                  directory=runtime.services.directory)  # fmt: skip
    view = own.create_referral(
        sop_key="test.decline-without-reason",
        sop_version=1,
        actor=caseworker,
        origin_country="TH",
        destination_country="LA",
        facts={"survivor_age": 30, "survivor_name": "Synthetic Survivor 0900"},
    )
    code = view.case_code
    own.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    own.fire(code, "record_consent", caseworker, {"facts": {"safe_contact_method": "text_message"}})
    own.fire(code, "complete_assessment", caseworker, {"facts": ASSESSMENT})
    own.grant_consent(code, scope="cross_border_return", actor=caseworker, given_by="survivor")
    own.fire(code, "refer_for_return", caseworker, {"recipient_agency_id": RECEIVER})
    [task] = [t for t in own.list_tasks(focal_point) if t.case_code == code]
    declined = own.answer_handoff(task.id, "decline", focal_point)
    assert declined.state == "action_plan"
    [message] = _messages(own, code, "referral_declined")
    assert message.context["reason"] is None
