"""Requests and answers of the case transfer routes. Requests refuse unknown fields.

A transfer's answer names the agencies by their directory ids, the consent grant by its id
and a decline's reason by the SOP's code: no fact of the case.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sop_engine.runtime.transfer import TransferView

__all__ = ["TransferDecline", "TransferPublic", "TransferRecorded", "TransferRequest"]


class TransferRequest(BaseModel):
    """Ask an agency of the service directory to take over the management of the case."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"to_agency_id": "TH-NGO-Z"}]}
    )

    to_agency_id: str = Field(min_length=1, max_length=100)
    """The receiving agency's id in the service directory; it must fit the SOP's slot."""


class TransferDecline(BaseModel):
    """Why the receiving agency declines: one of the SOP's ``transfer.decline_reasons``."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "no_capacity"}]}
    )

    reason: str = Field(min_length=1, max_length=64)


class TransferPublic(BaseModel):
    """One transfer of a case; ``version`` is the referral's (its ``ETag``)."""

    id: str
    case_code: str
    status: Literal["pending", "accepted", "declined", "cancelled"]
    from_agency_id: str
    to_agency_id: str
    requested_at: datetime
    consent_grant_id: str | None
    answered_at: datetime | None
    reason: str | None
    version: int

    @classmethod
    def of(cls, view: TransferView) -> TransferPublic:
        return cls(
            id=view.id,
            case_code=view.case_code,
            status=view.status,  # type: ignore[arg-type]
            from_agency_id=view.from_agency_id,
            to_agency_id=view.to_agency_id,
            requested_at=view.requested_at,
            consent_grant_id=view.grant_id,
            answered_at=view.answered_at,
            reason=view.reason,
            version=view.version,
        )


class TransferRecorded(TransferPublic):
    """The result of a step; ``replayed``: a retry with the first request's
    ``Idempotency-Key`` got the first result, and nothing was done again."""

    replayed: bool = False
