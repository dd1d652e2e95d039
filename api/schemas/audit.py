"""Answers of the audit routes: referrals without facts, timelines with their verification,
the access log and deadline compliance. Ids and field names only, never personal data."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.pagination import Page
from sop_engine.runtime.access_log import AccessRecord
from sop_engine.runtime.audit import PageVerification, ReferralSummary, TimelineRecord
from sop_engine.runtime.compliance import ComplianceReport, ComplianceRow
from sop_engine.timeline.verifications import FullVerification

__all__ = [
    "AccessLogEntryPublic",
    "AuditReferral",
    "ChainStatus",
    "ComplianceReportPublic",
    "ComplianceRowPublic",
    "FullVerificationPublic",
    "TimelineEntryPublic",
    "TimelinePage",
]


class AuditReferral(BaseModel):
    """A referral as auditors list it: no facts, not even the names of sealed ones."""

    case_code: str
    sop_key: str
    sop_version: int
    state: str
    origin_country: str
    destination_country: str
    owner_agency_id: str
    agencies: dict[str, str]
    """Agency slot of the SOP -> the agency filling it."""
    created_at: datetime
    closed_at: datetime | None
    timeline_length: int
    erased: bool

    @classmethod
    def of(cls, r: ReferralSummary) -> AuditReferral:
        return cls(
            case_code=r.case_code,
            sop_key=r.sop_key,
            sop_version=r.sop_version,
            state=r.state,
            origin_country=r.origin_country,
            destination_country=r.destination_country,
            owner_agency_id=r.owner_agency_id,
            agencies=dict(r.agencies),
            created_at=r.created_at,
            closed_at=r.closed_at,
            timeline_length=r.timeline_length,
            erased=r.erased,
        )


class TimelineEntryPublic(BaseModel):
    seq: int
    at: datetime
    kind: str
    actor_id: str
    actor_role: str
    actor_agency_id: str | None
    event: str | None
    from_state: str | None
    to_state: str | None
    consent_grant_id: str | None
    disclosed_to: str | None
    disclosed_fields: list[str] = Field(description="Names of the fields disclosed, not values.")
    override: bool
    details: dict[str, Any] = Field(
        description="Names, codes and ids only; an override's justification is sealed."
    )
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, e: TimelineRecord) -> TimelineEntryPublic:
        return cls(
            seq=e.seq,
            at=e.at,
            kind=e.kind,
            actor_id=e.actor_id,
            actor_role=e.actor_role,
            actor_agency_id=e.actor_agency_id,
            event=e.event,
            from_state=e.from_state,
            to_state=e.to_state,
            consent_grant_id=e.consent_grant_id,
            disclosed_to=e.disclosed_to,
            disclosed_fields=list(e.disclosed_fields),
            override=e.override,
            details=dict(e.details),
            prev_hash=e.prev_hash,
            hash=e.hash,
        )


class FullVerificationPublic(BaseModel):
    """A full verification of the chain, as recorded when it ran: every entry recomputed."""

    verified_at: datetime
    entries: int = Field(description="How many entries it recomputed: the chain's length then.")
    ok: bool
    broken_seq: int | None = Field(description="The first entry that did not fit.")
    reason: str | None

    @classmethod
    def of(cls, v: FullVerification) -> FullVerificationPublic:
        return cls(
            verified_at=v.verified_at,
            entries=v.entries,
            ok=v.ok,
            broken_seq=v.broken_seq,
            reason=v.reason,
        )


class ChainStatus(BaseModel):
    """What this answer verified of the referral's hash chain, and the last full
    verification (docs/api.md, "What a timeline's verification says")."""

    ok: bool = Field(
        description="No break found: by this answer's recomputation and, when its scope is "
        "`page`, by the last full verification either."
    )
    entries: int = Field(description="The chain's length, as the referral records it.")
    scope: Literal["full", "page"] = Field(
        description="`full`: every entry was recomputed for this answer. `page`: the page's "
        "entries, from the checkpoint before them, and the chain's head."
    )
    checked_from_seq: int | None = Field(description="The first entry recomputed.")
    checked_to_seq: int | None = Field(description="The last entry recomputed.")
    broken_seq: int | None = Field(
        description="The first entry this answer found not to fit (null when none did)."
    )
    reason: str | None
    last_full_verification: FullVerificationPublic | None = Field(
        description="The last recorded full verification (null: none recorded)."
    )

    @classmethod
    def of(cls, v: PageVerification) -> ChainStatus:
        broken = v.broken
        last = v.last_full
        return cls(
            ok=v.ok,
            entries=v.entries,
            scope=v.scope,
            checked_from_seq=v.checked_from,
            checked_to_seq=v.checked_to,
            broken_seq=broken.entry_id if broken is not None else None,
            reason=broken.reason if broken is not None else None,
            last_full_verification=FullVerificationPublic.of(last) if last is not None else None,
        )


class TimelinePage(Page[TimelineEntryPublic]):
    case_code: str
    verification: ChainStatus


class AccessLogEntryPublic(BaseModel):
    id: int
    at: datetime
    actor_id: str
    actor_role: str
    actor_agency_id: str | None
    action: str
    case_code: str | None
    fields: list[str]
    outcome: str
    client: str | None = Field(
        default=None, description="The client's address, for refused authentications (auth.*)."
    )

    @classmethod
    def of(cls, r: AccessRecord) -> AccessLogEntryPublic:
        return cls(
            id=r.id,
            at=r.at,
            actor_id=r.actor_id,
            actor_role=r.actor_role,
            actor_agency_id=r.actor_agency_id,
            action=r.action,
            case_code=r.case_code,
            fields=list(r.fields),
            outcome=r.outcome,
            client=r.client,
        )


class ComplianceRowPublic(BaseModel):
    group: str | None = Field(description="key@version, an agency id or a country; null: unknown.")
    met: int
    missed: int
    overdue: int = Field(description="The part of missed still open.")
    pending: int
    cancelled: int
    untimed: int
    escalations: int
    rate: float | None = Field(description="met / (met + missed); null when both are 0.")

    @classmethod
    def of(cls, r: ComplianceRow) -> ComplianceRowPublic:
        return cls(
            group=r.group,
            met=r.met,
            missed=r.missed,
            overdue=r.overdue,
            pending=r.pending,
            cancelled=r.cancelled,
            untimed=r.untimed,
            escalations=r.escalations,
            rate=r.rate,
        )


class ComplianceReportPublic(BaseModel):
    group_by: str
    as_of: datetime
    since: datetime | None
    until: datetime | None
    sop: str | None
    rows: list[ComplianceRowPublic]

    @classmethod
    def of(cls, r: ComplianceReport) -> ComplianceReportPublic:
        return cls(
            group_by=r.group_by,
            as_of=r.as_of,
            since=r.since,
            until=r.until,
            sop=r.sop,
            rows=[ComplianceRowPublic.of(row) for row in r.rows],
        )
