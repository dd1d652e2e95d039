"""What the SOP routes answer."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from sop_engine.errors import Problem
from sop_engine.language.diagram import format_duration
from sop_engine.language.spec import SopSpec
from sop_engine.publishing import StoredSop

__all__ = [
    "ProblemPublic",
    "PublicationPublic",
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
    """An SOP uploaded through the API: a ``draft`` or ``published``."""

    key: str
    version: int
    title: str
    status: str
    sha256: str = Field(description="SHA-256 (hex) of the YAML text as uploaded.")
    uploaded_by: str = Field(description="The user id of whoever uploaded this text.")
    uploaded_at: datetime
    published_by: str | None
    published_at: datetime | None

    @classmethod
    def of(cls, s: StoredSop) -> StoredSopPublic:
        return cls(
            key=s.key,
            version=s.version,
            title=s.title,
            status=s.status,
            sha256=s.sha256,
            uploaded_by=s.uploaded_by,
            uploaded_at=s.uploaded_at,
            published_by=s.published_by,
            published_at=s.published_at,
        )


class StoredSopSource(StoredSopPublic):
    """An uploaded SOP with its YAML text."""

    source: str

    @classmethod
    def of(cls, s: StoredSop) -> StoredSopSource:
        return cls(**StoredSopPublic.of(s).model_dump(), source=s.source or "")


class UploadReport(ValidationReport):
    """The answer of ``POST /sops`` when the SOP compiled and was stored as a draft (an SOP
    that does not compile is answered 422 ``definition_error`` with its problems)."""

    draft: StoredSopPublic
    replayed: bool = Field(description="True when this answers a retry with the same key.")


class PublicationPublic(BaseModel):
    """The answer of ``POST /sops/{key}/{version}/publish``."""

    sop: str
    """``KEY@VERSION``, now live."""
    published: StoredSopPublic
    replayed: bool = Field(description="True when this answers a retry with the same key.")
