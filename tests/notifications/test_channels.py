"""Each channel against a real receiver on 127.0.0.1: an SMTP server (aiosmtpd), a webhook
receiver that verifies Standard Webhooks signatures, the in-app inbox on SQLite and
PostgreSQL. What arrives, that a second delivery carries the same id, and which failures
are worth a retry.

Every agency, address and case here is synthetic.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import secrets
import socket
import ssl
import threading
import time
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
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine, select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

import notifications.channels
import notifications.dispatch
from notifications.catalogue import LANGUAGES
from notifications.channels import (
    DeliveryError,
    InboxChannel,
    OutgoingMessage,
    SmtpChannel,
    WebhookChannel,
    message_id_header,
)
from notifications.render import render
from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from tests.agencies import agency_directory

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
CASE_CODE = "R7KQ-M2XD-9PTA"
CONTEXT = {
    "case_code": CASE_CODE,
    "event": "refer_for_health_care",
    "state": "health_referral.sent",
    "service": "clinical care",
    "ask": "Acknowledge the referral for clinical care",
    "due_at": "2026-03-02T02:30:00+00:00",
}
ADDRESS = "intake@clinic-m.th-syn.example"


def outgoing(language: str = "th", **changes: Any) -> OutgoingMessage:
    """A referral_received for a Thai clinic, rendered as the dispatcher renders it."""
    rendered = render("referral_received", language, CONTEXT, timezone="Asia/Bangkok")
    fields: dict[str, Any] = {
        "message_id": "5f0c8d0e-2f7a-4c36-9d51-6f1f0e3b2a10",
        "referral_id": "00000000-0000-4000-8000-000000000000",
        "case_code": CASE_CODE,
        "template": "referral_received",
        "recipient_role": "agency_focal_point",
        "recipient_agency_id": "TH-SYN-CLINIC-MAIL",
        "address": ADDRESS,
        "language": rendered.language,
        "subject": rendered.subject,
        "body": rendered.body,
        "created_at": START,
    }
    return OutgoingMessage(**(fields | changes))


def body_of(email: EmailMessage) -> str:
    """The text a mail client shows, its lines ended as Python ends them."""
    content = email.get_content()
    assert isinstance(content, str)
    return "\n".join(content.strip().splitlines())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# -- an SMTP server ------------------------------------------------------------------------------


class Mailbox:
    """An aiosmtpd handler that keeps every message it accepts. ``refusals`` are replies to
    DATA used up one per delivery (``451 ...`` then acceptance); ``refused_recipients``
    answers RCPT for those addresses."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.tls: list[bool] = []
        self.refusals: list[str] = []
        self.refused_recipients: dict[str, str] = {}

    @property
    def messages(self) -> list[EmailMessage]:
        parsed = [message_from_bytes(raw, policy=default_policy) for raw in self.raw]
        return [m for m in parsed if isinstance(m, EmailMessage)]

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refused_recipients:
            return self.refused_recipients[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self.refusals:
            return self.refusals.pop(0)
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        self.raw.append(content)
        self.tls.append(session.ssl is not None)
        return "250 Message accepted"


class MailServer:
    def __init__(self, **options: Any) -> None:
        self.mailbox = Mailbox()
        self.port = free_port()
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port, **options)

    def channel(self, **options: Any) -> SmtpChannel:
        return SmtpChannel("127.0.0.1", self.port, **({"starttls": False, "timeout": 5} | options))


@pytest.fixture
def mail() -> Iterator[MailServer]:
    server = MailServer()
    server.controller.start()
    yield server
    server.controller.stop()


# -- a webhook receiver --------------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class HookReceiver:
    """Receives POSTs on 127.0.0.1, verifies each signature with the ``standardwebhooks``
    library and answers 401 when it fails, else ``status`` (after ``delay`` seconds)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.status = 204
        self.delay = 0.0
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.rejected = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = Webhook(receiver.secret).verify(body, headers)
                except WebhookVerificationError:
                    receiver.rejected += 1
                    self.send_response(401)
                else:
                    receiver.received.append((headers, payload))
                    time.sleep(receiver.delay)
                    self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/referrals"


@pytest.fixture
def hooks() -> Iterator[HookReceiver]:
    receiver = HookReceiver(new_secret())
    thread = threading.Thread(target=receiver.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def webhook(hooks: HookReceiver) -> Iterator[WebhookChannel]:
    channel = WebhookChannel(hooks.secret, timeout=5)
    yield channel
    channel.close()


# -- email -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_an_email_arrives_with_its_text_intact_in_every_script(
    mail: MailServer, language: str
) -> None:
    message = outgoing(language)
    mail.channel().send(message)

    [email] = mail.mailbox.messages
    assert email["Subject"] == message.subject
    assert body_of(email) == message.body
    assert email.get_content_type() == "text/plain"
    assert email.get_content_charset() == "utf-8"
    assert email["Content-Language"] == language
    assert CASE_CODE in email["Subject"]
    assert "2026-03-02 09:30 (UTC+07:00)" in body_of(email)
    # 7-bit clean: no relay can mangle Thai, Khmer, Lao or Burmese on the way.
    assert mail.mailbox.raw[0].isascii()


def test_an_email_names_its_message_id_and_is_automatic(mail: MailServer) -> None:
    mail.channel(sender="referrals@sop-engine.example").send(outgoing())

    [email] = mail.mailbox.messages
    assert email["Message-ID"] == "<5f0c8d0e-2f7a-4c36-9d51-6f1f0e3b2a10@sop-engine>"
    assert email["X-SOP-Engine-Message-Id"] == "5f0c8d0e-2f7a-4c36-9d51-6f1f0e3b2a10"
    assert email["From"] == "referrals@sop-engine.example"
    assert email["To"] == ADDRESS
    assert email["Auto-Submitted"] == "auto-generated"
    assert email["Date"].datetime == START


def test_an_email_sent_twice_carries_the_same_message_id(mail: MailServer) -> None:
    """A dispatcher that died after sending sends again: the reader's client can tell."""
    channel = mail.channel()
    channel.send(outgoing())
    channel.send(outgoing())

    first, second = mail.mailbox.messages
    assert first["Message-ID"] == second["Message-ID"] == message_id_header(outgoing().message_id)
    assert first["Date"] == second["Date"]


def test_a_busy_server_is_tried_again(mail: MailServer) -> None:
    mail.mailbox.refusals.append("451 4.3.0 Try again later")
    channel = mail.channel()
    with pytest.raises(DeliveryError) as refused:
        channel.send(outgoing())
    assert (refused.value.retryable, refused.value.code) == (True, "smtp_451")
    assert mail.mailbox.raw == []

    channel.send(outgoing())
    assert len(mail.mailbox.raw) == 1


def test_a_refused_recipient_is_final_and_not_named_in_the_error(mail: MailServer) -> None:
    mail.mailbox.refused_recipients[ADDRESS] = "550 5.1.1 No such mailbox"
    with pytest.raises(DeliveryError) as refused:
        mail.channel().send(outgoing())
    assert (refused.value.retryable, refused.value.code) == (False, "smtp_550")
    assert ADDRESS not in str(refused.value) + repr(refused.value)


def test_an_email_without_an_address_is_refused() -> None:
    with pytest.raises(DeliveryError, match="email_no_address") as refused:
        SmtpChannel("127.0.0.1", 1).send(outgoing(address=None))
    assert refused.value.retryable is False


def test_no_server_listening_is_tried_again() -> None:
    with pytest.raises(DeliveryError) as refused:
        SmtpChannel("127.0.0.1", free_port(), starttls=False, timeout=2).send(outgoing())
    assert (refused.value.retryable, refused.value.code) == (True, "smtp_connect")


def test_a_server_that_never_answers_times_out_and_is_tried_again() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the connection is made, the greeting never comes
        channel = SmtpChannel("127.0.0.1", silent.getsockname()[1], starttls=False, timeout=0.3)
        with pytest.raises(DeliveryError) as refused:
            channel.send(outgoing())
    assert (refused.value.retryable, refused.value.code) == (True, "smtp_timeout")


def accept_sop_engine(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    good = isinstance(auth_data, LoginPassword) and auth_data == (b"sop-engine", b"s3cret")
    return AuthResult(success=good, handled=False)  # not handled: the server answers 535


def test_the_channel_logs_in_with_its_credentials() -> None:
    server = MailServer(authenticator=accept_sop_engine, auth_require_tls=False)
    server.controller.start()
    try:
        server.channel(username="sop-engine", password="s3cret").send(outgoing())
        with pytest.raises(DeliveryError) as refused:
            server.channel(username="sop-engine", password="wrong").send(outgoing())
    finally:
        server.controller.stop()
    assert len(server.mailbox.raw) == 1
    assert (refused.value.retryable, refused.value.code) == (False, "smtp_535")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sop-engine test SMTP")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_starttls_is_used_and_the_certificate_verified(certificate: tuple[Path, Path]) -> None:
    cert_file, key_file = certificate
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    server = MailServer(tls_context=server_context, require_starttls=True)
    server.controller.start()
    try:
        trusted = ssl.create_default_context(cafile=str(cert_file))
        server.channel(starttls=True, tls_context=trusted).send(outgoing())
        with pytest.raises(DeliveryError) as plain:
            server.channel(starttls=False).send(outgoing())
        with pytest.raises(DeliveryError) as untrusted:
            server.channel(starttls=True).send(outgoing())  # the system's authorities
    finally:
        server.controller.stop()
    assert server.mailbox.tls == [True]
    assert (plain.value.retryable, plain.value.code) == (False, "smtp_530")
    assert (untrusted.value.retryable, untrusted.value.code) == (False, "smtp_tls")


# -- webhooks ------------------------------------------------------------------------------------


def test_a_webhook_is_signed_and_carries_only_the_notification(
    hooks: HookReceiver, webhook: WebhookChannel
) -> None:
    message = outgoing(address=hooks.url)
    webhook.send(message)

    [(headers, payload)] = hooks.received
    assert payload == {
        "type": "notification.referral_received",
        "message_id": message.message_id,
        "case_code": CASE_CODE,
        "template": "referral_received",
        "recipient_role": "agency_focal_point",
        "recipient_agency_id": "TH-SYN-CLINIC-MAIL",
        "language": "th",
        "subject": message.subject,
        "body": message.body,
    }
    assert headers["webhook-id"] == message.message_id
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert headers["webhook-signature"].startswith("v1,")
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert hooks.url not in json.dumps(payload)


def test_a_webhook_sent_twice_carries_the_same_webhook_id(
    hooks: HookReceiver, webhook: WebhookChannel
) -> None:
    webhook.send(outgoing(address=hooks.url))
    webhook.send(outgoing(address=hooks.url))

    (first, _), (second, _) = hooks.received
    assert first["webhook-id"] == second["webhook-id"] == outgoing().message_id


def test_a_receiver_with_another_secret_refuses_the_signature(hooks: HookReceiver) -> None:
    stranger = WebhookChannel(new_secret(), timeout=5)
    with pytest.raises(DeliveryError) as refused:
        stranger.send(outgoing(address=hooks.url))
    stranger.close()
    assert (hooks.rejected, hooks.received) == (1, [])
    assert (refused.value.retryable, refused.value.code) == (False, "http_401")


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (400, False),
        (404, False),
        (410, False),
        (301, False),
        (408, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
    ],
)
def test_what_a_webhook_answer_means(
    hooks: HookReceiver, webhook: WebhookChannel, status: int, retryable: bool
) -> None:
    hooks.status = status
    with pytest.raises(DeliveryError) as refused:
        webhook.send(outgoing(address=hooks.url))
    assert (refused.value.retryable, refused.value.code) == (retryable, f"http_{status}")


@pytest.mark.parametrize("status", [200, 202, 204])
def test_any_2xx_is_a_delivery(hooks: HookReceiver, webhook: WebhookChannel, status: int) -> None:
    hooks.status = status
    webhook.send(outgoing(address=hooks.url))
    assert len(hooks.received) == 1


def test_a_slow_receiver_times_out_and_is_tried_again(hooks: HookReceiver) -> None:
    hooks.delay = 1.0
    impatient = WebhookChannel(hooks.secret, timeout=0.2)
    with pytest.raises(DeliveryError) as refused:
        impatient.send(outgoing(address=hooks.url))
    impatient.close()
    assert (refused.value.retryable, refused.value.code) == (True, "http_timeout")


def test_nobody_listening_is_tried_again(webhook: WebhookChannel) -> None:
    with pytest.raises(DeliveryError) as refused:
        webhook.send(outgoing(address=f"http://127.0.0.1:{free_port()}/referrals"))
    assert (refused.value.retryable, refused.value.code) == (True, "http_connect")


@pytest.mark.parametrize(
    ("address", "code"),
    [(None, "webhook_no_address"), ("ftp://hooks.th-syn.example/x", "http_bad_url")],
)
def test_a_webhook_without_a_usable_address_is_final(
    webhook: WebhookChannel, address: str | None, code: str
) -> None:
    with pytest.raises(DeliveryError) as refused:
        webhook.send(outgoing(address=address))
    assert (refused.value.retryable, refused.value.code) == (False, code)


# -- the in-app inbox ------------------------------------------------------------------------------


@pytest.fixture
def runtime(engine: Engine, library: SopLibrary) -> Runtime:
    return Runtime(
        engine,
        library,
        MasterKeyring(MasterKey.generate("test")),
        ManualClock(START),
        directory=agency_directory(),
    )


def new_referral(runtime: Runtime) -> tuple[str, str]:
    """The id and case code of a fresh referral on the example corridor."""
    view = runtime.create_referral(
        sop_key="example.corridor",
        sop_version=None,
        actor=Actor("u-cw", "caseworker", "TH-NGO-1", ("ngo",)),
        origin_country="TH",
        destination_country="LA",
        incident_at=START - timedelta(hours=30),
        facts={"survivor_age": 24, "survivor_name": "Synthetic Survivor 001"},
    )
    return view.id, view.case_code


def test_the_inbox_keeps_one_row_per_message(runtime: Runtime) -> None:
    referral_id, code = new_referral(runtime)
    message = outgoing(referral_id=referral_id, case_code=code, address=None)
    inbox = InboxChannel(runtime.db)
    inbox.send(message)
    inbox.send(message)  # delivered again after a crash: nothing changes

    with runtime.db.connect() as conn:
        rows = conn.execute(select(tables.inbox_messages)).all()
    assert len(rows) == 1
    row = rows[0]
    assert (row.message_id, row.referral_id, row.case_code) == (
        message.message_id,
        referral_id,
        code,
    )
    assert (row.recipient_role, row.recipient_agency_id, row.template, row.language) == (
        "agency_focal_point",
        "TH-SYN-CLINIC-MAIL",
        "referral_received",
        "th",
    )
    assert (row.subject, row.body) == (message.subject, message.body)
    assert (row.created_at, row.read_at) == (START, None)


# -- the public surface ----------------------------------------------------------------------------


def test_the_public_surface_is_small() -> None:
    assert set(notifications.channels.__all__) == {
        "Channel",
        "DeliveryError",
        "InboxChannel",
        "OutgoingMessage",
        "SmtpChannel",
        "WebhookChannel",
        "message_id_header",
    }
    assert set(notifications.dispatch.__all__) == {
        "COUNTRY_TIMEZONES",
        "DispatchReport",
        "Recipient",
        "build_channels",
        "dispatch_pending",
        "find_recipient",
    }


def test_a_delivery_error_says_what_failed_and_whether_to_retry() -> None:
    error = DeliveryError(retryable=True, code="smtp_451")
    assert str(error) == "smtp_451"
    assert repr(error) == "DeliveryError(retryable=True, code='smtp_451')"
    assert isinstance(error, Exception)
