"""Requests and answers of the referral routes. Requests refuse unknown fields."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from sop_engine.runtime.fire import FireResult
from sop_engine.runtime.referrals import ReferralView

__all__ = [
    "CaseTime",
    "FireRequest",
    "FireResultPublic",
    "OverrideIn",
    "ReferralCreate",
    "ReferralPublic",
]

CaseTime = Annotated[
    AwareDatetime,
    Field(
        ge=datetime(1900, 1, 1, tzinfo=UTC),
        lt=datetime(2100, 1, 1, tzinfo=UTC),
        description="With its UTC offset; from 1900 to 2099 (UTC).",
    ),
]
"""A moment in a case, such as the incident. Bounded, so that it converts to UTC and the
deadlines counted from it stay within the calendar: ``9999-12-31T23:59:59-14:00`` was a 500."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReferralCreate(_Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sop_key": "example.corridor",
                    "sop_version": 1,
                    "origin_country": "TH",
                    "destination_country": "LA",
                    "incident_at": "2026-03-01T01:00:00Z",
                    "disclosed_at": "2026-03-02T01:00:00Z",
                    "facts": {"survivor_age": 24, "safe_contact_method": "phone_call"},
                }
            ]
        },
    )

    sop_key: str = Field(min_length=1, max_length=100)
    sop_version: int | None = Field(default=None, ge=1)
    """None: the latest version of the SOP."""
    origin_country: str = Field(min_length=2, max_length=2)
    destination_country: str = Field(min_length=2, max_length=2)
    incident_at: CaseTime | None = None
    disclosed_at: CaseTime | None = None
    facts: dict[str, Any] = Field(default_factory=dict)
    """Facts the SOP declares; identifying ones are sealed and never returned."""


class OverrideIn(_Request):
    reason: str
    justification: str
    signed_off_by: str
    signed_off_role: str


class FireRequest(_Request):
    """The payload of an event, as :func:`sop_engine.runtime.fire.fire` takes it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "facts": {
                        "risk_level": "medium",
                        "service_needed": "psychosocial_support",
                        "safety_plan_agreed": True,
                    }
                }
            ]
        },
    )

    facts: dict[str, Any] | None = None
    recipient_agency_id: str | None = None
    reason: str | None = None
    """A handoff's decline reason, or why its delivery was unsuccessful."""
    outcome: Literal["successful", "unsuccessful"] | None = None
    """How a handoff's delivery ended (its ``deliver`` event needs one)."""
    override: OverrideIn | None = None

    def payload(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class IncidentTimeRequest(_Request):
    """When the incident happened (with its time zone), and why it is recorded now: one of
    ``first_established``, ``survivor_recalled``, ``medical_record``, ``data_entry_error``,
    ``other``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"incident_at": "2026-03-01T22:00:00+07:00", "reason": "first_established"}
            ]
        },
    )

    incident_at: AwareDatetime
    reason: str = Field(min_length=1, max_length=40)


class ReopenRequest(_Request):
    """Why the closed case is reopened: one of its SOP's ``reopen.reasons``."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "survivor_returned"}]}
    )

    reason: str = Field(min_length=1, max_length=40)


class ClockWaiverRequest(_Request):
    """Why the case clock is waived: one of the clock's ``waive.reasons`` (by default
    ``survivor_declined``, ``care_given_elsewhere``, ``survivor_unreachable``,
    ``survivor_moved_away``, ``not_clinically_indicated``, ``other``)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "survivor_declined"}]}
    )

    reason: str = Field(min_length=1, max_length=40)


class ReferralPublic(BaseModel):
    """A referral without its identifying facts (only their names, in ``sealed_fields``).

    The managing agency sees every non-identifying fact; any other agency taking part sees
    only the facts disclosed to it under consent that still stands (:meth:`shared`)."""

    case_code: str
    sop_key: str
    sop_version: int
    state: str
    version: int
    origin_country: str
    destination_country: str
    owner_agency_id: str
    agencies: dict[str, Any]
    handoffs: dict[str, str]
    """Parallel handoffs open now, each to its stage (``justice_referral.sent``): all of
    them for the managing agency, for another only those it receives or sends."""
    facts: dict[str, Any]
    sealed_fields: list[str]
    incident_at: datetime | None
    disclosed_at: datetime | None
    created_at: datetime
    closed_at: datetime | None
    erased: bool
    available_events: list[str]
    """Events the calling user may fire now."""
    warnings: list[str] = []
    """On creation only: its SOP version is due for review (the referral was created)."""

    @classmethod
    def of(cls, view: ReferralView) -> ReferralPublic:
        return cls(
            case_code=view.case_code,
            sop_key=view.sop_key,
            sop_version=view.sop_version,
            state=view.state,
            version=view.version,
            origin_country=view.origin_country,
            destination_country=view.destination_country,
            owner_agency_id=view.owner_agency_id,
            agencies=dict(view.agencies),
            handoffs=dict(view.handoffs),
            facts=dict(view.facts),
            sealed_fields=list(view.sealed_fields),
            incident_at=view.incident_at,
            disclosed_at=view.disclosed_at,
            created_at=view.created_at,
            closed_at=view.closed_at,
            erased=view.erased,
            available_events=list(view.available_events),
            warnings=list(view.warnings),
        )

    def as_seen_by(self, agency_id: str | None) -> ReferralPublic:
        """As an agency other than the managing one sees it: the agency slots of the managing
        agency and its own, no incident or disclosure time (its facts are already only those
        it wrote or was disclosed: ``Runtime.read_as_agency``)."""
        keep = {agency_id, self.owner_agency_id}
        return self.model_copy(
            update={
                "agencies": {s: a for s, a in self.agencies.items() if a in keep},
                "incident_at": None,
                "disclosed_at": None,
            }
        )


class FireResultPublic(BaseModel):
    case_code: str
    event: str
    from_state: str
    state: str
    version: int
    available_events: list[str]
    timeline_seq: int
    disclosed_to: str | None
    consent_grant_id: str | None
    override: bool
    warnings: list[str]
    handoffs: dict[str, str]
    """Parallel handoffs open after the event, each to its stage: those the caller's agency
    receives or sends, or all of them for the managing agency."""
    replayed: bool
    """True when an earlier request with the same Idempotency-Key is answered again."""

    @classmethod
    def of(cls, r: FireResult) -> FireResultPublic:
        return cls(
            case_code=r.case_code,
            event=r.event,
            from_state=r.from_state,
            state=r.state,
            version=r.version,
            available_events=list(r.available_events),
            timeline_seq=r.timeline_seq,
            disclosed_to=r.disclosed_to,
            consent_grant_id=r.consent_grant_id,
            override=r.override,
            warnings=list(r.warnings),
            handoffs=dict(r.handoffs),
            replayed=r.replayed,
        )
