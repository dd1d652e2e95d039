"""The tables. Every row the engine keeps about a referral, and nothing that identifies a
survivor in clear: identifying facts live only in ``referrals.sealed``, encrypted with the
case's own key (``case_keys``), so that deleting that one key row erases them everywhere.

Plain SQLAlchemy Core tables, one module attribute each, named as the SQL table is
(``tables.referrals``): the engine writes Core statements only, and importing the ORM would
cost every command's start-up for nothing. Every column says whether it is nullable, except
primary keys, which never are.

All timestamps are timezone-aware UTC (:class:`UtcDateTime`), on SQLite as on PostgreSQL.
The referral tables are written only by :mod:`sop_engine.runtime`, through ``fire`` and its
siblings; ``users`` by :mod:`api.users`, ``auth_failures`` by :mod:`api.auth_limits`, the
published SOPs by :mod:`sop_engine.publishing`, ``managed_agencies`` by
:mod:`sop_engine.directory.managed`, ``inbox_messages`` by the notifications' in-app channel.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
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
from sqlalchemy.types import TypeDecorator

__all__ = [
    "NAMING",
    "Json",
    "UtcDateTime",
    "access_log",
    "auth_failures",
    "case_keys",
    "consent_grants",
    "consent_withdrawals",
    "disclosures",
    "idempotency_keys",
    "inbox_messages",
    "managed_agencies",
    "master_key_fingerprints",
    "metadata",
    "outbox",
    "periodic_runs",
    "publishing_requests",
    "referrals",
    "sop_reviews",
    "sop_sources",
    "tasks",
    "timeline_checkpoints",
    "timeline_entries",
    "timeline_verifications",
    "timers",
    "transfers",
    "users",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


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

_NEVER_REUSE_IDS: dict[str, Any] = {"sqlite_autoincrement": True}
"""SQLite would otherwise hand a deleted row's id to the next insert: a timer deleted by a
transition and a new timer of the next state could then share an id a sweep still holds."""


# One referral, pinned to one SOP version for life.
referrals = Table(
    "referrals",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("case_code", String(32), nullable=False, unique=True),
    Column("sop_key", String(100), nullable=False),
    Column("sop_version", Integer, nullable=False),
    Column("state", String(200), nullable=False),
    # Bumped by every change; a change made against a stale version is a conflict.
    Column("version", Integer, nullable=False, default=1),
    Column("origin_country", String(2), nullable=False),
    Column("destination_country", String(2), nullable=False),
    # The agency managing the case; it created the referral.
    Column("owner_agency_id", String(100), nullable=False),
    # Agency slot of the SOP -> agency id filling it for this referral.
    Column("agencies", Json, nullable=False, default=dict),
    # Parallel handoff -> the state of the stage it is at, for those open now (0015).
    Column("handoffs", Json, nullable=False, default=dict, server_default="{}"),
    # Facts the SOP does not mark identifying.
    Column("facts", Json, nullable=False, default=dict),
    # Identifying facts, sealed with the case key (AES-GCM, the referral id as associated data).
    Column("sealed", LargeBinary, nullable=True),
    # Names (never values) of the identifying facts that are set.
    Column("sealed_fields", Json, nullable=False, default=list),
    # Fact name -> the agency that wrote its value, for facts written by an agency other than
    # the managing one: those reach the managing agency only as disclosed to it.
    Column("fact_writers", Json, nullable=False, default=dict),
    Column("incident_at", UtcDateTime(), nullable=True),
    Column("disclosed_at", UtcDateTime(), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("closed_at", UtcDateTime(), nullable=True),
    Column("erased_at", UtcDateTime(), nullable=True),
    # Sequence number of the last timeline entry.
    Column("timeline_seq", Integer, nullable=False, default=0),
    # Hash of the last timeline entry (the chain's head).
    Column("head_hash", String(64), nullable=False),
    Index("ix_referrals_sop", "sop_key", "sop_version", "state"),
    Index("ix_referrals_created", "created_at", "case_code"),
)

# The referral's data key, wrapped by a master key. Deleting this row erases the case.
case_keys = Table(
    "case_keys",
    metadata,
    Column(
        "referral_id",
        String(36),
        ForeignKey("referrals.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("master_key_id", String(64), nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_case_keys_master_key", "master_key_id"),
)

# An append-only, hash-chained record of everything that happened to a referral.
timeline_entries = Table(
    "timeline_entries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("referral_id", String(36), ForeignKey("referrals.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("actor_id", String(100), nullable=False),
    Column("actor_role", String(64), nullable=False),
    Column("actor_agency_id", String(100), nullable=True),
    Column("event", String(200), nullable=True),
    Column("from_state", String(200), nullable=True),
    Column("to_state", String(200), nullable=True),
    Column("consent_grant_id", String(36), nullable=True),
    # Agency id that received data in this step, if any.
    Column("disclosed_to", String(100), nullable=True),
    # Names of the fields disclosed, never their values.
    Column("disclosed_fields", Json, nullable=False, default=list),
    Column("override", Boolean, nullable=False, default=False),
    Column("details", Json, nullable=False, default=dict),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("referral_id", "seq"),
    Index("ix_timeline_entries_kind", "kind", "at"),
    **_NEVER_REUSE_IDS,
)

# The chain's hash at every ``CHECKPOINT_EVERY``-th entry of a referral's timeline,
# copied when that entry is appended (:mod:`sop_engine.timeline.checkpoints`): where the
# verification of a page of a long timeline starts, and a second copy that a rewrite of the
# chain must also rewrite.
timeline_checkpoints = Table(
    "timeline_checkpoints",
    metadata,
    Column("referral_id", String(36), ForeignKey("referrals.id"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("hash", String(64), nullable=False),
)

# The last full verification of a referral's timeline: every entry recomputed from the
# first, every checkpoint compared (:mod:`sop_engine.timeline.verifications`).
timeline_verifications = Table(
    "timeline_verifications",
    metadata,
    Column("referral_id", String(36), ForeignKey("referrals.id"), primary_key=True),
    Column("verified_at", UtcDateTime(), nullable=False),
    # How many entries it recomputed: the chain's length then.
    Column("entries", Integer, nullable=False),
    # The chain's head as the referral recorded it then.
    Column("head_hash", String(64), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("broken_seq", Integer, nullable=True),
    Column("reason", String(200), nullable=True),
)

# A durable deadline timer: one row per escalation level of a deadline of a state.
timers = Table(
    "timers",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("referral_id", String(36), ForeignKey("referrals.id"), nullable=False),
    Column("state", String(200), nullable=False),
    Column("deadline", String(64), nullable=False),
    Column("level", Integer, nullable=False),
    Column("due_at", UtcDateTime(), nullable=False),
    # When the deadline itself passes (level 1 may be later, never earlier).
    Column("deadline_due_at", UtcDateTime(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("lease_until", UtcDateTime(), nullable=True),
    Column("claimed_by", String(100), nullable=True),
    Column("fired_at", UtcDateTime(), nullable=True),
    Index("ix_timers_due", "fired_at", "due_at"),
    Index("ix_timers_referral", "referral_id", "state"),
    **_NEVER_REUSE_IDS,
)

# A case clock that has ended for good: its ``stops_when`` held after a change
# (``stopped``), or someone of the managing agency waived it with a reason (``waived``). A
# clock without a row here is running, or waits for its timestamp.
clock_stops = Table(
    "clock_stops",
    metadata,
    Column("referral_id", String(36), ForeignKey("referrals.id"), primary_key=True),
    Column("clock", String(64), primary_key=True),
    Column("outcome", String(16), nullable=False),
    Column("reason", String(64), nullable=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("by_user_id", String(100), nullable=False),
    Column("timeline_seq", Integer, nullable=False),
)

# Work asked of an agency; opened when a state is entered, closed when it is left.
tasks = Table(
    "tasks",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("referral_id", String(36), ForeignKey("referrals.id"), nullable=False),
    # The state that opened it; None for tasks outside the state graph (withdrawal notices).
    Column("state", String(200), nullable=True),
    Column("name", String(64), nullable=False),
    Column("role", String(64), nullable=False),
    Column("agency_slot", String(64), nullable=True),
    Column("agency_id", String(100), nullable=True),
    Column("ask", Text, nullable=False),
    # open, done (the state was left by an event), cancelled (left by revoke or withdrawal).
    Column("status", String(16), nullable=False, default="open"),
    Column("due_at", UtcDateTime(), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("closed_at", UtcDateTime(), nullable=True),
    Column("closed_by_event", String(200), nullable=True),
    Index("ix_tasks_agency", "agency_id", "status", "created_at", "id"),
    Index("ix_tasks_referral", "referral_id", "status"),
)

# A notification to send: written in the transaction that caused it, sent later.
#
# ``id`` is the message id receivers use to drop duplicates (delivery is at least once).
# ``context`` holds what the template may show: case code, what is asked, by when; never a
# name, a contact detail or an incident detail.
outbox = Table(
    "outbox",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("referral_id", String(36), ForeignKey("referrals.id"), nullable=False),
    Column("template", String(64), nullable=False),
    Column("recipient_role", String(64), nullable=False),
    Column("recipient_agency_id", String(100), nullable=True),
    Column("context", Json, nullable=False, default=dict),
    Column("created_at", UtcDateTime(), nullable=False),
    # pending, sent, dead (kept failing; an incident is on the timeline).
    Column("status", String(16), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    Column("lease_until", UtcDateTime(), nullable=True),
    Column("sent_at", UtcDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Index("ix_outbox_pending", "status", "next_attempt_at"),
)

# A notification rendered into an agency's in-app inbox (the API lists these).
#
# One row per outbox message: ``message_id`` is the outbox id, so a message delivered
# twice (delivery is at least once) lands once.
inbox_messages = Table(
    "inbox_messages",
    metadata,
    Column("message_id", String(36), primary_key=True),
    Column("referral_id", String(36), ForeignKey("referrals.id"), nullable=False),
    Column("case_code", String(32), nullable=False),
    Column("recipient_role", String(64), nullable=False),
    Column("recipient_agency_id", String(100), nullable=True),
    Column("template", String(64), nullable=False),
    Column("language", String(16), nullable=False),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("read_at", UtcDateTime(), nullable=True),
    Index("ix_inbox_agency", "recipient_agency_id", "recipient_role", "read_at"),
    Index("ix_inbox_created", "recipient_agency_id", "recipient_role", "created_at", "message_id"),
)

# Consent given, for a scope: purpose, recipient, data categories, country, expiry.
consent_grants = Table(
    "consent_grants",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("referral_id", String(36), ForeignKey("referrals.id"), nullable=False),
    Column("scope", String(64), nullable=False),
    Column("purpose", Text, nullable=False),
    Column("recipient_slot", String(64), nullable=False),
    # The one agency the survivor agreed to; None: any agency of ``recipient_types`` in
    # ``country``.
    Column("recipient_agency_id", String(100), nullable=True),
    # The agency types agreed to when no one agency is named; None (grants recorded before
    # types were kept): any type the scope's agency slot takes.
    Column("recipient_types", Json, nullable=True),
    # The data categories agreed to: the scope's, or fewer.
    Column("data_categories", Json, nullable=False, default=list),
    Column("country", String(11), nullable=False),
    # survivor, caregiver, trusted_adult or caseworker (the child's best interest).
    Column("given_by", String(32), nullable=False),
    # The child's assent: none, verbal, written or not_required.
    Column("assent", String(16), nullable=False),
    Column("survivor_age", Integer, nullable=False),
    Column("granted_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=True),
    Column("recorded_by", String(100), nullable=False),
    Index("ix_consent_grants_referral", "referral_id", "scope"),
)

# A grant withdrawn: later disclosures under it are refused.
consent_withdrawals = Table(
    "consent_withdrawals",
    metadata,
    Column("grant_id", String(36), ForeignKey("consent_grants.id"), primary_key=True),
    Column("referral_id", String(36), ForeignKey("referrals.id"), nullable=False),
    Column("withdrawn_at", UtcDateTime(), nullable=False),
    Column("recorded_by", String(100), nullable=False),
)

# Who holds which data of a referral, and under which grant or override.
disclosures = Table(
    "disclosures",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("referral_id", String(36), ForeignKey("referrals.id"), nullable=False),
    Column("agency_slot", String(64), nullable=False),
    Column("agency_id", String(100), nullable=False),
    Column("grant_id", String(36), nullable=True),
    Column("override", Boolean, nullable=False, default=False),
    Column("fields", Json, nullable=False, default=list),
    # The non-identifying fields' values as disclosed (None: disclosed before values were
    # kept).
    Column("field_values", Json, nullable=True),
    # The identifying fields' values as disclosed, sealed with the case key (erasing the case
    # erases them).
    Column("sealed_values", LargeBinary, nullable=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("timeline_seq", Integer, nullable=False),
    Index("ix_disclosures_referral", "referral_id"),
    **_NEVER_REUSE_IDS,
)

# A case transfer: the managing agency asks another agency to take over the case. At most one
# is pending per referral (requests are serialised by the referral's version); accepting it
# makes ``to_agency_id`` the referral's owner. Agencies by directory id, users by id, the
# reason a structured code of the SOP: never free text.
transfers = Table(
    "transfers",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("referral_id", String(36), ForeignKey("referrals.id"), nullable=False),
    # pending, accepted, declined, cancelled.
    Column("status", String(16), nullable=False),
    Column("from_agency_id", String(100), nullable=False),
    Column("to_agency_id", String(100), nullable=False),
    Column("requested_by", String(100), nullable=False),
    Column("requested_role", String(64), nullable=False),
    Column("requested_at", UtcDateTime(), nullable=False),
    # The consent grant that covered the disclosure of the SOP's transfer dataset.
    Column("grant_id", String(36), nullable=True),
    Column("answered_by", String(100), nullable=True),
    Column("answered_at", UtcDateTime(), nullable=True),
    Column("reason", String(64), nullable=True),
    Index("ix_transfers_referral", "referral_id", "status"),
)

# The first result of a request made with an idempotency key, returned on every retry.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("actor_id", String(100), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("referral_id", String(36), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("result", Json, nullable=False, default=dict),
    Column("created_at", UtcDateTime(), nullable=False),
)

# Someone who calls the API: one role, at one agency (none for coordinators and auditors
# acting for no agency). Only the SHA-256 of the bearer token is kept; the token itself is
# shown once, when the user is created or the token rotated.
users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("username", String(100), nullable=False, unique=True),
    Column("role", String(64), nullable=False),
    Column("agency_id", String(100), nullable=True),
    # Hex SHA-256 of the bearer token; a request's token is hashed and looked up.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("disabled_at", UtcDateTime(), nullable=True),
    # When the current token was made (at creation, then at each rotation).
    Column("token_issued_at", UtcDateTime(), nullable=False),
    # From then on the token is refused (401); rotating it gives a fresh lifetime.
    Column("token_expires_at", UtcDateTime(), nullable=False),
    # Where notifications for her role reach her by e-mail (none: the in-app inbox only).
    Column("email", String(254), nullable=True),
    # The language she reads notifications in, one the templates are written in.
    Column("language", String(8), nullable=True),
    # The IANA time zone she reads due times in (none: her SOP's, else UTC).
    Column("timezone", String(64), nullable=True),
)

# Failed authentications of one client address in the current window: what the API's
# limit on them counts, shared by every API process through the database.
auth_failures = Table(
    "auth_failures",
    metadata,
    # The client's address, as the server saw it (behind a trusted proxy: the forwarded one).
    Column("client", String(64), primary_key=True),
    Column("window_started_at", UtcDateTime(), nullable=False),
    Column("failures", Integer, nullable=False),
    Index("ix_auth_failures_window", "window_started_at"),
)

# One read of protected data (or one refused attempt): who, when, which referral, which
# fields by name (never their values). Append-only: nothing updates or deletes these rows.
access_log = Table(
    "access_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor_id", String(100), nullable=False),
    Column("actor_role", String(64), nullable=False),
    Column("actor_agency_id", String(100), nullable=True),
    # What was read, such as ``referral.read`` or ``disclosed.read``.
    Column("action", String(64), nullable=False),
    # None for reads that span referrals (an inbox, a report) or name none that exists.
    Column("referral_id", String(36), nullable=True),
    Column("fields", Json, nullable=False, default=list),
    # ``granted``, or ``refused`` (the reader was answered 404 or 403).
    Column("outcome", String(16), nullable=False),
    # The client's address, for refused authentications (``auth.*``); None otherwise.
    Column("client", String(64), nullable=True),
    Index("ix_access_log_referral", "referral_id", "id"),
    Index("ix_access_log_actor", "actor_id", "id"),
    **_NEVER_REUSE_IDS,
)

# An SOP uploaded through the API (:mod:`sop_engine.publishing` writes these rows):
# pending, replaceable, until a second coordinator approves it (then published: immutable,
# and compiled into the library at every start beside the SOP files, see
# :mod:`sop_engine.language.published`) or refuses it (until it is uploaded again).
sop_sources = Table(
    "sop_sources",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("title", Text, nullable=False),
    # The YAML text exactly as uploaded.
    Column("source", Text, nullable=False),
    # Hex SHA-256 of the UTF-8 source: what was checked is what is published.
    Column("sha256", String(64), nullable=False),
    # ``pending``, ``refused`` or ``published``.
    Column("status", String(16), nullable=False),
    # The user id (never the name) of whoever uploaded the current text.
    Column("uploaded_by", String(100), nullable=False),
    Column("uploaded_at", UtcDateTime(), nullable=False),
    # The coordinator who approved the text: never its uploader, unless a single
    # coordinator was allowed (a demo).
    Column("published_by", String(100), nullable=True),
    Column("published_at", UtcDateTime(), nullable=True),
    Index("ix_sop_sources_status", "status", "key", "version"),
)

# A coordinator's decision on an uploaded SOP's text: ``approved`` (it was published)
# or ``refused``, with the SHA-256 of the text decided on and the reviewer's comment. Rows
# are only ever added: they are the record of who let each version go live.
sop_reviews = Table(
    "sop_reviews",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    # The text decided on (the approver or refuser read this one).
    Column("sha256", String(64), nullable=False),
    # ``approved`` or ``refused``.
    Column("decision", String(16), nullable=False),
    Column("reviewer_id", String(100), nullable=False),
    # Who uploaded the text decided on: the second pair of eyes is ``reviewer_id``.
    Column("uploaded_by", String(100), nullable=False),
    # Why (required for a refusal); about the SOP, never about a case.
    Column("comment", Text, nullable=True),
    Column("decided_at", UtcDateTime(), nullable=False),
    Index("ix_sop_reviews_key", "key", "version", "id"),
)

# A one-way fingerprint (HKDF, :mod:`sop_engine.master_keys`) of each master key this
# database has been used with, by key id: a process given a different key under the same
# id refuses to start instead of writing case keys the rest of the cluster cannot open.
master_key_fingerprints = Table(
    "master_key_fingerprints",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("first_seen_at", UtcDateTime(), nullable=False),
)

# One periodic flow's (the escalation sweep's, the dispatch's...) run lease and its last
# success (:mod:`sop_engine.runtime.periodic`): one run works at a time, a run that died
# loses the lease when it runs out, and readiness asks when the last run succeeded.
periodic_runs = Table(
    "periodic_runs",
    metadata,
    Column("name", String(64), primary_key=True),
    # The worker process holding the lease (``host:pid``).
    Column("holder", String(200), nullable=True),
    # The holder's Prefect flow run id, when it runs under Prefect.
    Column("run_id", String(64), nullable=True),
    Column("lease_until", UtcDateTime(), nullable=True),
    # When the holder (or the last holder) took the lease.
    Column("started_at", UtcDateTime(), nullable=True),
    # When a run last finished its work.
    Column("succeeded_at", UtcDateTime(), nullable=True),
    # When that run began: a run scheduled before it has nothing left to do.
    Column("success_began_at", UtcDateTime(), nullable=True),
    # That run's counts by outcome (``escalated``: 3), never case data.
    Column("counts", Json, nullable=False, default=dict),
)

# The first result of an upload or publication sent with an ``Idempotency-Key``,
# written in the same transaction as the change, returned on every retry.
publishing_requests = Table(
    "publishing_requests",
    metadata,
    Column("actor_id", String(100), primary_key=True),
    # The operation's name and the SHA-256 of the client's key.
    Column("key", String(200), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("result", Json, nullable=False, default=dict),
    Column("created_at", UtcDateTime(), nullable=False),
)

# A service directory entry kept through the API (:mod:`sop_engine.directory.managed`):
# an agency added to the YAML directory, or replacing the YAML entry of the same id.
managed_agencies = Table(
    "managed_agencies",
    metadata,
    Column("id", String(100), primary_key=True),
    # The entry as a directory file writes it (keys and values of the directory schema).
    Column("entry", Json, nullable=False, default=dict),
    # Bumped by every change; ``If-Match`` compares it.
    Column("revision", Integer, nullable=False, default=1),
    Column("created_by", String(100), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_by", String(100), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)
