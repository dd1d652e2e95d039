"""Delivery to people and for the record, end to end on SQLite and PostgreSQL with a real SMTP
server: a role without an agency (the coordinators) gets the in-app notice in the SOP's time
zone and each active coordinator with an address her own e-mail, in her language and local
time; final failures go dead on their first attempt, busy ones are retried; and every sent
message leaves a ``delivered`` entry on the referral's hash-chained timeline, which auditors
read through the API. Every name, address and agency here is synthetic.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from api.app import create_app
from api.auth_limits import FailedAuthLimit
from api.users import create_user, set_disabled
from notifications.channels import Channel, InboxChannel, OutgoingMessage
from notifications.dispatch import DispatchReport
from notifications.render import render
from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKeyring
from sop_engine.language.compiler import CompiledSop
from sop_engine.persistence import tables
from sop_engine.persistence.db import is_postgres
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.services import Services

from .test_dispatch import (
    FOCAL_MAIL,
    START,
    Mailbox,
    channels,
    clock,
    directory,
    dispatch,
    hooks,
    inbox,
    keyring,
    mail,
    mailbox,
    outbox,
    recipients,
    refer_for_return,
    runtime,
    timeline,
)

__all__ = [  # the fixtures this module borrows, so that linters see them used
    "channels",
    "clock",
    "directory",
    "hooks",
    "keyring",
    "mail",
    "mailbox",
    "recipients",
    "runtime",
]

COORDINATOR_TH = "coord-th@lead.th-syn.example"
COORDINATOR_MM = "coord-mm@lead.mm-syn.example"
COORDINATOR_EN = "coord-en@lead.la-syn.example"
ESCALATED_AT = START + timedelta(hours=5)
"""When the example corridor's intake deadline (1 hour) reaches the coordinators (4 more)."""


def add_user(runtime: Runtime, name: str, role: str = "coordinator", **contact: Any) -> str:
    return create_user(runtime.db, name, role, now=START, **contact).principal.id


def coordinators(runtime: Runtime) -> dict[str, str]:
    """Six coordinators and a caseworker; only three may get e-mail."""
    ids = {
        "th": add_user(
            runtime, "coord-th", email=COORDINATOR_TH, language="th", timezone="Asia/Bangkok"
        ),
        "mm": add_user(
            runtime, "coord-mm", email=COORDINATOR_MM, language="my", timezone="Asia/Yangon"
        ),
        "en": add_user(runtime, "coord-en", email=COORDINATOR_EN),  # no language, no zone
        "no-email": add_user(runtime, "coord-inbox", language="th", timezone="Asia/Bangkok"),
        "disabled": add_user(runtime, "coord-gone", email="gone@lead.th-syn.example"),
        "expired": create_user(
            runtime.db,
            "coord-old",
            "coordinator",
            now=START,
            lifetime=timedelta(hours=1),
            email="old@lead.th-syn.example",
        ).principal.id,
        "caseworker": add_user(
            runtime, "cw-mail", "caseworker", agency_id="TH-NGO-1", email="cw@ngo.th-syn.example"
        ),
    }
    set_disabled(runtime.db, "coord-gone", True)
    return ids


def escalate_to_the_coordinators(runtime: Runtime, caseworker: Actor) -> tuple[str, Any]:
    """A referral left in intake until its deadline reaches the coordinators; the
    coordinators' ``deadline_escalated`` message."""
    view = runtime.create_referral(
        sop_key="example.corridor",
        sop_version=None,
        actor=caseworker,
        origin_country="TH",
        destination_country="LA",
        incident_at=START - timedelta(hours=2),
        facts={"survivor_age": 31, "survivor_name": "Synthetic Survivor 901"},
    )
    clock = runtime.clock
    assert isinstance(clock, ManualClock)
    clock.advance(ESCALATED_AT - clock.now())
    runtime.sweep()
    [message] = outbox(runtime, recipient_role="coordinator", template="deadline_escalated")
    return view.case_code, message


def emails_of(mailbox: Mailbox, message_id: str) -> dict[str, Any]:
    """The e-mails of message ``message_id``, by address."""
    return {
        str(m["To"]): m
        for m in mailbox.messages
        if str(m["X-SOP-Engine-Message-Id"]).strip().startswith(message_id)
    }


def no_address_anywhere(runtime: Runtime, *addresses: str) -> None:
    o, t = tables.outbox, tables.timeline_entries
    with runtime.db.connect() as conn:
        stored = [str(r) for r in conn.execute(select(o.c.last_error, o.c.context))]
        stored += [str(r) for r in conn.execute(select(t.c.details))]
    for address in addresses:
        assert not [s for s in stored if address in s]
    assert not [s for s in stored if "syn.example" in s]


@pytest.fixture
def caseworker() -> Actor:
    return Actor("u-cw", "caseworker", "TH-NGO-1", ("ngo",))


# -- a role without an agency -------------------------------------------------------------------


def test_each_active_coordinator_reads_her_own_email_in_her_language_and_local_time(
    runtime: Runtime,
    caseworker: Actor,
    directory: Any,
    channels: list[Channel],
    mailbox: Mailbox,
) -> None:
    ids = coordinators(runtime)
    code, message = escalate_to_the_coordinators(runtime, caseworker)

    report = dispatch(runtime, directory, channels)
    assert report.sent == report.claimed
    assert report.dead == report.retried == 0

    emails = emails_of(mailbox, message.id)
    assert sorted(emails) == sorted([COORDINATOR_TH, COORDINATOR_MM, COORDINATOR_EN])
    expected = {
        COORDINATOR_TH: ("th", "Asia/Bangkok", ids["th"], "2026-03-02 09:30 (UTC+07:00)"),
        COORDINATOR_MM: ("my", "Asia/Yangon", ids["mm"], "2026-03-02 09:00 (UTC+06:30)"),
        # No language of her own: English; no zone: the SOP's (Asia/Bangkok).
        COORDINATOR_EN: ("en", "Asia/Bangkok", ids["en"], "2026-03-02 09:30 (UTC+07:00)"),
    }
    for address, (language, zone, user, due) in expected.items():
        email = emails[address]
        rendered = render("deadline_escalated", language, message.context, timezone=zone)
        assert email["Subject"] == rendered.subject
        assert due in email.get_content()  # the deadline passed at 02:30 UTC
        assert email["Content-Language"] == language
        assert email["Message-ID"] == f"<{message.id}.{user}@sop-engine>"
        assert code in email["Subject"]
        assert "Synthetic Survivor" not in email.as_string()
    assert "เคส" in emails[COORDINATOR_TH]["Subject"]

    # The role's in-app notice, as before, now reads the due time in the SOP's zone.
    [shown] = inbox(runtime, message_id=message.id)
    assert (shown.recipient_role, shown.recipient_agency_id, shown.language) == (
        "coordinator",
        None,
        "en",
    )
    assert "2026-03-02 09:30 (UTC+07:00)" in shown.body

    [entry] = [
        e
        for e in timeline(runtime, message.referral_id, "delivered")
        if e.details["message_id"] == message.id
    ]
    assert entry.details == {
        "message_id": message.id,
        "template": "deadline_escalated",
        "recipient_role": "coordinator",
        "recipient_agency_id": None,
        "channels": ["email", "in_app"],
        "users": 3,
        "refused_users": {},
        "attempts": 1,
    }
    assert (entry.actor_id, entry.actor_role) == ("system", "system")
    no_address_anywhere(runtime, COORDINATOR_TH, COORDINATOR_MM, COORDINATOR_EN)
    [check] = runtime.verify_timeline(code)
    assert check.ok


def test_without_email_configured_the_coordinators_read_the_in_app_inbox_only(
    runtime: Runtime, caseworker: Actor, directory: Any, mailbox: Mailbox
) -> None:
    coordinators(runtime)
    _, message = escalate_to_the_coordinators(runtime, caseworker)

    dispatch(runtime, directory, [InboxChannel(runtime.db)])

    assert mailbox.raw == []
    assert [r.message_id for r in inbox(runtime, message_id=message.id)] == [message.id]
    [entry] = [
        e
        for e in timeline(runtime, message.referral_id, "delivered")
        if e.details["message_id"] == message.id
    ]
    assert (entry.details["channels"], entry.details["users"]) == (["in_app"], 0)


def test_a_retry_sends_every_coordinator_her_copy_again_under_the_same_message_id(
    runtime: Runtime,
    caseworker: Actor,
    clock: ManualClock,
    directory: Any,
    channels: list[Channel],
    mailbox: Mailbox,
) -> None:
    th = add_user(runtime, "coord-th", email=COORDINATOR_TH, language="th")
    mm = add_user(runtime, "coord-mm", email=COORDINATOR_MM, language="my")
    _, message = escalate_to_the_coordinators(runtime, caseworker)
    first = min(th, mm)  # copies go out by user id
    mailbox.refusals.append("451 4.3.0 Try again later")

    dispatch(runtime, directory, channels)
    [row] = outbox(runtime, id=message.id)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error == f"DeliveryError:smtp_451 (user {first})"
    clock.advance(row.next_attempt_at - clock.now())
    dispatch(runtime, directory, channels)

    [row] = outbox(runtime, id=message.id)
    assert (row.status, row.attempts) == ("sent", 2)
    ids = Counter(str(m["Message-ID"]) for m in emails_of(mailbox, message.id).values())
    sent = Counter(
        str(m["Message-ID"])
        for m in mailbox.messages
        if str(m["X-SOP-Engine-Message-Id"]).strip().startswith(message.id)
    )
    second = max(th, mm)
    # The second coordinator got hers twice, recognisably the same; the first once.
    assert sent == Counter(
        {f"<{message.id}.{first}@sop-engine>": 1, f"<{message.id}.{second}@sop-engine>": 2}
    )
    assert len(ids) == 2
    assert len(inbox(runtime, message_id=message.id)) == 1
    no_address_anywhere(runtime, COORDINATOR_TH, COORDINATOR_MM)


def test_one_coordinators_refused_address_holds_back_no_one_and_is_listed(
    runtime: Runtime,
    caseworker: Actor,
    directory: Any,
    channels: list[Channel],
    mailbox: Mailbox,
) -> None:
    th = add_user(runtime, "coord-th", email=COORDINATOR_TH, language="th")
    mm = add_user(runtime, "coord-mm", email=COORDINATOR_MM, language="my")
    _, message = escalate_to_the_coordinators(runtime, caseworker)
    first, second = sorted([th, mm])
    mailbox.refusals.append("550 5.1.1 No such user")

    dispatch(runtime, directory, channels)

    [row] = outbox(runtime, id=message.id)
    assert (row.status, row.attempts) == ("sent", 1)
    assert [str(m["Message-ID"]) for m in emails_of(mailbox, message.id).values()] == [
        f"<{message.id}.{second}@sop-engine>"
    ]
    [entry] = [
        e
        for e in timeline(runtime, message.referral_id, "delivered")
        if e.details["message_id"] == message.id
    ]
    assert entry.details["users"] == 1
    assert entry.details["refused_users"] == {first: "DeliveryError:smtp_550"}
    assert timeline(runtime, message.referral_id, "delivery_failed") == []
    no_address_anywhere(runtime, COORDINATOR_TH, COORDINATOR_MM)


# -- final and passing failures of an agency's e-mail -------------------------------------------


@pytest.mark.parametrize(
    ("reply", "status", "attempts"),
    [("550 5.1.1 No such mailbox", "dead", 1), ("451 4.3.0 Try again later", "pending", 1)],
    ids=["550 dead at once", "451 retried"],
)
def test_an_agency_email_refused_for_good_dies_at_once_and_a_busy_one_is_retried(
    runtime: Runtime,
    caseworker: Actor,
    clock: ManualClock,
    directory: Any,
    channels: list[Channel],
    mailbox: Mailbox,
    reply: str,
    status: str,
    attempts: int,
) -> None:
    code = refer_for_return(runtime, caseworker, FOCAL_MAIL)
    [message] = outbox(runtime)
    mailbox.refusals.append(reply)

    report = dispatch(runtime, directory, channels)

    smtp = reply[:3]
    [row] = outbox(runtime, id=message.id)
    assert (row.status, row.attempts, row.last_error) == (
        status,
        attempts,
        f"DeliveryError:smtp_{smtp}",
    )
    failed = timeline(runtime, message.referral_id, "delivery_failed")
    notices = outbox(runtime, template="delivery_failed")
    if status == "dead":
        assert report == DispatchReport(dead=1)
        assert [(e.details["attempts"], e.details["final"]) for e in failed] == [(1, True)]
        assert [n.recipient_role for n in notices] == ["coordinator"]
    else:
        assert report == DispatchReport(retried=1)
        assert (failed, notices) == ([], [])
        clock.advance(row.next_attempt_at - clock.now())
        assert dispatch(runtime, directory, channels) == DispatchReport(sent=1)
        [entry] = timeline(runtime, message.referral_id, "delivered")
        assert entry.details["attempts"] == 2
        assert entry.details["channels"] == ["email", "in_app"]
    [check] = runtime.verify_timeline(code)
    assert check.ok


# -- the record for auditors --------------------------------------------------------------------


def test_auditors_read_each_delivery_on_the_timeline_without_an_address(
    runtime: Runtime,
    caseworker: Actor,
    directory: Any,
    channels: list[Channel],
    mailbox: Mailbox,
) -> None:
    code = refer_for_return(runtime, caseworker, FOCAL_MAIL)
    [message] = outbox(runtime)
    assert dispatch(runtime, directory, channels) == DispatchReport(sent=1)
    auditor = create_user(runtime.db, "aud-1", "auditor").token
    app = create_app(runtime, auth_limit=FailedAuthLimit(limit=10_000))

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get(
            f"/audit/referrals/{code}/timeline", headers={"Authorization": f"Bearer {auditor}"}
        )

    assert r.status_code == 200, r.text
    body = r.json()
    [delivered] = [e for e in body["items"] if e["kind"] == "delivered"]
    assert delivered["actor_id"] == "system"
    assert delivered["details"] == {
        "message_id": message.id,
        "template": "referral_received",
        "recipient_role": "agency_focal_point",
        "recipient_agency_id": FOCAL_MAIL,
        "channels": ["email", "in_app"],
        "users": 0,
        "refused_users": {},
        "attempts": 1,
    }
    assert body["verification"]["ok"] is True
    assert "mail.la-syn.example" not in r.text


class InterruptedServices(Services):
    """Services whose SOP lookup, once armed, lets a caseworker change the referral first:
    the moment between ``mark_sent`` reading the referral and writing its entry."""

    armed: threading.Event
    interrupt: Any
    threads: list[threading.Thread]

    def sop(self, key: str, version: int) -> CompiledSop:
        if self.armed.is_set():
            self.armed.clear()
            thread = threading.Thread(target=self.interrupt)
            thread.start()
            if is_postgres(self.db):
                thread.join()  # on SQLite it waits for this transaction's write lock
            self.threads.append(thread)
        return super().sop(key, version)


class ArmingChannel:
    """The in-app inbox, arming the interruption once it has taken the message."""

    name = "in_app"

    def __init__(self, inbox: InboxChannel, armed: threading.Event) -> None:
        self.inbox, self.armed = inbox, armed

    def send(self, message: OutgoingMessage) -> None:
        self.inbox.send(message)
        self.armed.set()


def test_a_change_to_the_referral_while_a_delivery_is_recorded_loses_neither(
    engine: Engine,
    runtime: Runtime,
    keyring: MasterKeyring,
    caseworker: Actor,
    directory: Any,
) -> None:
    code = refer_for_return(runtime, caseworker, "LA-SW-1")
    [message] = outbox(runtime)
    armed = threading.Event()
    fields = {f.name: getattr(runtime.services, f.name) for f in dataclasses.fields(Services)}
    services = InterruptedServices(**fields)
    object.__setattr__(services, "armed", armed)
    object.__setattr__(services, "threads", [])
    object.__setattr__(
        services,
        "interrupt",
        lambda: runtime.grant_consent(
            code, scope="feedback_to_case_agency", actor=caseworker, given_by="survivor"
        ),
    )
    interrupted = Runtime(engine, runtime.library, keyring, runtime.clock)
    interrupted.services = services

    report = dispatch(interrupted, directory, [ArmingChannel(InboxChannel(engine), armed)])
    for thread in services.threads:
        thread.join()

    assert report == DispatchReport(sent=1)
    assert [
        e.details["message_id"] for e in timeline(runtime, message.referral_id, "delivered")
    ] == [message.id]
    granted = timeline(runtime, message.referral_id, "consent_granted")
    assert len(granted) == 3
    [delivered] = timeline(runtime, message.referral_id, "delivered")
    if is_postgres(engine):
        # Read before the consent was granted, written after it: the transaction started over.
        assert delivered.seq > max(e.seq for e in granted)
    [row] = outbox(runtime, id=message.id)
    assert (row.status, row.attempts) == ("sent", 1)
    [check] = runtime.verify_timeline(code)
    assert check.ok
