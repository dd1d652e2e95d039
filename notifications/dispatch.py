"""Deliver what the outbox holds: claim a batch, find each recipient, render the message in
the recipient's language and time zone, send it, record the outcome.

Every message goes to the in-app inbox. A message for an agency whose directory entry has
an email address or a webhook URL also goes there, when that channel is configured
(:func:`build_channels`). An agency reached by telephone or in-app, one without an address,
and one the directory does not list get the in-app inbox only: not an error, since the
inbox is where every notice can be read. A message for a role without an agency (an SOP's
coordinators) also goes, when email is configured, to each active user of the role who has
an e-mail address, in her language and time zone (:mod:`notifications.recipients`).

A failure of any channel, or of rendering (a bug), is a failed attempt. A retryable one
(a busy server, a timeout) is retried with backoff and, after ``MAX_ATTEMPTS``, the message
is declared dead with an incident on the referral's timeline and a ``delivery_failed``
notice to the coordinators; a final one (SMTP 5xx, HTTP 4xx but 408 and 429, no address)
declares it dead on that attempt. It never stops the batch. A channel that was reached
before another one failed receives the message again on the next attempt, with the same
message id, and drops it as a duplicate.

A role's e-mail copies are at least once too: when one user's copy fails retryably, the
next attempt sends every copy again, each with its own id (the same on every attempt), and
mail clients drop the repeats. One user's copy refused for good (her address is wrong) does
not hold back the others' or the message: it is logged by user id and listed in the
``delivered`` timeline entry, so that an operator fixes her address.

The runtime's ``claim_outbox``, ``mark_sent`` and ``mark_failed_attempt`` are the only
writers of the outbox's status; this module reads the outbox only for ``created_at``, and
(through :func:`~notifications.recipients.role_members`) the users only for their contacts.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, select

from notifications.channels import (
    Channel,
    DeliveryError,
    InboxChannel,
    OutgoingMessage,
    SmtpChannel,
    WebhookChannel,
)
from notifications.recipients import (
    COUNTRY_TIMEZONES,
    EMAIL,
    IN_APP,
    Member,
    Recipient,
    copy_id,
    find_recipient,
    member_recipient,
    role_members,
)
from notifications.render import RenderedMessage, Renderer
from sop_engine.directory import ServiceDirectory
from sop_engine.errors import ConcurrentChange
from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction
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

_O = tables.outbox


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
class Failure:
    """Why an attempt failed, for the outbox and the timeline: an exception type and a code
    (never an address or the text), and whether a later attempt may pass."""

    error: str
    retryable: bool


@dataclass
class Delivery:
    """What one attempt at one message did."""

    channels: list[str] = field(default_factory=list)
    """The channels that took the message (each once)."""
    users: int = 0
    """The role's users who got their own e-mail copy."""
    refused_users: dict[str, str] = field(default_factory=dict)
    """User id -> the code her copy was refused with for good."""
    failure: Failure | None = None


def dispatch_pending(
    runtime: Runtime,
    directory: ServiceDirectory,
    channels: Iterable[Channel],
    *,
    worker: str,
    limit: int = 50,
    lease: timedelta | None = None,
    renderer: Renderer | None = None,
) -> DispatchReport:
    """Claim up to ``limit`` due messages for ``worker`` and deliver each (module docstring).

    ``channels`` must include the in-app inbox (``in_app``); see :func:`build_channels`.
    The claims last ``lease`` (by default the runtime's ``timer_lease``); once half of it
    has gone by, the batch's remaining claims are renewed before the next message, so that a
    dispatcher that dies gives its messages back within one lease and a slow batch keeps
    them. A message whose lease has still run out by its turn (one delivery took longer than
    half the lease) is left for the next claim: keep the channels' timeouts well inside
    half the lease. ``renderer`` renders templates from another folder (the shipped ones by
    default).
    """
    by_name = _by_name(channels)
    renderer = renderer or Renderer()
    lease = lease or runtime.timer_lease
    claims = runtime.claim_outbox(limit, worker=worker, lease=lease)
    created = _created_at(runtime.db, [claim.id for claim in claims])
    members: dict[str, list[Member]] = {}
    tally: Counter[str] = Counter()
    queue = deque(claims)
    while queue:
        if runtime.clock.now() >= queue[0].lease_until - lease / 2:
            kept = runtime.renew_outbox_claims(list(queue), lease)
            tally["skipped"] += len(queue) - len(kept)
            queue = deque(kept)
            if not queue:
                break
        claim = queue.popleft()
        if runtime.clock.now() >= claim.lease_until:
            tally["skipped"] += 1
            continue
        if claim.recipient_agency_id is None and EMAIL in by_name:
            if claim.recipient_role not in members:
                now = runtime.clock.now()
                members[claim.recipient_role] = role_members(runtime.db, claim.recipient_role, now)
            role = members[claim.recipient_role]
        else:
            role = []
        created_at = created.get(claim.id) or runtime.clock.now()
        done = _deliver(claim, created_at, directory, by_name, renderer, members=role)
        tally[_record(runtime, claim, done)] += 1
    return DispatchReport(**tally)


def _record(runtime: Runtime, claim: OutboxClaim, done: Delivery) -> str:
    """Record the attempt's outcome; the report's count it falls in."""
    for user, code in done.refused_users.items():
        log.warning("outbox message %s: the copy for user %s was refused: %s", claim.id, user, code)
    try:
        if done.failure is None:
            sent = runtime.mark_sent(
                claim, channels=done.channels, users=done.users, refused_users=done.refused_users
            )
            return "sent" if sent else "skipped"
        failure = done.failure
        log.warning(
            "outbox message %s (%s) not delivered: %s", claim.id, claim.template, failure.error
        )
        status = runtime.mark_failed_attempt(claim, failure.error, retryable=failure.retryable)
    except ConcurrentChange:
        # The referral kept changing while the timeline entry was being written: nothing
        # was recorded, and the next claim after the lease tries again.
        return "retried"
    return "dead" if status == "dead" else "retried"


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
    *,
    members: list[Member],
) -> Delivery:
    """Send one message on each of its channels, then to each of ``members`` (a role's
    users, for a message without an agency) by e-mail; what it did, or why it failed.

    The in-app inbox and the agency's channel must all take it. Of the members' copies, a
    retryable failure fails the attempt (every copy is sent again next time) and a final one
    is only listed: her address is hers to fix, the others' copies and the inbox stand.
    """
    done = Delivery()
    recipient = find_recipient(
        directory,
        claim.recipient_agency_id,
        claim.template,
        renderer.root,
        sop_timezone=claim.sop_timezone,
    )
    targets = [channels[IN_APP]]
    if recipient.channel is not None and recipient.channel in channels:
        targets.append(channels[recipient.channel])
    message = _message(claim, created_at, renderer, recipient, claim.id)
    if isinstance(message, Failure):
        done.failure = message
        return done
    for channel in targets:
        done.failure = _send(channel, message)
        if done.failure is not None:
            return done
        done.channels.append(channel.name)
    retryable: list[str] = []
    for member in members:
        copy = _message(
            claim,
            created_at,
            renderer,
            member_recipient(
                member, claim.template, renderer.root, sop_timezone=claim.sop_timezone
            ),
            copy_id(claim.id, member.id),
        )
        failure = copy if isinstance(copy, Failure) else _send(channels[EMAIL], copy)
        if failure is None:
            done.users += 1
        elif failure.retryable:
            retryable.append(f"{failure.error} (user {member.id})")
        else:
            done.refused_users[member.id] = failure.error
    if done.users and EMAIL not in done.channels:
        done.channels.append(EMAIL)
    if retryable:
        done.failure = Failure("; ".join(retryable), retryable=True)
    return done


def _message(
    claim: OutboxClaim,
    created_at: datetime,
    renderer: Renderer,
    recipient: Recipient,
    message_id: str,
) -> OutgoingMessage | Failure:
    """The message ``recipient`` reads, under ``message_id``; a failure when it cannot be
    rendered (a template or context bug costs an attempt, not the batch)."""
    try:
        rendered: RenderedMessage = renderer.render(
            claim.template, recipient.language, claim.context, timezone=recipient.timezone
        )
    except Exception as exc:
        return Failure(f"{type(exc).__name__}:render", retryable=True)
    return OutgoingMessage(
        message_id=message_id,
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


def _send(channel: Channel, message: OutgoingMessage) -> Failure | None:
    """None when ``channel`` took ``message``; the failure names a type and a code, never an
    address or the message's text."""
    try:
        channel.send(message)
    except DeliveryError as exc:
        return Failure(f"{type(exc).__name__}:{exc.code}", exc.retryable)
    except Exception as exc:  # a channel's own bug or an unforeseen failure
        return Failure(f"{type(exc).__name__}:{channel.name}", retryable=True)
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
