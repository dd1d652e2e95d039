"""The tables. Every row the engine keeps about a referral, and nothing that identifies a
survivor in clear: identifying facts live only in ``referrals.sealed``, encrypted with the
case's own key (``case_keys``), so that deleting that one key row erases them everywhere.

All timestamps are timezone-aware UTC (:class:`UtcDateTime`), on SQLite as on PostgreSQL.
The referral tables are written only by :mod:`sop_engine.runtime`, through ``fire`` and its
siblings; ``users`` by :mod:`api.users`, ``auth_failures`` by :mod:`api.auth_limits`, the
published SOPs by :mod:`sop_engine.publishing`, ``managed_agencies`` by
:mod:`sop_engine.directory.managed`, ``inbox_messages`` by the notifications' in-app channel.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "AccessLogEntry",
    "AuthFailure",
    "Base",
    "CaseKey",
    "ConsentGrant",
    "ConsentWithdrawal",
    "Disclosure",
    "IdempotencyRecord",
    "InboxMessage",
    "ManagedAgency",
    "MasterKeyFingerprint",
    "OutboxMessage",
    "PeriodicRun",
    "PublishingRequest",
    "Referral",
    "SopReview",
    "SopSource",
    "Task",
    "TimelineCheckpoint",
    "TimelineEntry",
    "TimelineVerification",
    "Timer",
    "User",
    "UtcDateTime",
    "table",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored and returned as timezone-aware UTC; naive datetimes are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Json = JSON().with_variant(JSONB(), "postgresql")

_NEVER_REUSE_IDS = {"sqlite_autoincrement": True}
"""SQLite would otherwise hand a deleted row's id to the next insert: a timer deleted by a
transition and a new timer of the next state could then share an id a sweep still holds."""


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime(),
        dict[str, Any]: Json,
        list[Any]: Json,
    }


class Referral(Base):
    """One referral, pinned to one SOP version for life."""

    __tablename__ = "referrals"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    case_code: Mapped[str] = mapped_column(String(32), unique=True)
    sop_key: Mapped[str] = mapped_column(String(100))
    sop_version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer, default=1)
    """Bumped by every change; a change made against a stale version is a conflict."""
    origin_country: Mapped[str] = mapped_column(String(2))
    destination_country: Mapped[str] = mapped_column(String(2))
    owner_agency_id: Mapped[str] = mapped_column(String(100))
    """The agency managing the case; it created the referral."""
    agencies: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Agency slot of the SOP -> agency id filling it for this referral."""
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Facts the SOP does not mark identifying."""
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    """Identifying facts, sealed with the case key (AES-GCM, the referral id as associated data)."""
    sealed_fields: Mapped[list[Any]] = mapped_column(default=list)
    """Names (never values) of the identifying facts that are set."""
    fact_writers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Fact name -> the agency that wrote its value, for facts written by an agency other than
    the managing one: those reach the managing agency only as disclosed to it."""
    incident_at: Mapped[datetime | None]
    disclosed_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    erased_at: Mapped[datetime | None]
    timeline_seq: Mapped[int] = mapped_column(Integer, default=0)
    """Sequence number of the last timeline entry."""
    head_hash: Mapped[str] = mapped_column(String(64))
    """Hash of the last timeline entry (the chain's head)."""

    __table_args__ = (
        Index("ix_referrals_sop", "sop_key", "sop_version", "state"),
        Index("ix_referrals_created", "created_at", "case_code"),
    )


class CaseKey(Base):
    """The referral's data key, wrapped by a master key. Deleting this row erases the case."""

    __tablename__ = "case_keys"
    __table_args__ = (Index("ix_case_keys_master_key", "master_key_id"),)

    referral_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("referrals.id", ondelete="CASCADE"), primary_key=True
    )
    master_key_id: Mapped[str] = mapped_column(String(64))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]


class TimelineEntry(Base):
    """An append-only, hash-chained record of everything that happened to a referral."""

    __tablename__ = "timeline_entries"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(36), ForeignKey("referrals.id"))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(40))
    actor_id: Mapped[str] = mapped_column(String(100))
    actor_role: Mapped[str] = mapped_column(String(64))
    actor_agency_id: Mapped[str | None] = mapped_column(String(100))
    event: Mapped[str | None] = mapped_column(String(200))
    from_state: Mapped[str | None] = mapped_column(String(200))
    to_state: Mapped[str | None] = mapped_column(String(200))
    consent_grant_id: Mapped[str | None] = mapped_column(String(36))
    disclosed_to: Mapped[str | None] = mapped_column(String(100))
    """Agency id that received data in this step, if any."""
    disclosed_fields: Mapped[list[Any]] = mapped_column(default=list)
    """Names of the fields disclosed, never their values."""
    override: Mapped[bool] = mapped_column(Boolean, default=False)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("referral_id", "seq"),
        Index("ix_timeline_entries_kind", "kind", "at"),
        _NEVER_REUSE_IDS,
    )


class TimelineCheckpoint(Base):
    """The chain's hash at every ``CHECKPOINT_EVERY``-th entry of a referral's timeline,
    copied when that entry is appended (:mod:`sop_engine.timeline.checkpoints`): where the
    verification of a page of a long timeline starts, and a second copy that a rewrite of the
    chain must also rewrite."""

    __tablename__ = "timeline_checkpoints"

    referral_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("referrals.id"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64))


class TimelineVerification(Base):
    """The last full verification of a referral's timeline: every entry recomputed from the
    first, every checkpoint compared (:mod:`sop_engine.timeline.verifications`)."""

    __tablename__ = "timeline_verifications"

    referral_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("referrals.id"), primary_key=True
    )
    verified_at: Mapped[datetime]
    entries: Mapped[int] = mapped_column(Integer)
    """How many entries it recomputed: the chain's length then."""
    head_hash: Mapped[str] = mapped_column(String(64))
    """The chain's head as the referral recorded it then."""
    ok: Mapped[bool] = mapped_column(Boolean)
    broken_seq: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(String(200))


class Timer(Base):
    """A durable deadline timer: one row per escalation level of a deadline of a state."""

    __tablename__ = "timers"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(36), ForeignKey("referrals.id"))
    state: Mapped[str] = mapped_column(String(200))
    deadline: Mapped[str] = mapped_column(String(64))
    level: Mapped[int] = mapped_column(Integer)
    due_at: Mapped[datetime]
    deadline_due_at: Mapped[datetime]
    """When the deadline itself passes (level 1 may be later, never earlier)."""
    created_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    fired_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_timers_due", "fired_at", "due_at"),
        Index("ix_timers_referral", "referral_id", "state"),
        _NEVER_REUSE_IDS,
    )


class Task(Base):
    """Work asked of an agency; opened when a state is entered, closed when it is left."""

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(36), ForeignKey("referrals.id"))
    state: Mapped[str | None] = mapped_column(String(200))
    """The state that opened it; None for tasks outside the state graph (withdrawal notices)."""
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(64))
    agency_slot: Mapped[str | None] = mapped_column(String(64))
    agency_id: Mapped[str | None] = mapped_column(String(100))
    ask: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")
    """open, done (the state was left by an event), cancelled (left by revoke or withdrawal)."""
    due_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    closed_by_event: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        Index("ix_tasks_agency", "agency_id", "status", "created_at", "id"),
        Index("ix_tasks_referral", "referral_id", "status"),
    )


class OutboxMessage(Base):
    """A notification to send: written in the transaction that caused it, sent later.

    ``id`` is the message id receivers use to drop duplicates (delivery is at least once).
    ``context`` holds what the template may show: case code, what is asked, by when; never a
    name, a contact detail or an incident detail.
    """

    __tablename__ = "outbox"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(36), ForeignKey("referrals.id"))
    template: Mapped[str] = mapped_column(String(64))
    recipient_role: Mapped[str] = mapped_column(String(64))
    recipient_agency_id: Mapped[str | None] = mapped_column(String(100))
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """pending, sent, dead (kept failing; an incident is on the timeline)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_outbox_pending", "status", "next_attempt_at"),)


class InboxMessage(Base):
    """A notification rendered into an agency's in-app inbox (the API lists these).

    One row per outbox message: ``message_id`` is the outbox id, so a message delivered
    twice (delivery is at least once) lands once.
    """

    __tablename__ = "inbox_messages"

    message_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(36), ForeignKey("referrals.id"))
    case_code: Mapped[str] = mapped_column(String(32))
    recipient_role: Mapped[str] = mapped_column(String(64))
    recipient_agency_id: Mapped[str | None] = mapped_column(String(100))
    template: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    read_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_inbox_agency", "recipient_agency_id", "recipient_role", "read_at"),
        Index(
            "ix_inbox_created", "recipient_agency_id", "recipient_role", "created_at", "message_id"
        ),
    )


class ConsentGrant(Base):
    """Consent given, for a scope: purpose, recipient, data categories, country, expiry."""

    __tablename__ = "consent_grants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(36), ForeignKey("referrals.id"))
    scope: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(Text)
    recipient_slot: Mapped[str] = mapped_column(String(64))
    recipient_agency_id: Mapped[str | None] = mapped_column(String(100))
    """The one agency the survivor agreed to; None: any agency of ``recipient_types`` in
    ``country``."""
    recipient_types: Mapped[list[Any] | None] = mapped_column()
    """The agency types agreed to when no one agency is named; None (grants recorded before
    types were kept): any type the scope's agency slot takes."""
    data_categories: Mapped[list[Any]] = mapped_column(default=list)
    """The data categories agreed to: the scope's, or fewer."""
    country: Mapped[str] = mapped_column(String(11))
    given_by: Mapped[str] = mapped_column(String(32))
    """survivor, caregiver, trusted_adult or caseworker (the child's best interest)."""
    assent: Mapped[str] = mapped_column(String(16))
    """The child's assent: none, verbal, written or not_required."""
    survivor_age: Mapped[int] = mapped_column(Integer)
    granted_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    recorded_by: Mapped[str] = mapped_column(String(100))

    __table_args__ = (Index("ix_consent_grants_referral", "referral_id", "scope"),)


class ConsentWithdrawal(Base):
    """A grant withdrawn: later disclosures under it are refused."""

    __tablename__ = "consent_withdrawals"

    grant_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("consent_grants.id"), primary_key=True
    )
    referral_id: Mapped[str] = mapped_column(String(36), ForeignKey("referrals.id"))
    withdrawn_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(100))


class Disclosure(Base):
    """Who holds which data of a referral, and under which grant or override."""

    __tablename__ = "disclosures"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(36), ForeignKey("referrals.id"))
    agency_slot: Mapped[str] = mapped_column(String(64))
    agency_id: Mapped[str] = mapped_column(String(100))
    grant_id: Mapped[str | None] = mapped_column(String(36))
    override: Mapped[bool] = mapped_column(Boolean, default=False)
    fields: Mapped[list[Any]] = mapped_column(default=list)
    field_values: Mapped[dict[str, Any] | None] = mapped_column()
    """The non-identifying fields' values as disclosed (None: disclosed before values were
    kept)."""
    sealed_values: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The identifying fields' values as disclosed, sealed with the case key (erasing the case
    erases them)."""
    at: Mapped[datetime]
    timeline_seq: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_disclosures_referral", "referral_id"), _NEVER_REUSE_IDS)


class IdempotencyRecord(Base):
    """The first result of a request made with an idempotency key, returned on every retry."""

    __tablename__ = "idempotency_keys"

    actor_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(36))
    request_hash: Mapped[str] = mapped_column(String(64))
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]


class User(Base):
    """Someone who calls the API: one role, at one agency (none for coordinators and auditors
    acting for no agency). Only the SHA-256 of the bearer token is kept; the token itself is
    shown once, when the user is created or the token rotated."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(64))
    agency_id: Mapped[str | None] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    """Hex SHA-256 of the bearer token; a request's token is hashed and looked up."""
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]
    token_issued_at: Mapped[datetime]
    """When the current token was made (at creation, then at each rotation)."""
    token_expires_at: Mapped[datetime]
    """From then on the token is refused (401); rotating it gives a fresh lifetime."""
    email: Mapped[str | None] = mapped_column(String(254))
    """Where notifications for her role reach her by e-mail (none: the in-app inbox only)."""
    language: Mapped[str | None] = mapped_column(String(8))
    """The language she reads notifications in, one the templates are written in."""
    timezone: Mapped[str | None] = mapped_column(String(64))
    """The IANA time zone she reads due times in (none: her SOP's, else UTC)."""


class AuthFailure(Base):
    """Failed authentications of one client address in the current window: what the API's
    limit on them counts, shared by every API process through the database."""

    __tablename__ = "auth_failures"

    client: Mapped[str] = mapped_column(String(64), primary_key=True)
    """The client's address, as the server saw it (behind a trusted proxy: the forwarded one)."""
    window_started_at: Mapped[datetime]
    failures: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_auth_failures_window", "window_started_at"),)


class AccessLogEntry(Base):
    """One read of protected data (or one refused attempt): who, when, which referral, which
    fields by name (never their values). Append-only: nothing updates or deletes these rows."""

    __tablename__ = "access_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime]
    actor_id: Mapped[str] = mapped_column(String(100))
    actor_role: Mapped[str] = mapped_column(String(64))
    actor_agency_id: Mapped[str | None] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    """What was read, such as ``referral.read`` or ``disclosed.read``."""
    referral_id: Mapped[str | None] = mapped_column(String(36))
    """None for reads that span referrals (an inbox, a report) or name none that exists."""
    fields: Mapped[list[Any]] = mapped_column(default=list)
    outcome: Mapped[str] = mapped_column(String(16))
    """``granted``, or ``refused`` (the reader was answered 404 or 403)."""
    client: Mapped[str | None] = mapped_column(String(64))
    """The client's address, for refused authentications (``auth.*``); None otherwise."""

    __table_args__ = (
        Index("ix_access_log_referral", "referral_id", "id"),
        Index("ix_access_log_actor", "actor_id", "id"),
        _NEVER_REUSE_IDS,
    )


class SopSource(Base):
    """An SOP uploaded through the API (:mod:`sop_engine.publishing` writes these rows):
    pending, replaceable, until a second coordinator approves it (then published: immutable,
    and compiled into the library at every start beside the SOP files, see
    :mod:`sop_engine.language.published`) or refuses it (until it is uploaded again)."""

    __tablename__ = "sop_sources"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    """The YAML text exactly as uploaded."""
    sha256: Mapped[str] = mapped_column(String(64))
    """Hex SHA-256 of the UTF-8 source: what was checked is what is published."""
    status: Mapped[str] = mapped_column(String(16))
    """``pending``, ``refused`` or ``published``."""
    uploaded_by: Mapped[str] = mapped_column(String(100))
    """The user id (never the name) of whoever uploaded the current text."""
    uploaded_at: Mapped[datetime]
    published_by: Mapped[str | None] = mapped_column(String(100))
    """The coordinator who approved the text: never its uploader, unless a single
    coordinator was allowed (a demo)."""
    published_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_sop_sources_status", "status", "key", "version"),)


class SopReview(Base):
    """A coordinator's decision on an uploaded SOP's text: ``approved`` (it was published)
    or ``refused``, with the SHA-256 of the text decided on and the reviewer's comment. Rows
    are only ever added: they are the record of who let each version go live."""

    __tablename__ = "sop_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    """The text decided on (the approver or refuser read this one)."""
    decision: Mapped[str] = mapped_column(String(16))
    """``approved`` or ``refused``."""
    reviewer_id: Mapped[str] = mapped_column(String(100))
    uploaded_by: Mapped[str] = mapped_column(String(100))
    """Who uploaded the text decided on: the second pair of eyes is ``reviewer_id``."""
    comment: Mapped[str | None] = mapped_column(Text)
    """Why (required for a refusal); about the SOP, never about a case."""
    decided_at: Mapped[datetime]

    __table_args__ = (Index("ix_sop_reviews_key", "key", "version", "id"),)


class MasterKeyFingerprint(Base):
    """A one-way fingerprint (HKDF, :mod:`sop_engine.master_keys`) of each master key this
    database has been used with, by key id: a process given a different key under the same
    id refuses to start instead of writing case keys the rest of the cluster cannot open."""

    __tablename__ = "master_key_fingerprints"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    first_seen_at: Mapped[datetime]


class PeriodicRun(Base):
    """One periodic flow's (the escalation sweep's, the dispatch's...) run lease and its last
    success (:mod:`sop_engine.runtime.periodic`): one run works at a time, a run that died
    loses the lease when it runs out, and readiness asks when the last run succeeded."""

    __tablename__ = "periodic_runs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(200))
    """The worker process holding the lease (``host:pid``)."""
    run_id: Mapped[str | None] = mapped_column(String(64))
    """The holder's Prefect flow run id, when it runs under Prefect."""
    lease_until: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    """When the holder (or the last holder) took the lease."""
    succeeded_at: Mapped[datetime | None]
    """When a run last finished its work."""
    success_began_at: Mapped[datetime | None]
    """When that run began: a run scheduled before it has nothing left to do."""
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """That run's counts by outcome (``escalated``: 3), never case data."""


class PublishingRequest(Base):
    """The first result of an upload or publication sent with an ``Idempotency-Key``,
    written in the same transaction as the change, returned on every retry."""

    __tablename__ = "publishing_requests"

    actor_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    """The operation's name and the SHA-256 of the client's key."""
    request_hash: Mapped[str] = mapped_column(String(64))
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]


class ManagedAgency(Base):
    """A service directory entry kept through the API (:mod:`sop_engine.directory.managed`):
    an agency added to the YAML directory, or replacing the YAML entry of the same id."""

    __tablename__ = "managed_agencies"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    entry: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """The entry as a directory file writes it (keys and values of the directory schema)."""
    revision: Mapped[int] = mapped_column(Integer, default=1)
    """Bumped by every change; ``If-Match`` compares it."""
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime]


def table(model: type[Base]) -> Table:
    """The Core table of a model, for the runtime's Core statements."""
    found = model.__table__
    assert isinstance(found, Table)
    return found
