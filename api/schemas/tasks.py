"""Requests and answers of the agencies' routes: their tasks, the answers to a handoff, and
the read of the data disclosed to them. Requests refuse unknown fields.

A task names its referral by case code, with what is asked and by when; never a fact of the
case. The disclosed read is the one answer of the API that carries identifying values, and
only those disclosed to the caller's agency under consent that still stands.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sop_engine.runtime.disclosed import DisclosedView, DisclosureBasis
from sop_engine.runtime.tasks import TaskView

__all__ = [
    "DeclineRequest",
    "DisclosedPublic",
    "DisclosurePublic",
    "TaskPublic",
    "TaskStatus",
]

TaskStatus = Literal["open", "done", "cancelled", "any"]
"""``sop_engine.runtime.tasks.STATUSES`` and ``any``."""


class DeclineRequest(BaseModel):
    """Why the agency declines: one of the handoff's ``decline_reasons`` (see the task)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "no_capacity"}]}
    )

    reason: str = Field(min_length=1, max_length=100)


class DeliverRequest(BaseModel):
    """How the delivery ended: ``successful``, or ``unsuccessful`` with one of the handoff's
    ``unsuccessful_reasons`` (see the task). The referring agency is told either way."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"outcome": "successful"},
                {"outcome": "unsuccessful", "reason": "survivor_did_not_attend"},
            ]
        },
    )

    outcome: Literal["successful", "unsuccessful"]
    reason: str | None = Field(default=None, min_length=1, max_length=100)


class TaskPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0b7e6a52-8f0c-4d52-9a7e-3c1f2b9d4e10",
                    "name": "acknowledge",
                    "role": "agency_focal_point",
                    "ask": "Acknowledge the referral for return and reintegration",
                    "status": "open",
                    "agency_id": "LA-SW-B",
                    "agency_slot": "receiving_focal_point",
                    "state": "return_referral.sent",
                    "due_at": "2026-03-03T01:30:00Z",
                    "created_at": "2026-03-02T01:30:00Z",
                    "closed_at": None,
                    "closed_by_event": None,
                    "case_code": "R7KQ-M2XD-9PTA",
                    "sop_key": "example.corridor",
                    "sop_version": 1,
                    "referral_state": "return_referral.sent",
                    "handoff": "return_referral",
                    "stage": "sent",
                    "service": "return and reintegration",
                    "decline_reasons": ["no_capacity", "family_tracing_failed"],
                    "unsuccessful_reasons": ["survivor_did_not_attend", "other"],
                    "available_events": [
                        "return_referral.acknowledge",
                        "return_referral.decline",
                    ],
                }
            ]
        }
    )

    id: str
    name: str
    role: str
    ask: str
    status: str
    agency_id: str | None
    agency_slot: str | None
    state: str | None
    """The state that opened the task (null for a notice of withdrawn consent)."""
    due_at: datetime | None
    created_at: datetime
    closed_at: datetime | None
    closed_by_event: str | None
    case_code: str
    sop_key: str
    sop_version: int
    referral_state: str
    handoff: str | None
    """The handoff the task answers, if any: see ``POST /tasks/{task_id}/acknowledge`` etc."""
    stage: str | None
    service: str
    decline_reasons: list[str]
    unsuccessful_reasons: list[str]
    available_events: list[str]
    """Events the caller may fire on this task now (guards are checked when fired)."""

    @classmethod
    def of(cls, t: TaskView) -> TaskPublic:
        return cls(
            id=t.id,
            name=t.name,
            role=t.role,
            ask=t.ask,
            status=t.status,
            agency_id=t.agency_id,
            agency_slot=t.agency_slot,
            state=t.state,
            due_at=t.due_at,
            created_at=t.created_at,
            closed_at=t.closed_at,
            closed_by_event=t.closed_by_event,
            case_code=t.case_code,
            sop_key=t.sop_key,
            sop_version=t.sop_version,
            referral_state=t.referral_state,
            handoff=t.handoff,
            stage=t.stage,
            service=t.service,
            decline_reasons=list(t.decline_reasons),
            unsuccessful_reasons=list(t.unsuccessful_reasons),
            available_events=list(t.available_events),
        )


class DisclosurePublic(BaseModel):
    """One disclosure to the caller's agency, and whether its basis still stands."""

    at: datetime
    fields: list[str]
    consent_grant_id: str | None
    override: bool
    readable: bool
    lapsed: Literal["withdrawn", "expired"] | None
    """Why it may no longer be read; null while it may."""

    @classmethod
    def of(cls, b: DisclosureBasis) -> DisclosurePublic:
        return cls(
            at=b.at,
            fields=list(b.fields),
            consent_grant_id=b.grant_id,
            override=b.override,
            readable=b.readable,
            lapsed="expired" if b.lapsed == "expired" else ("withdrawn" if b.lapsed else None),
        )


class DisclosedPublic(BaseModel):
    """Exactly the fields disclosed to the caller's agency whose consent still stands (or
    that were shared under an override), identifying ones decrypted."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "case_code": "R7KQ-M2XD-9PTA",
                    "sop_key": "example.corridor",
                    "sop_version": 1,
                    "state": "return_referral.sent",
                    "erased": False,
                    "fields": {
                        "case_code": "R7KQ-M2XD-9PTA",
                        "consent_reference": "5d0c2f7e-3a51-4c8e-9f3b-7e2a1c6d9b04",
                        "risk_level": "medium",
                        "safe_contact_method": "text_message",
                        "service_needed": "safety_and_shelter",
                    },
                    "withheld": [],
                    "disclosures": [
                        {
                            "at": "2026-03-02T01:30:00Z",
                            "fields": [
                                "case_code",
                                "service_needed",
                                "risk_level",
                                "safe_contact_method",
                                "consent_reference",
                            ],
                            "consent_grant_id": "5d0c2f7e-3a51-4c8e-9f3b-7e2a1c6d9b04",
                            "override": False,
                            "readable": True,
                            "lapsed": None,
                        }
                    ],
                }
            ]
        }
    )

    case_code: str
    sop_key: str
    sop_version: int
    state: str
    erased: bool
    fields: dict[str, Any]
    """Field name -> value, for every field that may be read (null when not yet known)."""
    withheld: list[str]
    """Names of fields disclosed to the agency that it may no longer read."""
    disclosures: list[DisclosurePublic]

    @classmethod
    def of(cls, v: DisclosedView) -> DisclosedPublic:
        return cls(
            case_code=v.case_code,
            sop_key=v.sop_key,
            sop_version=v.sop_version,
            state=v.state,
            erased=v.erased,
            fields=dict(v.fields),
            withheld=list(v.withheld),
            disclosures=[DisclosurePublic.of(b) for b in v.disclosures],
        )
