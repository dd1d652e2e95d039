"""The outbox dispatch end to end: referrals on the example corridor write notifications,
``dispatch_pending`` delivers them to a real SMTP server, a webhook receiver that verifies
signatures and the in-app inbox, retries what failed with backoff, and declares dead what
keeps failing, with an incident on the timeline and a notice to the coordinators.

The service directory is a small synthetic one written for these tests and read by the
real loader. Its loader allows a synthetic address only on a reserved domain
(``https://*.example``), so that no test referral can reach a real inbox; the webhook
receiver listens on 127.0.0.1, so the tests point the loaded webhook entry at it.

Every name, agency and fact here is synthetic.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import secrets
import shutil
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from pydantic import SecretStr
from sqlalchemy import Engine, select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from notifications.catalogue import TEMPLATES_DIR
from notifications.channels import (
    Channel,
    InboxChannel,
    OutgoingMessage,
    SmtpChannel,
    WebhookChannel,
)
from notifications.dispatch import (
    DispatchReport,
    Recipient,
    build_channels,
    dispatch_pending,
    find_recipient,
)
from notifications.render import Renderer, render
from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.directory import ServiceDirectory, load_directory
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.deadlines import DEFAULT_LEASE
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.outbox import MAX_ATTEMPTS, OutboxClaim, backoff
from sop_engine.settings import Settings
from tests.agencies import agency_directory

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
"""08:30 in Bangkok and Vientiane on a Monday."""
LEASE = DEFAULT_LEASE
"""The dispatch's lease: the runtime's ``timer_lease``, by default the timers' own."""

CLINIC = "TH-SYN-CLINIC-MAIL"
CLINIC_ADDRESS = "intake@clinic-m.th-syn.example"
FOCAL_HOOK = "LA-SYN-FOCAL-HOOK"
FOCAL_MAIL = "LA-SYN-FOCAL-MAIL"
FOCAL_INBOX = "LA-SYN-FOCAL-INBOX"
SHELTER_MM = "MM-SYN-SHELTER-INBOX"

_AGENCY = """\
  - id: {id}
    name: Synthetic {kind} {id}
    country: {country}
    province: {province}
    agency_types: [{types}]
    services: [{services}]
    languages: [{languages}]
    corridors: []
    contact_channel: {channel}
{address}    accepts_new_cases: true
    source: synthetic
    last_verified: 2026-11-01
    synthetic: true
"""


def agency_yaml(
    id: str, country: str, languages: str, channel: str, address: str | None = None
) -> str:
    kinds = {
        "TH": ("Clinic", "Chiang Rai", "health", "clinical_care"),
        "LA": ("Focal Point", "Vientiane Capital", "government_social_welfare", "repatriation"),
        "MM": ("Shelter", "Yangon", "shelter", "safety_and_shelter"),
    }
    kind, province, types, services = kinds[country]
    return _AGENCY.format(
        id=id,
        kind=kind,
        country=country,
        province=province,
        types=types,
        services=services,
        languages=languages,
        channel=channel,
        address=f"    contact_address: {address}\n" if address else "",
    )


def write_directory(folder: Path) -> Path:
    """Four synthetic agencies, one per way of being reached, and a Myanmar shelter."""
    folder.mkdir()
    (folder / "th.yaml").write_text(
        "country: TH\nagencies:\n" + agency_yaml(CLINIC, "TH", "th, en", "email", CLINIC_ADDRESS),
        encoding="utf-8",
    )
    (folder / "la.yaml").write_text(
        "country: LA\nagencies:\n"
        # Hmong first: no template is written in Hmong, so the Lao text is sent.
        + agency_yaml(FOCAL_HOOK, "LA", "hmn, lo, en", "webhook", "https://hook.la-syn.example/r")
        + agency_yaml(FOCAL_MAIL, "LA", "lo, th, en", "email", "focal@mail.la-syn.example")
        + agency_yaml(FOCAL_INBOX, "LA", "lo", "in_app"),
        encoding="utf-8",
    )
    (folder / "mm.yaml").write_text(
        "country: MM\nagencies:\n" + agency_yaml(SHELTER_MM, "MM", "kar, my", "in_app"),
        encoding="utf-8",
    )
    return folder


# -- the receivers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Mailbox:
    """An aiosmtpd handler that keeps what it accepts; ``refusals`` answer DATA first."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.refusals: list[str] = []

    @property
    def messages(self) -> list[EmailMessage]:
        parsed = [message_from_bytes(raw, policy=default_policy) for raw in self.raw]
        return [m for m in parsed if isinstance(m, EmailMessage)]

    def ids(self) -> Counter[str]:
        return Counter(str(m["X-SOP-Engine-Message-Id"]) for m in self.messages)

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self.refusals:
            return self.refusals.pop(0)
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        self.raw.append(content)
        return "250 Message accepted"


@pytest.fixture
def mail() -> Iterator[tuple[Mailbox, int]]:
    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()


class HookReceiver:
    """Verifies each POST's signature with ``standardwebhooks`` (401 when it fails) and
    answers ``status``; keeps the headers and payload of every verified request."""

    def __init__(self) -> None:
        self.secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self.status = 204
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = Webhook(receiver.secret).verify(body, headers)
                except WebhookVerificationError:
                    self.send_response(401)
                else:
                    receiver.received.append((headers, payload))
                    self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/referrals"

    def ids(self) -> Counter[str]:
        return Counter(headers["webhook-id"] for headers, _ in self.received)


@pytest.fixture
def hooks() -> Iterator[HookReceiver]:
    receiver = HookReceiver()
    thread = threading.Thread(target=receiver.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


# -- the runtime, the directory and the channels ---------------------------------------------------

_survivor_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def keyring() -> MasterKeyring:
    return MasterKeyring(MasterKey.generate("test"))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture(scope="module")
def recipients(tmp_path_factory: pytest.TempPathFactory) -> ServiceDirectory:
    """The tests' agencies and this module's, whom referrals may be sent to."""
    mine = load_directory(write_directory(tmp_path_factory.mktemp("recipients") / "directory"))
    base = agency_directory()
    return dataclasses.replace(base, agencies=base.agencies + mine.agencies)


@pytest.fixture
def runtime(
    engine: Engine,
    library: SopLibrary,
    keyring: MasterKeyring,
    clock: ManualClock,
    recipients: ServiceDirectory,
) -> Runtime:
    """A runtime on SQLite, then on PostgreSQL: a test using it runs once on each."""
    return Runtime(engine, library, keyring, clock, directory=recipients)


@pytest.fixture
def caseworker() -> Actor:
    return Actor("u-cw", "caseworker", "TH-NGO-1", ("ngo",))


@pytest.fixture
def directory(tmp_path: Path, hooks: HookReceiver) -> ServiceDirectory:
    loaded = load_directory(write_directory(tmp_path / "directory"))
    agencies = tuple(
        dataclasses.replace(a, contact_address=hooks.url) if a.id == FOCAL_HOOK else a
        for a in loaded.agencies
    )
    return dataclasses.replace(loaded, agencies=agencies)


@pytest.fixture
def channels(
    runtime: Runtime, mail: tuple[Mailbox, int], hooks: HookReceiver
) -> Iterator[list[Channel]]:
    webhook = WebhookChannel(hooks.secret, timeout=5)
    yield [
        InboxChannel(runtime.db),
        SmtpChannel("127.0.0.1", mail[1], starttls=False, timeout=5),
        webhook,
    ]
    webhook.close()


@pytest.fixture
def mailbox(mail: tuple[Mailbox, int]) -> Mailbox:
    return mail[0]


def referral_in_action_plan(runtime: Runtime, caseworker: Actor) -> str:
    """A corridor referral (Thailand to Lao PDR) in ``action_plan``, assessed medium risk."""
    view = runtime.create_referral(
        sop_key="example.corridor",
        sop_version=None,
        actor=caseworker,
        origin_country="TH",
        destination_country="LA",
        incident_at=runtime.clock.now() - timedelta(hours=30),
        facts={
            "survivor_age": 24,
            "survivor_name": f"Synthetic Survivor {next(_survivor_numbers):03d}",
        },
    )
    code = view.case_code
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    runtime.fire(
        code, "record_consent", caseworker, {"facts": {"safe_contact_method": "text_message"}}
    )
    facts = {"risk_level": "medium", "service_needed": "clinical_care", "safety_plan_agreed": True}
    runtime.fire(code, "complete_assessment", caseworker, {"facts": facts})
    return code


def refer_for_health_care(runtime: Runtime, caseworker: Actor, agency: str) -> str:
    """Writes two notifications to ``agency``: task_assigned and referral_received."""
    code = referral_in_action_plan(runtime, caseworker)
    runtime.grant_consent(code, scope="health_referral", actor=caseworker, given_by="survivor")
    runtime.fire(code, "refer_for_health_care", caseworker, {"recipient_agency_id": agency})
    return code


def refer_for_return(runtime: Runtime, caseworker: Actor, agency: str) -> str:
    """Writes one notification to ``agency``: referral_received, due in a day."""
    code = referral_in_action_plan(runtime, caseworker)
    runtime.grant_consent(code, scope="cross_border_return", actor=caseworker, given_by="survivor")
    runtime.fire(code, "refer_for_return", caseworker, {"recipient_agency_id": agency})
    return code


def dispatch(
    runtime: Runtime, directory: ServiceDirectory, channels: list[Channel], **options: Any
) -> DispatchReport:
    return dispatch_pending(runtime, directory, channels, worker="test-dispatch", **options)


def outbox(runtime: Runtime, **where: Any) -> list[Any]:
    o = tables.outbox
    query = select(o).where(*(o.c[k] == v for k, v in where.items())).order_by(o.c.template)
    with runtime.db.connect() as conn:
        return list(conn.execute(query).all())


def inbox(runtime: Runtime, **where: Any) -> list[Any]:
    i = tables.inbox_messages
    query = select(i).where(*(i.c[k] == v for k, v in where.items())).order_by(i.c.template)
    with runtime.db.connect() as conn:
        return list(conn.execute(query).all())


# -- delivery --------------------------------------------------------------------------------------


def test_email_arrives_once_in_thai_with_the_case_code_and_nothing_personal(
    runtime: Runtime,
    caseworker: Actor,
    directory: ServiceDirectory,
    channels: list[Channel],
    mailbox: Mailbox,
) -> None:
    code = refer_for_health_care(runtime, caseworker, CLINIC)
    messages = outbox(runtime)

    assert dispatch(runtime, directory, channels) == DispatchReport(sent=2)
    assert dispatch(runtime, directory, channels) == DispatchReport()

    assert mailbox.ids() == Counter({m.id: 1 for m in messages})
    for row in messages:
        [email] = [m for m in mailbox.messages if m["X-SOP-Engine-Message-Id"] == row.id]
        expected = render(row.template, "th", row.context, timezone="Asia/Bangkok")
        body = email.get_content()
        assert email["Subject"] == expected.subject  # Thai, through RFC 2047 and back
        assert code in email["Subject"]
        assert "เคส" in email["Subject"]
        assert "2026-03-02 09:30 (UTC+07:00)" in body  # 02:30 UTC in Bangkok
        assert email["To"] == CLINIC_ADDRESS
        assert email["Message-ID"] == f"<{row.id}@sop-engine>"
        shown = body + " ".join(str(value) for value in email.values())
        assert "Synthetic Survivor" not in shown
        assert "survivor" not in shown.lower()
    assert [(m.status, m.attempts) for m in outbox(runtime)] == [("sent", 1), ("sent", 1)]
    assert [(r.language, r.recipient_agency_id) for r in inbox(runtime)] == [("th", CLINIC)] * 2


def test_a_webhook_arrives_signed_in_the_agencys_language(
    runtime: Runtime,
    caseworker: Actor,
    directory: ServiceDirectory,
    channels: list[Channel],
    hooks: HookReceiver,
    mailbox: Mailbox,
) -> None:
    code = refer_for_return(runtime, caseworker, FOCAL_HOOK)
    [message] = outbox(runtime)

    assert dispatch(runtime, directory, channels) == DispatchReport(sent=1)

    [(headers, payload)] = hooks.received  # verified by the receiver
    expected = render("referral_received", "lo", message.context, timezone="Asia/Vientiane")
    assert headers["webhook-id"] == message.id
    assert payload == {
        "type": "notification.referral_received",
        "message_id": message.id,
        "case_code": code,
        "template": "referral_received",
        "recipient_role": "agency_focal_point",
        "recipient_agency_id": FOCAL_HOOK,
        "language": "lo",
        "subject": expected.subject,
        "body": expected.body,
    }
    assert "2026-03-03 08:30 (UTC+07:00)" in payload["body"]
    assert mailbox.raw == []
    [row] = inbox(runtime)
    assert (row.message_id, row.language, row.subject) == (message.id, "lo", expected.subject)


@pytest.mark.parametrize(
    ("agency", "language"),
    [(FOCAL_INBOX, "lo"), ("LA-SW-1", "en")],
    ids=["in-app agency", "agency not in the directory"],
)
def test_an_agency_without_email_or_webhook_reads_the_in_app_inbox(
    runtime: Runtime,
    caseworker: Actor,
    directory: ServiceDirectory,
    channels: list[Channel],
    hooks: HookReceiver,
    mailbox: Mailbox,
    agency: str,
    language: str,
) -> None:
    refer_for_return(runtime, caseworker, agency)

    assert dispatch(runtime, directory, channels) == DispatchReport(sent=1)
    assert (mailbox.raw, hooks.received) == ([], [])
    [row] = inbox(runtime)
    assert (row.recipient_agency_id, row.language) == (agency, language)


def test_without_email_configured_an_email_agency_reads_the_in_app_inbox(
    runtime: Runtime, caseworker: Actor, directory: ServiceDirectory, mailbox: Mailbox
) -> None:
    refer_for_return(runtime, caseworker, FOCAL_MAIL)
    only_inbox: list[Channel] = [InboxChannel(runtime.db)]

    assert dispatch(runtime, directory, only_inbox) == DispatchReport(sent=1)
    assert mailbox.raw == []
    assert [r.recipient_agency_id for r in inbox(runtime)] == [FOCAL_MAIL]


# -- retries ---------------------------------------------------------------------------------------


def test_a_server_that_says_try_later_gets_the_message_after_the_backoff(
    runtime: Runtime,
    caseworker: Actor,
    clock: ManualClock,
    directory: ServiceDirectory,
    channels: list[Channel],
    mailbox: Mailbox,
) -> None:
    refer_for_return(runtime, caseworker, FOCAL_MAIL)
    mailbox.refusals.append("451 4.3.0 Try again later")

    assert dispatch(runtime, directory, channels) == DispatchReport(retried=1)
    [message] = outbox(runtime)
    assert (message.status, message.attempts) == ("pending", 1)
    assert message.next_attempt_at == clock.now() + backoff(1) > clock.now()
    assert message.last_error == "DeliveryError:smtp_451"
    assert mailbox.raw == []

    assert dispatch(runtime, directory, channels) == DispatchReport()  # not due yet
    clock.advance(backoff(1))
    assert dispatch(runtime, directory, channels) == DispatchReport(sent=1)

    assert mailbox.ids() == Counter({message.id: 1})
    [message] = outbox(runtime)
    assert (message.status, message.attempts) == ("sent", 2)
    assert len(inbox(runtime)) == 1  # reached on the first attempt, not duplicated by the second


@pytest.mark.parametrize(
    ("status", "attempts", "final"),
    [(400, 1, True), (503, MAX_ATTEMPTS, False)],
    ids=["400 refused for good: dead at once", "503 busy: dead after the last attempt"],
)
def test_a_refused_message_dies_with_an_incident_and_a_notice(
    runtime: Runtime,
    caseworker: Actor,
    clock: ManualClock,
    directory: ServiceDirectory,
    channels: list[Channel],
    hooks: HookReceiver,
    status: int,
    attempts: int,
    final: bool,
) -> None:
    code = refer_for_return(runtime, caseworker, FOCAL_HOOK)
    [message] = outbox(runtime)
    hooks.status = status

    for attempt in range(1, attempts):
        assert dispatch(runtime, directory, channels) == DispatchReport(retried=1)
        [row] = outbox(runtime, id=message.id)
        assert (row.status, row.attempts) == ("pending", attempt)
        assert row.next_attempt_at == clock.now() + backoff(attempt)
        clock.advance(backoff(attempt))
    assert dispatch(runtime, directory, channels) == DispatchReport(dead=1)

    [row] = outbox(runtime, id=message.id)
    assert (row.status, row.attempts, row.last_error) == (
        "dead",
        attempts,
        f"DeliveryError:http_{status}",
    )
    assert hooks.ids() == Counter({message.id: attempts})  # every attempt verified
    entries = timeline(runtime, message.referral_id, "delivery_failed")
    assert [e.details for e in entries] == [
        {
            "message_id": message.id,
            "template": "referral_received",
            "recipient_role": "agency_focal_point",
            "recipient_agency_id": FOCAL_HOOK,
            "attempts": attempts,
            "error": f"DeliveryError:http_{status}",
            "final": final,
        }
    ]
    assert timeline(runtime, message.referral_id, "delivered") == []
    [check] = runtime.verify_timeline(code)
    assert check.ok

    # The coordinators' notice has no agency: it goes to the in-app inbox only (no
    # coordinator here has an e-mail address), in the SOP's time zone.
    [notice] = outbox(runtime, template="delivery_failed")
    assert (notice.recipient_role, notice.recipient_agency_id, notice.status) == (
        "coordinator",
        None,
        "pending",
    )
    assert dispatch(runtime, directory, channels) == DispatchReport(sent=1)
    assert hooks.ids() == Counter({message.id: attempts})
    [shown] = inbox(runtime, template="delivery_failed")
    assert (shown.recipient_role, shown.recipient_agency_id, shown.language) == (
        "coordinator",
        None,
        "en",
    )
    assert shown.subject == f"Notification not delivered: case {code}"
    assert "reach the recipient another way" in shown.body


def timeline(runtime: Runtime, referral_id: str, kind: str) -> list[Any]:
    t = tables.timeline_entries
    query = select(t).where(t.c.referral_id == referral_id, t.c.kind == kind)
    with runtime.db.connect() as conn:
        return list(conn.execute(query).all())


class DispatcherDied(Exception):
    """Stands for the process ending between sending a message and recording it."""


class DiesBeforeMarkingSent(Runtime):
    def mark_sent(self, claim: OutboxClaim, **outcome: Any) -> bool:
        raise DispatcherDied


@pytest.mark.parametrize("agency", [FOCAL_MAIL, FOCAL_HOOK], ids=["email", "webhook"])
def test_a_crash_after_sending_sends_again_with_the_same_id_and_one_inbox_row(
    runtime: Runtime,
    keyring: MasterKeyring,
    caseworker: Actor,
    clock: ManualClock,
    directory: ServiceDirectory,
    channels: list[Channel],
    mailbox: Mailbox,
    hooks: HookReceiver,
    agency: str,
) -> None:
    refer_for_return(runtime, caseworker, agency)
    [message] = outbox(runtime)
    doomed = DiesBeforeMarkingSent(runtime.db, runtime.library, keyring, clock)

    with pytest.raises(DispatcherDied):
        dispatch(doomed, directory, channels)
    assert dispatch(runtime, directory, channels) == DispatchReport()  # still leased
    clock.advance(LEASE + timedelta(seconds=1))
    assert dispatch(runtime, directory, channels) == DispatchReport(sent=1)

    received = mailbox.ids() if agency == FOCAL_MAIL else hooks.ids()
    assert received == Counter({message.id: 2})  # at least once, and recognisably the same
    if agency == FOCAL_MAIL:
        assert {m["Message-ID"] for m in mailbox.messages} == {f"<{message.id}@sop-engine>"}
    assert [r.message_id for r in inbox(runtime)] == [message.id]
    [row] = outbox(runtime)
    assert (row.status, row.attempts) == ("sent", 1)


# -- failures that are not the receiver's ----------------------------------------------------------


def test_a_template_bug_is_a_failed_attempt_and_the_batch_goes_on(
    runtime: Runtime,
    caseworker: Actor,
    tmp_path: Path,
    directory: ServiceDirectory,
    channels: list[Channel],
    mailbox: Mailbox,
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    (templates / "referral_received" / "th.j2").write_text(
        "{# review: pending native-speaker review #}\n"
        "{% block subject %}เคส {{ case_code }}{% endblock %}"
        "{% block body %}{{ survivor_name }}{% endblock %}\n",
        encoding="utf-8",
    )
    refer_for_health_care(runtime, caseworker, CLINIC)

    report = dispatch(runtime, directory, channels, renderer=Renderer(templates))

    assert report == DispatchReport(sent=1, retried=1)
    [broken] = outbox(runtime, template="referral_received")
    assert (broken.status, broken.last_error) == ("pending", "UndefinedError:render")
    [sent] = outbox(runtime, template="task_assigned")
    assert mailbox.ids() == Counter({sent.id: 1})


class BrokenChannel:
    """A channel with a bug: it raises something other than a DeliveryError, with an
    address in the message that must not reach the outbox."""

    name = "webhook"

    def send(self, message: OutgoingMessage) -> None:
        raise RuntimeError(f"cannot post to {message.address}")


def test_an_unexpected_channel_error_is_a_failed_attempt_without_the_address(
    runtime: Runtime, caseworker: Actor, directory: ServiceDirectory
) -> None:
    refer_for_return(runtime, caseworker, FOCAL_HOOK)
    channels: list[Channel] = [InboxChannel(runtime.db), BrokenChannel()]

    assert dispatch(runtime, directory, channels) == DispatchReport(retried=1)
    [message] = outbox(runtime)
    assert message.last_error == "RuntimeError:webhook"


class SlowChannel:
    """Each send takes ``takes`` of the manual clock; after it, a rival dispatcher tries to
    claim what is due, and keeps what it got."""

    name = "email"

    def __init__(self, runtime: Runtime, clock: ManualClock, takes: timedelta) -> None:
        self.runtime, self.clock, self.takes = runtime, clock, takes
        self.sent: list[str] = []
        self.rival: list[OutboxClaim] = []

    def send(self, message: OutgoingMessage) -> None:
        self.clock.advance(self.takes)
        self.sent.append(message.message_id)
        self.rival += self.runtime.claim_outbox(10, worker="rival")


def test_a_slow_batch_renews_its_claims_so_no_other_dispatcher_takes_them(
    runtime: Runtime, caseworker: Actor, clock: ManualClock, directory: ServiceDirectory
) -> None:
    refer_for_health_care(runtime, caseworker, CLINIC)
    slow = SlowChannel(runtime, clock, LEASE * 0.6)  # the second message starts past half
    channels: list[Channel] = [InboxChannel(runtime.db), slow]

    assert dispatch(runtime, directory, channels) == DispatchReport(sent=2)
    assert slow.rival == []  # without renewal, the rival takes the second at 1.2 leases
    assert sorted(slow.sent) == sorted(m.id for m in outbox(runtime))
    assert {m.status for m in outbox(runtime)} == {"sent"}


def test_a_message_another_dispatcher_took_after_the_lease_is_left_to_it(
    runtime: Runtime, caseworker: Actor, clock: ManualClock, directory: ServiceDirectory
) -> None:
    refer_for_health_care(runtime, caseworker, CLINIC)
    slow = SlowChannel(runtime, clock, LEASE + timedelta(seconds=1))
    channels: list[Channel] = [InboxChannel(runtime.db), slow]

    # The first send outlasts the lease: the rival takes both messages, so neither is ours
    # to mark (the first was sent: at least once) nor to send.
    assert dispatch(runtime, directory, channels) == DispatchReport(skipped=2)
    assert len(slow.rival) == 2
    assert {m.status for m in outbox(runtime)} == {"pending"}
    assert len(slow.sent) == 1

    clock.advance(LEASE + timedelta(seconds=1))  # the rival died without sending
    slow.takes = timedelta(0)
    slow.rival = []
    assert dispatch(runtime, directory, channels) == DispatchReport(sent=2)
    assert {m.status for m in outbox(runtime)} == {"sent"}


def test_renewing_extends_only_the_outbox_claims_still_pending_and_ours(
    runtime: Runtime, caseworker: Actor, clock: ManualClock
) -> None:
    refer_for_health_care(runtime, caseworker, CLINIC)
    first, second = runtime.claim_outbox(10, worker="d1")
    assert runtime.mark_sent(first, channels=["email"])
    clock.advance(LEASE / 2)

    [renewed] = runtime.renew_outbox_claims([first, second])
    assert (renewed.id, renewed.lease_until) == (second.id, clock.now() + LEASE)
    assert runtime.renew_outbox_claims([second]) == []  # its old lease is not the row's now
    clock.advance(LEASE)
    assert runtime.claim_outbox(10, worker="d2") == []  # renewed: 1.5 leases, still d1's
    clock.advance(LEASE)
    [taken] = runtime.claim_outbox(10, worker="d2")
    assert taken.id == second.id
    assert runtime.renew_outbox_claims([renewed]) == []
    assert runtime.renew_outbox_claims([]) == []


def test_dispatch_needs_the_in_app_inbox_and_one_channel_per_name(
    runtime: Runtime, directory: ServiceDirectory
) -> None:
    with pytest.raises(ValueError, match="in-app inbox"):
        dispatch(runtime, directory, [SmtpChannel("127.0.0.1", 25)])
    twice: list[Channel] = [InboxChannel(runtime.db), InboxChannel(runtime.db)]
    with pytest.raises(ValueError, match="two channels named 'in_app'"):
        dispatch(runtime, directory, twice)


# -- recipients and channels -----------------------------------------------------------------------


def test_the_recipient_reads_the_first_language_written_in_their_countrys_time(
    directory: ServiceDirectory, hooks: HookReceiver
) -> None:
    template = "referral_received"
    assert find_recipient(directory, CLINIC, template) == Recipient(
        "th", "Asia/Bangkok", "email", CLINIC_ADDRESS
    )
    assert find_recipient(directory, FOCAL_HOOK, template) == Recipient(
        "lo", "Asia/Vientiane", "webhook", hooks.url
    )
    assert find_recipient(directory, FOCAL_INBOX, template) == Recipient("lo", "Asia/Vientiane")
    # Karen has no template, Burmese has; Myanmar is UTC+06:30.
    assert find_recipient(directory, SHELTER_MM, template) == Recipient("my", "Asia/Yangon")
    assert find_recipient(directory, None, template) == Recipient("en", "UTC")
    assert find_recipient(directory, "LA-SW-1", template) == Recipient("en", "UTC")


def test_a_recipient_in_myanmar_reads_the_due_time_in_yangon(
    runtime: Runtime, caseworker: Actor, directory: ServiceDirectory, channels: list[Channel]
) -> None:
    """The example corridor goes to Lao PDR only (a Myanmar shelter cannot receive it), so its
    message is readdressed to the shelter here: dispatch reads the zone off the directory."""
    refer_for_return(runtime, caseworker, FOCAL_INBOX)
    o = tables.outbox
    with runtime.db.begin() as conn:
        conn.execute(o.update().values(recipient_agency_id=SHELTER_MM))

    assert dispatch(runtime, directory, channels) == DispatchReport(sent=1)
    [row] = inbox(runtime)
    assert row.language == "my"
    assert "2026-03-03 08:00 (UTC+06:30)" in row.body  # 01:30 UTC


def test_channels_come_from_the_settings(
    runtime: Runtime,
    caseworker: Actor,
    directory: ServiceDirectory,
    mail: tuple[Mailbox, int],
    hooks: HookReceiver,
) -> None:
    assert [
        c.name for c in build_channels(Settings(smtp_host=None, webhook_secret=None), runtime.db)
    ] == ["in_app"]
    settings = Settings(
        smtp_host="127.0.0.1",
        smtp_port=mail[1],
        smtp_starttls=False,
        smtp_sender="referrals@sop-engine.example",
        webhook_secret=SecretStr(hooks.secret),
    )
    channels = build_channels(settings, runtime.db)
    assert [c.name for c in channels] == ["in_app", "email", "webhook"]

    refer_for_return(runtime, caseworker, FOCAL_MAIL)
    refer_for_return(runtime, caseworker, FOCAL_HOOK)
    assert dispatch(runtime, directory, channels) == DispatchReport(sent=2)
    [email] = mail[0].messages
    assert email["From"] == "referrals@sop-engine.example"
    assert len(hooks.received) == 1
