"""Channels: how a rendered notification leaves the process, one way of sending each.

A :class:`Channel` has a ``name`` (the directory's ``contact_channel`` word: ``email``,
``webhook``, ``in_app``) and ``send(message)``, which returns once the message is delivered
and raises :class:`DeliveryError` when it is not, saying whether a later attempt may succeed.

Delivery is at least once: a dispatcher that dies after sending and before recording it
sends again. Every message therefore carries its outbox id, the same on every attempt, and
each channel hands it to the receiver in the receiver's own terms: the in-app inbox's primary
key, the email's ``Message-ID`` (and ``X-SOP-Engine-Message-Id``), the webhook's
``webhook-id``. Receivers drop duplicates by it.

A message holds the case code, what is asked and by when; never a survivor's name, contact
or incident detail (the outbox context has none, and channels add none).

Exceptions::

    Exception
    └── DeliveryError      retryable: bool, code: str (never an address or the text)
"""

from __future__ import annotations

import json
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime
from typing import Any, Protocol

import httpx
from sqlalchemy import Engine, Executable
from sqlalchemy.dialects import postgresql, sqlite
from standardwebhooks import Webhook

from sop_engine.clock import Clock, SystemClock
from sop_engine.persistence import tables

__all__ = [
    "Channel",
    "DeliveryError",
    "InboxChannel",
    "OutgoingMessage",
    "SmtpChannel",
    "WebhookChannel",
    "message_id_header",
]

_INBOX = tables.inbox_messages
_EMAIL_POLICY = SMTP_POLICY.clone(cte_type="7bit")
"""CRLF line ends and a 7-bit clean message: Thai, Khmer, Lao and Burmese bodies travel
base64 or quoted-printable, subjects as RFC 2047 words, through any relay."""
_RETRYABLE_HTTP = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One rendered notification for one recipient, as every channel receives it.

    ``message_id`` is the outbox id: the same on every attempt, so that receivers drop
    duplicates by it. ``address`` is the email address or URL of the recipient's channel,
    or None (the in-app inbox needs none). ``referral_id`` is the engine's own key, for the
    in-app inbox; outside channels name the case by ``case_code`` only.
    """

    message_id: str
    referral_id: str
    case_code: str
    template: str
    recipient_role: str
    recipient_agency_id: str | None
    address: str | None
    language: str
    subject: str
    body: str
    created_at: datetime


class DeliveryError(Exception):
    """A channel could not deliver a message.

    ``retryable`` says whether a later attempt may succeed (a busy server, a timeout) or
    not (a refused address, a rejected request). ``code`` names the failure for the outbox's
    ``last_error`` and the timeline, such as ``smtp_451`` or ``http_400``: it never holds an
    address or the message's text.
    """

    def __init__(self, retryable: bool, code: str) -> None:
        super().__init__(code)
        self.retryable = retryable
        self.code = code

    def __repr__(self) -> str:
        return f"DeliveryError(retryable={self.retryable}, code={self.code!r})"


class Channel(Protocol):
    """A way of delivering a message; ``send`` raises :class:`DeliveryError` on failure."""

    name: str

    def send(self, message: OutgoingMessage) -> None: ...


def message_id_header(message_id: str) -> str:
    """The email ``Message-ID`` of an outbox message: the same on every attempt."""
    return f"<{message_id}@sop-engine>"


class SmtpChannel:
    """Email through an SMTP server, one connection per message, in plain-text UTF-8.

    STARTTLS when ``starttls`` (verified against ``tls_context``, by default the system's
    certificate authorities), then a login when ``username`` is given. A 4xx reply, a
    refused or dropped connection and a timeout are retryable; a 5xx reply is not.
    """

    name = "email"

    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        starttls: bool = True,
        username: str | None = None,
        password: str | None = None,
        sender: str = "sop-engine@localhost",
        timeout: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.starttls = starttls
        self.username = username
        self._password = password
        self.sender = sender
        self.timeout = timeout
        self._tls_context = tls_context

    def __repr__(self) -> str:
        return f"SmtpChannel(host={self.host!r}, port={self.port}, starttls={self.starttls})"

    def compose(self, message: OutgoingMessage) -> EmailMessage:
        """The email for ``message``; identical on every attempt but for transport headers."""
        if message.address is None:
            raise DeliveryError(retryable=False, code="email_no_address")
        email = EmailMessage(policy=_EMAIL_POLICY)
        email["From"] = self.sender
        email["To"] = message.address
        email["Subject"] = message.subject
        email["Date"] = format_datetime(message.created_at)
        email["Message-ID"] = message_id_header(message.message_id)
        email["X-SOP-Engine-Message-Id"] = message.message_id
        email["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies
        email.set_content(message.body, subtype="plain", charset="utf-8")
        email["Content-Language"] = message.language  # after set_content, which resets it
        return email

    def send(self, message: OutgoingMessage) -> None:
        if message.address is None:
            raise DeliveryError(retryable=False, code="email_no_address")
        email = self.compose(message)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=self._tls_context or ssl.create_default_context())
                if self.username is not None:
                    smtp.login(self.username, self._password or "")
                smtp.send_message(email, from_addr=self.sender, to_addrs=[message.address])
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise _smtp_reply(codes[0] if codes else 550) from None
        except smtplib.SMTPResponseException as exc:
            raise _smtp_reply(exc.smtp_code) from None
        except smtplib.SMTPServerDisconnected as exc:
            timed_out = isinstance(exc.__context__, TimeoutError)
            code = "smtp_timeout" if timed_out else "smtp_disconnected"
            raise DeliveryError(retryable=True, code=code) from None
        except smtplib.SMTPNotSupportedError:
            raise DeliveryError(retryable=False, code="smtp_not_supported") from None
        except smtplib.SMTPException:  # e.g. no authentication method in common
            raise DeliveryError(retryable=False, code="smtp_error") from None
        except ssl.SSLError:
            raise DeliveryError(retryable=False, code="smtp_tls") from None
        except TimeoutError:
            raise DeliveryError(retryable=True, code="smtp_timeout") from None
        except OSError:
            raise DeliveryError(retryable=True, code="smtp_connect") from None


def _smtp_reply(code: int) -> DeliveryError:
    """4xx (and anything that is not a 5xx) may pass later; 5xx is the server's final no."""
    return DeliveryError(retryable=not 500 <= code < 600, code=f"smtp_{code}")


class WebhookChannel:
    """A JSON POST to the recipient's URL, signed per the Standard Webhooks specification.

    Headers ``webhook-id`` (the message id, the same on every attempt),
    ``webhook-timestamp`` (the attempt's time, which receivers check for freshness) and
    ``webhook-signature``. A 2xx answer is a delivery; 408, 429, 5xx and network failures
    are retryable; other answers (a 4xx, a redirect) are not. Redirects are not followed.
    """

    name = "webhook"

    def __init__(self, secret: str, timeout: float = 10.0, *, clock: Clock | None = None) -> None:
        self._webhook = Webhook(secret)
        self.timeout = timeout
        self._clock = clock or SystemClock()
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)

    def __repr__(self) -> str:
        return f"WebhookChannel(timeout={self.timeout})"

    @staticmethod
    def payload(message: OutgoingMessage) -> dict[str, Any]:
        """What the receiver gets: the case code and the rendered text, nothing personal."""
        return {
            "type": f"notification.{message.template}",
            "message_id": message.message_id,
            "case_code": message.case_code,
            "template": message.template,
            "recipient_role": message.recipient_role,
            "recipient_agency_id": message.recipient_agency_id,
            "language": message.language,
            "subject": message.subject,
            "body": message.body,
        }

    def send(self, message: OutgoingMessage) -> None:
        if message.address is None:
            raise DeliveryError(retryable=False, code="webhook_no_address")
        body = json.dumps(self.payload(message), ensure_ascii=False, separators=(",", ":"))
        now = self._clock.now()
        headers = {
            "content-type": "application/json; charset=utf-8",
            "user-agent": "sop-engine",
            "webhook-id": message.message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._webhook.sign(message.message_id, now, body),
        }
        try:
            response = self._client.post(message.address, content=body.encode(), headers=headers)
        except httpx.TimeoutException:
            raise DeliveryError(retryable=True, code="http_timeout") from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL):
            raise DeliveryError(retryable=False, code="http_bad_url") from None
        except httpx.TransportError:
            raise DeliveryError(retryable=True, code="http_connect") from None
        status = response.status_code
        if not 200 <= status < 300:
            retryable = status in _RETRYABLE_HTTP or status >= 500
            raise DeliveryError(retryable=retryable, code=f"http_{status}")

    def close(self) -> None:
        """Release the pooled connections."""
        self._client.close()


class InboxChannel:
    """The engine's own in-app inbox: one ``inbox_messages`` row per message id.

    A second delivery of the same message changes nothing (``ON CONFLICT DO NOTHING`` on
    the message id, on SQLite and PostgreSQL alike).
    """

    name = "in_app"

    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"the in-app inbox needs SQLite or PostgreSQL, not {engine.name}")
        self.engine = engine

    def __repr__(self) -> str:
        return f"InboxChannel({self.engine.dialect.name})"

    def send(self, message: OutgoingMessage) -> None:
        row = {
            "message_id": message.message_id,
            "referral_id": message.referral_id,
            "case_code": message.case_code,
            "recipient_role": message.recipient_role,
            "recipient_agency_id": message.recipient_agency_id,
            "template": message.template,
            "language": message.language,
            "subject": message.subject,
            "body": message.body,
            "created_at": message.created_at,
            "read_at": None,
        }
        with self.engine.begin() as conn:
            conn.execute(_insert_once(self.engine.dialect.name, row))


def _insert_once(dialect: str, row: dict[str, Any]) -> Executable:
    """An insert that does nothing when the message id is already in the inbox."""
    if dialect == "postgresql":
        return (
            postgresql.insert(_INBOX)
            .values(row)
            .on_conflict_do_nothing(index_elements=["message_id"])
        )
    return sqlite.insert(_INBOX).values(row).on_conflict_do_nothing(index_elements=["message_id"])
