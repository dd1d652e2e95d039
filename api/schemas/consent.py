"""Requests and answers of the consent routes. Requests refuse unknown fields.

A grant's answer names the scope, who consented, the child's assent and the age band, never
the survivor's age, nor the written reason for a substitute's consent (which stays in the
request: the ledger does not keep it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.referrals import CaseTime
from sop_engine.runtime.ledger import GrantRecord

__all__ = [
    "AcknowledgementPublic",
    "Assent",
    "ConsentGrantCreate",
    "ConsentGrantPublic",
    "ConsentGrantRecorded",
    "GivenBy",
    "WithdrawalPublic",
]

GivenBy = Literal["survivor", "caregiver", "trusted_adult", "caseworker"]
"""Who consents (``sop_engine.runtime.consent.GIVEN_BY``; a test keeps the two equal)."""
Assent = Literal["none", "verbal", "written", "not_required"]
"""The child's assent (``sop_engine.runtime.consent.ASSENT``)."""


class ConsentGrantCreate(BaseModel):
    """Consent for one of the referral's SOP consent scopes.

    Who may consent depends on the survivor's age, taken from ``survivor_age`` here or else
    from the referral's ``survivor_age`` fact: 18+ and 15-17 the survivor herself; 12-14 a
    caregiver with the child's written assent; 6-11 a caregiver with verbal or written
    assent; 0-5 a caregiver. Where the caregiver is not safe, a ``trusted_adult`` or the
    ``caseworker`` consents instead, with a ``substitute_reason``.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"scope": "case_management", "given_by": "survivor"},
                {
                    "scope": "cross_border_return",
                    "given_by": "caregiver",
                    "assent": "written",
                    "survivor_age": 13,
                    "recipient_agency_id": "LA-SW-B",
                    "expires_at": "2026-09-01T00:00:00Z",
                },
            ]
        },
    )

    scope: str = Field(min_length=1, max_length=100)
    """One of the SOP's consent scopes, such as ``case_management``."""
    given_by: GivenBy
    assent: Assent = "not_required"
    substitute_reason: str | None = Field(default=None, max_length=2000)
    """Why a trusted adult or the caseworker consents instead of the caregiver."""
    recipient_agency_id: str | None = Field(default=None, min_length=1, max_length=100)
    """The one agency of the service directory the survivor agrees to (it must fit the
    scope's agency slot and country). None: the agency already filling the slot (the
    managing agency, for case management), else agencies of ``recipient_agency_type`` in
    ``country``."""
    recipient_agency_type: str | None = Field(default=None, min_length=1, max_length=64)
    """Without one agency: the type of agency agreed to (None: any type the slot takes)."""
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    """Without one agency: the country agreed to; needed when the scope and its slot name
    none (a regional or corridor SOP)."""
    data_categories: list[str] | None = Field(default=None, min_length=1, max_length=50)
    """The data categories agreed to: some of the scope's (None: all of them)."""
    expires_at: CaseTime | None = None
    """Must be in the future; None: the scope's ``valid_for``, if it has one."""
    survivor_age: int | None = Field(default=None, ge=0, le=130)
    """Only to decide who may consent; None: the referral's ``survivor_age`` fact."""


class ConsentGrantPublic(BaseModel):
    id: str
    scope: str
    purpose: str
    recipient_slot: str
    recipient_agency_id: str | None
    recipient_types: list[str] | None
    """Without one agency: the agency types agreed to (None: any the slot takes)."""
    data_categories: list[str]
    country: str
    given_by: str
    assent: str
    age_band: str
    granted_at: datetime
    expires_at: datetime | None
    withdrawn_at: datetime | None
    status: Literal["active", "expired", "withdrawn"]
    """At the time of the answer: withdrawn, else expired, else active."""

    @classmethod
    def of(cls, g: GrantRecord, now: datetime) -> ConsentGrantPublic:
        status: Literal["active", "expired", "withdrawn"] = "active"
        if g.withdrawn_at is not None:
            status = "withdrawn"
        elif g.expires_at is not None and g.expires_at <= now:
            status = "expired"
        return cls(
            id=g.id,
            scope=g.scope,
            purpose=g.purpose,
            recipient_slot=g.recipient_slot,
            recipient_agency_id=g.recipient_agency_id,
            recipient_types=list(g.recipient_types) if g.recipient_types is not None else None,
            data_categories=list(g.data_categories),
            country=g.country,
            given_by=g.given_by,
            assent=g.assent,
            age_band=g.age_band,
            granted_at=g.granted_at,
            expires_at=g.expires_at,
            withdrawn_at=g.withdrawn_at,
            status=status,
        )


class ConsentGrantRecorded(ConsentGrantPublic):
    replayed: bool = False
    """True when an earlier request with the same Idempotency-Key is answered again."""


class WithdrawalPublic(BaseModel):
    grant_id: str
    agencies_told: list[str]
    """Agencies holding data disclosed under the grant: each got a ``consent_withdrawn``
    notification and a task to acknowledge. Empty when nothing was disclosed under it."""
    replayed: bool = False


class AcknowledgementPublic(BaseModel):
    acknowledged: int
    """How many of the agency's open withdrawal tasks on this referral were closed."""
    replayed: bool = False
