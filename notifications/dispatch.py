"""Deliver what the outbox holds: claim a batch, find each recipient in the service directory,
render the message in the recipient's language and time zone, send it, record the outcome.

Every message goes to the in-app inbox. A message for an agency whose directory entry has
an email address or a webhook URL also goes there, when that channel is configured
(:func:`build_channels`). An agency reached by telephone or in-app, one without an address,
one the directory does not list, and a role without an agency (an SOP's coordinators) get
the in-app inbox only: not an error, since the inbox is where every notice can be read.

A failure of any channel, or of rendering (a bug), is a failed attempt: the runtime retries
the message with backoff and, after ``MAX_ATTEMPTS``, declares it dead with an incident on
the referral's timeline and a ``delivery_failed`` notice to the coordinators. It never stops
the batch. A channel that was reached before another one failed receives the message again
on the next attempt, with the same message id, and drops it as a duplicate.

The runtime's ``claim_outbox``, ``mark_sent`` and ``mark_failed_attempt`` are the only
writers of the outbox's status; this module reads the outbox only for ``created_at``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType

from sqlalchemy import Engine, select

from notifications.catalogue import FALLBACK_LANGUAGE, TEMPLATES_DIR, languages_of
from notifications.channels import (
    Channel,
    DeliveryError,
    InboxChannel,
    OutgoingMessage,
    SmtpChannel,
    WebhookChannel,
)
from notifications.render import Renderer
from sop_engine.directory import ServiceDirectory
from sop_engine.errors import ConcurrentChange, NotFound
from sop_engine.persistence.db import read_transaction
from sop_engine.persistence.models import OutboxMessage, table
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.outbox import OutboxClaim
from sop_engine.settings import Settings

__all__ = [
    "COUNTRY_TIMEZONES",
    "DispatchReport",
    "Recipient",
    "build_channels",
    "dispatch_pending",
    "find_recipient",
]

log = logging.getLogger(__name__)

_O = table(OutboxMessage)
IN_APP = "in_app"
DEFAULT_TIMEZONE = "UTC"
COUNTRY_TIMEZONES: Mapping[str, str] = MappingProxyType(
    {
        "TH": "Asia/Bangkok",
        "KH": "Asia/Phnom_Penh",
        "LA": "Asia/Vientiane",
        "VN": "Asia/Ho_Chi_Minh",
        "MM": "Asia/Yangon",
    }
)
"""The time zone a country's agencies read due times in (Myanmar is UTC+06:30)."""


@dataclass(frozen=True, slots=True)
class DispatchReport:
    """What one batch did: ``sent`` on every channel; ``retried`` later after a failed
    attempt; ``dead`` after the last attempt; ``skipped`` because the message stopped being
    this dispatcher's (its lease ran out before its turn, or another dispatcher marked it)."""

    sent: int = 0
    retried: int = 0
    dead: int = 0
    skipped: int = 0

    @property
    def claimed(self) -> int:
        """Every message of the batch lands in exactly one count."""
        return self.sent + self.retried + self.dead + self.skipped


@dataclass(frozen=True, slots=True)
class Recipient:
    """How a message is read: ``language`` (one the template is written in) and
    ``timezone``; and ``channel`` and ``address`` when it also leaves by email or webhook."""

    language: str
    timezone: str
    channel: str | None = None
    address: str | None = None


def find_recipient(
    directory: ServiceDirectory,
    agency_id: str | None,
    template: str,
    templates: Path = TEMPLATES_DIR,
) -> Recipient:
    """The recipient of ``template`` at ``agency_id`` (None: a role without an agency).

    The language is the first of the agency's languages that the template is written in
    (under ``templates``), else English; the time zone is its country's. An agency the
    directory does not list, or none, reads English in UTC in the in-app inbox.
    """
    if agency_id is None:
        return Recipient(FALLBACK_LANGUAGE, DEFAULT_TIMEZONE)
    try:
        agency = directory.agency(agency_id)
    except NotFound:
        log.warning("agency %s is not in the service directory: in-app inbox only", agency_id)
        return Recipient(FALLBACK_LANGUAGE, DEFAULT_TIMEZONE)
    written = languages_of(template, templates)
    language = next((lang for lang in agency.languages if lang in written), FALLBACK_LANGUAGE)
    timezone = COUNTRY_TIMEZONES.get(agency.country, DEFAULT_TIMEZONE)
    if agency.contact_channel == IN_APP or not agency.contact_address:
        return Recipient(language, timezone)
    return Recipient(language, timezone, agency.contact_channel, agency.contact_address)


def dispatch_pending(
    runtime: Runtime,
    directory: ServiceDirectory,
    channels: Iterable[Channel],
    *,
    worker: str,
    limit: int = 50,
    lease: timedelta = timedelta(minutes=5),
    renderer: Renderer | None = None,
) -> DispatchReport:
    """Claim up to ``limit`` due messages for ``worker`` and deliver each (module docstring).

    ``channels`` must include the in-app inbox (``in_app``); see :func:`build_channels`.
    A message whose lease has run out by its turn is left for the next claim, so keep
    ``limit`` times the channels' timeouts well inside ``lease``. ``renderer`` renders
    templates from another folder (the shipped ones by default).
    """
    by_name = _by_name(channels)
    renderer = renderer or Renderer()
    claims = runtime.claim_outbox(limit, worker=worker, lease=lease)
    created = _created_at(runtime.db, [claim.id for claim in claims])
    tally: Counter[str] = Counter()
    for claim in claims:
        if runtime.clock.now() >= claim.lease_until:
            tally["skipped"] += 1
            continue
        created_at = created.get(claim.id) or runtime.clock.now()
        error = _deliver(claim, created_at, directory, by_name, renderer)
        if error is None:
            tally["sent" if runtime.mark_sent(claim) else "skipped"] += 1
            continue
        log.warning("outbox message %s (%s) not delivered: %s", claim.id, claim.template, error)
        try:
            status = runtime.mark_failed_attempt(claim, error)
        except ConcurrentChange:
            # The referral changed while its incident was being written: nothing was
            # recorded, and the next claim after the lease tries again.
            status = "pending"
        tally["dead" if status == "dead" else "retried"] += 1
    return DispatchReport(**tally)


def build_channels(settings: Settings, engine: Engine) -> list[Channel]:
    """The in-app inbox, with email when ``smtp_host`` is set and webhooks when
    ``webhook_secret`` is set."""
    channels: list[Channel] = [InboxChannel(engine)]
    if settings.smtp_host:
        password = settings.smtp_password
        channels.append(
            SmtpChannel(
                settings.smtp_host,
                settings.smtp_port,
                starttls=settings.smtp_starttls,
                username=settings.smtp_username,
                password=password.get_secret_value() if password is not None else None,
                sender=settings.smtp_sender,
                timeout=settings.smtp_timeout_seconds,
            )
        )
    if settings.webhook_secret is not None:
        channels.append(
            WebhookChannel(
                settings.webhook_secret.get_secret_value(),
                timeout=settings.webhook_timeout_seconds,
            )
        )
    return channels


def _deliver(
    claim: OutboxClaim,
    created_at: datetime,
    directory: ServiceDirectory,
    channels: Mapping[str, Channel],
    renderer: Renderer,
) -> str | None:
    """Send one message on each of its channels; the error to record, or None when sent.

    The error names an exception type and a code, never an address or the message's text.
    """
    recipient = find_recipient(directory, claim.recipient_agency_id, claim.template, renderer.root)
    try:
        rendered = renderer.render(
            claim.template, recipient.language, claim.context, timezone=recipient.timezone
        )
    except Exception as exc:  # a template or context bug costs an attempt, not the batch
        return f"{type(exc).__name__}:render"
    message = OutgoingMessage(
        message_id=claim.id,
        referral_id=claim.referral_id,
        case_code=str(claim.context.get("case_code", "")),
        template=claim.template,
        recipient_role=claim.recipient_role,
        recipient_agency_id=claim.recipient_agency_id,
        address=recipient.address,
        language=rendered.language,
        subject=rendered.subject,
        body=rendered.body,
        created_at=created_at,
    )
    targets = [channels[IN_APP]]
    if recipient.channel is not None and recipient.channel in channels:
        targets.append(channels[recipient.channel])
    for channel in targets:
        try:
            channel.send(message)
        except DeliveryError as exc:
            return f"{type(exc).__name__}:{exc.code}"
        except Exception as exc:  # a channel's own bug or an unforeseen failure
            return f"{type(exc).__name__}:{channel.name}"
    return None


def _by_name(channels: Iterable[Channel]) -> dict[str, Channel]:
    found: dict[str, Channel] = {}
    for channel in channels:
        if channel.name in found:
            raise ValueError(f"two channels named {channel.name!r}")
        found[channel.name] = channel
    if IN_APP not in found:
        raise ValueError("dispatch needs the in-app inbox channel: every message goes there")
    return found


def _created_at(db: Engine, ids: list[str]) -> dict[str, datetime]:
    if not ids:
        return {}
    with read_transaction(db) as conn:
        rows = conn.execute(select(_O.c.id, _O.c.created_at).where(_O.c.id.in_(ids)))
        return {row.id: row.created_at for row in rows}
