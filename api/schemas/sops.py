"""What the SOP routes answer."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sop_engine.errors import Problem
from sop_engine.language.diagram import format_duration
from sop_engine.language.spec import SopSpec
from sop_engine.publishing import MAX_COMMENT, Review, StoredSop

__all__ = [
    "ProblemPublic",
    "ReviewOutcome",
    "ReviewPublic",
    "ReviewRequest",
    "SopListItem",
    "SopPublic",
    "StoredSopPublic",
    "StoredSopSource",
    "UploadReport",
    "ValidationReport",
]


class SopListItem(BaseModel):
    key: str
    version: int
    title: str
    effective: date
    review: date
    date_status: Literal["not_in_effect", "in_effect", "review_due"]
    """Today, where the SOP applies: new referrals start only on a version in effect; one
    due for review still starts them, with a warning (or not at all, by a setting)."""


class DeadlinePublic(BaseModel):
    name: str
    after: str
    """A duration as the SOP language writes it (``24h``, ``3d``)."""
    escalation_levels: int


class StatePublic(BaseModel):
    name: str
    description: str
    initial: bool
    final: bool
    requires: list[str]
    tasks: list[str]
    deadlines: list[DeadlinePublic]
    handoff: str | None


class TransitionPublic(BaseModel):
    event: str
    sources: list[str]
    target: str
    roles: list[str]
    consent: str | None
    discloses_to: str | None


class HandoffPublic(BaseModel):
    name: str
    to: str
    role: str
    sender_roles: list[str]
    dataset: list[str]
    acknowledge_within: str


class SopPublic(BaseModel):
    key: str
    version: int
    title: str
    description: str
    jurisdiction: list[str]
    origin: str | None
    destination: str | None
    initial_state: str
    states: list[StatePublic]
    events: list[str]
    transitions: list[TransitionPublic]
    handoffs: list[HandoffPublic]

    @classmethod
    def of(cls, spec: SopSpec) -> SopPublic:
        return cls(
            key=spec.key,
            version=spec.version,
            title=spec.title,
            description=spec.description,
            jurisdiction=list(spec.jurisdiction.countries),
            origin=spec.jurisdiction.origin,
            destination=spec.jurisdiction.destination,
            initial_state=spec.initial_state,
            states=[
                StatePublic(
                    name=s.name,
                    description=s.description,
                    initial=s.initial,
                    final=s.final,
                    requires=list(s.requires),
                    tasks=list(s.tasks),
                    deadlines=[
                        DeadlinePublic(
                            name=d.name,
                            after=format_duration(d.after),
                            escalation_levels=len(d.escalation),
                        )
                        for d in s.deadlines.values()
                    ],
                    handoff=s.handoff,
                )
                for s in spec.states.values()
            ],
            events=list(spec.events),
            transitions=[
                TransitionPublic(
                    event=t.event,
                    sources=list(t.sources),
                    target=t.target,
                    roles=list(t.roles),
                    consent=t.consent,
                    discloses_to=t.discloses.to if t.discloses else None,
                )
                for t in spec.transitions
            ],
            handoffs=[
                HandoffPublic(
                    name=h.name,
                    to=h.to,
                    role=h.role,
                    sender_roles=list(h.sender_roles),
                    dataset=list(h.dataset),
                    acknowledge_within=format_duration(h.acknowledge_within),
                )
                for h in spec.handoffs.values()
            ],
        )


class ProblemPublic(BaseModel):
    file: str
    line: int
    message: str
    sop: str | None
    state: str | None
    hint: str | None

    @classmethod
    def of(cls, p: Problem) -> ProblemPublic:
        return cls(
            file=p.file, line=p.line, message=p.message, sop=p.sop, state=p.state, hint=p.hint
        )


class ValidationReport(BaseModel):
    """The answer of ``POST /sops/validate``: always 200; ``valid`` says whether it compiled."""

    valid: bool
    sop: str | None
    """``KEY@VERSION`` of the SOP, when it compiled."""
    problems: list[ProblemPublic]


class StoredSopPublic(BaseModel):
    """An SOP uploaded through the API: ``pending`` a second coordinator's review,
    ``refused`` or ``published``."""

    key: str
    version: int
    title: str
    status: Literal["pending", "refused", "published"]
    sha256: str = Field(description="SHA-256 (hex) of the YAML text as uploaded.")
    uploaded_by: str = Field(description="The user id of whoever uploaded this text.")
    uploaded_at: datetime
    published_by: str | None = Field(description="The user id of the approving coordinator.")
    published_at: datetime | None

    @classmethod
    def of(cls, s: StoredSop) -> StoredSopPublic:
        return cls(
            key=s.key,
            version=s.version,
            title=s.title,
            status=s.status,  # type: ignore[arg-type]
            sha256=s.sha256,
            uploaded_by=s.uploaded_by,
            uploaded_at=s.uploaded_at,
            published_by=s.published_by,
            published_at=s.published_at,
        )


class ReviewPublic(BaseModel):
    """One coordinator's decision on an upload's text."""

    decision: Literal["approved", "refused"]
    reviewer_id: str
    uploaded_by: str = Field(description="Who uploaded the text decided on.")
    sha256: str = Field(description="The text decided on.")
    comment: str | None
    decided_at: datetime

    @classmethod
    def of(cls, r: Review) -> ReviewPublic:
        return cls(
            decision=r.decision,  # type: ignore[arg-type]
            reviewer_id=r.reviewer_id,
            uploaded_by=r.uploaded_by,
            sha256=r.sha256,
            comment=r.comment,
            decided_at=r.decided_at,
        )


class StoredSopSource(StoredSopPublic):
    """An uploaded SOP with its YAML text and every decision on it, oldest first."""

    source: str
    reviews: list[ReviewPublic]

    @classmethod
    def of(cls, s: StoredSop) -> StoredSopSource:
        return cls(
            **StoredSopPublic.of(s).model_dump(),
            source=s.source or "",
            reviews=[ReviewPublic.of(r) for r in s.reviews],
        )


class UploadReport(ValidationReport):
    """The answer of ``POST /sops`` when the SOP compiled and was stored pending review (an
    SOP that does not compile is answered 422 ``definition_error`` with its problems)."""

    upload: StoredSopPublic
    replayed: bool = Field(description="True when this answers a retry with the same key.")


class ReviewRequest(BaseModel):
    """A coordinator's decision on the text they read."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sha256": "9f2c" + "0" * 60,
                    "comment": "checked against the national SOP's deadlines",
                }
            ]
        },
    )

    sha256: str = Field(
        pattern="^[0-9a-f]{64}$",
        description="The `sha256` of the text reviewed (from `GET /sops/{key}/{version}/source`)"
        ": a text uploaded again since is not decided on (409).",
    )
    comment: str | None = Field(
        default=None,
        max_length=MAX_COMMENT,
        description="Why; required to refuse. About the SOP only: never case data.",
    )


class ReviewOutcome(BaseModel):
    """The answer of ``POST /sops/{key}/{version}/approve`` and ``.../refuse``."""

    sop: str
    """``KEY@VERSION``; live when approved."""
    upload: StoredSopPublic
    replayed: bool = Field(description="True when this answers a retry with the same key.")
