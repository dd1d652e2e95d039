"""The compiled SOP as neutral, immutable objects: what an SOP *is*, apart from any run of it.

A :class:`SopSpec` is built once per (key, version) and shared by every referral pinned to
it. Nothing here touches a database or a referral. Collections are tuples and read-only
mappings, so that a spec cannot be changed after it is checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from types import MappingProxyType
from typing import Literal, TypeVar

__all__ = [
    "BUILTIN_ANCHORS",
    "BUILTIN_FIELDS",
    "CASE_REFERENCE",
    "CLOCK_ANCHORS",
    "DEFAULT_REOPEN_REASONS",
    "DEFAULT_UNSUCCESSFUL_REASONS",
    "DEFAULT_WAIVE_REASONS",
    "DEFAULT_WAIVE_ROLES",
    "ENDED_STAGES",
    "FEEDBACK_TEMPLATES",
    "HANDOFF_ANSWERS",
    "HANDOFF_STAGES",
    "IDLE_STAGE",
    "MANAGING_AGENCY",
    "OUTCOMES",
    "OUTCOME_KEYS",
    "REVOKED_TEMPLATE",
    "TRANSFER_DEADLINE",
    "TRANSFER_TEMPLATES",
    "AgencySlot",
    "ClockSpec",
    "ConsentScope",
    "DataCategory",
    "DeadlineSpec",
    "Disclosure",
    "EscalationLevel",
    "FactSpec",
    "HandoffSpec",
    "Jurisdiction",
    "Notification",
    "Override",
    "ReopenSpec",
    "RoleSpec",
    "SopSpec",
    "Source",
    "StateSpec",
    "TaskSpec",
    "TransferSpec",
    "TransitionSpec",
    "Where",
    "frozen_map",
]

FactType = Literal["string", "integer", "number", "boolean", "date", "datetime", "enum", "list"]

CASE_REFERENCE = "case_reference"
"""Data category of the non-identifying references every referral has."""

BUILTIN_FIELDS: Mapping[str, str] = MappingProxyType(
    {"case_code": CASE_REFERENCE, "consent_reference": CASE_REFERENCE}
)
"""Dataset fields every SOP may disclose without declaring them, with their category."""

BUILTIN_ANCHORS = ("entered", "incident_at", "disclosed_at", "created_at")
"""What a deadline may run from, besides a datetime fact."""

HANDOFF_STAGES = ("sent", "acknowledged", "accepted")
"""The waiting stages of a handoff; declined, delivered and revoked leave it."""

OUTCOME_KEYS = ("delivered", "declined", "revoked")
"""Where a handoff that occupies the case's state leaves it, by how the handoff ended."""

IDLE_STAGE = "idle"
"""A parallel handoff never sent: ``<handoff>.idle``. It ends in ``<handoff>.delivered``,
``.declined`` or ``.revoked``, and may be sent again from any of the four. Only the machine
knows these as states (and the timeline, as where an answer left the handoff); the spec
has none, and ``referrals.handoffs`` lists only the open ones."""

ENDED_STAGES = ("delivered", "declined", "revoked")
"""Where a parallel handoff ends, by how."""

HANDOFF_ANSWERS = ("acknowledge", "accept", "decline", "deliver")
"""A handoff's events that only the receiving agency fires."""

FEEDBACK_TEMPLATES: Mapping[str, str] = MappingProxyType(
    {
        "acknowledge": "referral_acknowledged",
        "accept": "referral_accepted",
        "decline": "referral_declined",
        "deliver": "referral_delivered",
    }
)
"""What the sender is told of each answer of the receiver (the handoff's first sender
role, at its sender's agency); a revoke tells the receiver :data:`REVOKED_TEMPLATE`."""

REVOKED_TEMPLATE = "referral_revoked"

OUTCOMES = ("successful", "unsuccessful")
"""How a delivery ends: the service was given, or it was not (with a reason)."""

DEFAULT_UNSUCCESSFUL_REASONS = (
    "survivor_did_not_attend",
    "survivor_declined_service",
    "service_not_available",
    "could_not_contact_survivor",
    "other",
)
"""Why a delivery was unsuccessful, unless the handoff names its own reasons."""

MANAGING_AGENCY = "managing_agency"
"""The agency that manages the referral (its owner), as transitions and handoffs name it
among the SOP's agency slots: who fires a transition that names no ``agencies``."""


K = TypeVar("K")
V = TypeVar("V")


def frozen_map(items: Mapping[K, V] | None = None) -> Mapping[K, V]:
    """A read-only copy of ``items``."""
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True, slots=True)
class Where:
    """Where a part of the SOP was written, and where each of its own keys was."""

    file: str
    line: int
    keys: tuple[tuple[str, str, int], ...] = ()

    def of(self, key: str) -> Where:
        """The location of one of this object's keys, or of the object itself."""
        for name, file, line in self.keys:
            if name == key:
                return Where(file, line)
        return Where(self.file, self.line)


_NOWHERE = Where("<engine>", 0)


@dataclass(frozen=True, slots=True)
class Source:
    title: str
    url: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Jurisdiction:
    countries: tuple[str, ...] = ()
    origin: str | None = None
    destination: str | None = None
    context: str = "development"

    @property
    def is_corridor(self) -> bool:
        return self.origin is not None


@dataclass(frozen=True, slots=True)
class DataCategory:
    name: str
    description: str = ""
    identifying: bool = False
    where: Where = _NOWHERE


@dataclass(frozen=True, slots=True)
class FactSpec:
    name: str
    type: FactType
    values: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    category: str | None = None
    identifying: bool = False
    description: str = ""
    where: Where = _NOWHERE


@dataclass(frozen=True, slots=True)
class AgencySlot:
    """An agency the SOP refers to by its part in the procedure, filled per referral."""

    name: str
    types: tuple[str, ...]
    country: str = "any"
    description: str = ""
    where: Where = _NOWHERE


@dataclass(frozen=True, slots=True)
class RoleSpec:
    name: str
    agency_types: tuple[str, ...] = ()
    description: str = ""
    agency: str | None = None
    """The agency slot whose agency employs this role in a referral; None for SOP-wide roles."""
    where: Where = _NOWHERE


@dataclass(frozen=True, slots=True)
class ConsentScope:
    name: str
    purpose: str
    recipient: str
    data_categories: tuple[str, ...]
    country: str = "any"
    valid_for: timedelta | None = None
    description: str = ""
    where: Where = _NOWHERE


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    role: str
    ask: str
    agency: str | None = None
    where: Where = _NOWHERE


@dataclass(frozen=True, slots=True)
class EscalationLevel:
    """One rung of a ladder: ``after`` the deadline passed, notify these roles."""

    level: int
    after: timedelta
    notify: tuple[str, ...]
    template: str
    fire: str | None = None
    where: Where = _NOWHERE


@dataclass(frozen=True, slots=True)
class DeadlineSpec:
    name: str
    after: timedelta
    anchor: str = "entered"
    escalation: tuple[EscalationLevel, ...] = ()
    description: str = ""
    where: Where = _NOWHERE


@dataclass(frozen=True, slots=True)
class StateSpec:
    name: str
    description: str = ""
    initial: bool = False
    final: bool = False
    requires: tuple[str, ...] = ()
    tasks: Mapping[str, TaskSpec] = field(default_factory=frozen_map)
    deadlines: Mapping[str, DeadlineSpec] = field(default_factory=frozen_map)
    handoff: str | None = None
    """Name of the handoff this state is a stage of, if any."""
    stage: str | None = None
    where: Where = _NOWHERE


@dataclass(frozen=True, slots=True)
class Notification:
    template: str
    to: str
    agency: str | None = None
    where: Where = _NOWHERE


@dataclass(frozen=True, slots=True)
class Disclosure:
    to: str
    fields: tuple[str, ...]
    where: Where = _NOWHERE


@dataclass(frozen=True, slots=True)
class Override:
    """Sharing without consent: a written justification and a sign-off are always required."""

    reasons: tuple[str, ...]
    sign_off: str
    where: Where = _NOWHERE


@dataclass(frozen=True, slots=True)
class TransitionSpec:
    id: str
    event: str
    sources: tuple[str, ...]
    target: str
    roles: tuple[str, ...]
    guard: str | None = None
    sets: tuple[str, ...] = ()
    consent: str | None = None
    override: Override | None = None
    discloses: Disclosure | None = None
    notify: tuple[Notification, ...] = ()
    description: str = ""
    handoff: str | None = None
    """For the transitions a handoff generates: its name (the action is ``event``'s suffix)."""
    agencies: tuple[str, ...] = (MANAGING_AGENCY,)
    """The agency slots whose agency may fire it (:data:`MANAGING_AGENCY`: the referral's
    owner)."""
    region: str | None = None
    """The parallel handoff this transition moves (its answers, and the transitions that
    open it); None: it moves the case's own state."""
    opens: bool = False
    """It opens parallel handoff ``region``: its ``sources`` are case states, the case stays
    where it is, and the handoff must not be open already."""
    where: Where = _NOWHERE

    @property
    def action(self) -> str | None:
        """For a handoff's own transitions: acknowledge, accept, decline, deliver or revoke."""
        return self.event.rsplit(".", 1)[-1] if self.handoff is not None else None

    @property
    def answers_handoff(self) -> bool:
        """Whether it is a handoff's answer, which only the receiving agency gives."""
        return self.action in HANDOFF_ANSWERS


@dataclass(frozen=True, slots=True)
class HandoffSpec:
    """The four-stage handoff, written once: sent, acknowledged, accepted or declined, delivered.

    Entering the handoff's state sends the referral; the sender may revoke it until delivery.
    """

    name: str
    to: str
    role: str
    sender_roles: tuple[str, ...]
    dataset: tuple[str, ...]
    acknowledge_within: timedelta
    escalation: tuple[EscalationLevel, ...]
    delivered: str
    declined: str
    revoked: str
    consent: str | None = None
    override: Override | None = None
    service: str = ""
    respond_within: timedelta | None = None
    deliver_within: timedelta | None = None
    decline_reasons: tuple[str, ...] = ()
    reason_required: bool = True
    unsuccessful_reasons: tuple[str, ...] = DEFAULT_UNSUCCESSFUL_REASONS
    """Why a delivery may be reported unsuccessful (one is always required then)."""
    untimed: Mapping[str, str] = field(default_factory=frozen_map)
    """Why a stage has no deadline, by its task (``respond``, ``deliver``): a stage without
    ``respond_within`` or ``deliver_within`` must say why here."""
    notify: tuple[Notification, ...] = ()
    sender: str = MANAGING_AGENCY
    """The agency slot that sends the referral and alone may revoke it."""
    written_outcomes: tuple[str, ...] = ()
    """Which of ``delivered``, ``declined`` and ``revoked`` the source gives (a handoff
    occupying the case's state needs all three; a parallel one none)."""
    parallel: bool = False
    """It runs alongside the case instead of occupying its state: opening it leaves the case
    where it is, its stages move on their own, and it ends (``<name>.idle``) when declined,
    delivered or revoked. Several parallel handoffs are open at once."""
    where: Where = _NOWHERE


DEFAULT_REOPEN_REASONS = ("survivor_returned", "new_incident", "closed_in_error", "other")
"""Why a closed case is reopened, unless the SOP names its own reasons."""


@dataclass(frozen=True, slots=True)
class ReopenSpec:
    """How a closed case is reopened: the state it returns to, who at the managing agency
    may reopen it, and the reasons it may be reopened for."""

    to: str
    roles: tuple[str, ...]
    reasons: tuple[str, ...] = DEFAULT_REOPEN_REASONS
    where: Where = _NOWHERE


TRANSFER_DEADLINE = "transfer_answer"
"""The name of a pending transfer's answer deadline (its timers and escalations)."""

TRANSFER_TEMPLATES: Mapping[str, str] = MappingProxyType(
    {
        "request": "transfer_requested",
        "accept": "transfer_accepted",
        "decline": "transfer_declined",
        "cancel": "transfer_cancelled",
    }
)
"""What each step of a transfer tells the other side: a request and a cancellation the
receiving agency's answering role; an acceptance and a refusal the requester's role at the
agency that asked."""


@dataclass(frozen=True, slots=True)
class TransferSpec:
    """How the managing agency may hand the case's responsibility to another agency.

    Holders of ``requester_roles`` at the managing agency request it, naming an agency of the
    service directory that fits slot ``to``; the ``dataset`` is disclosed to it under a grant
    of ``consent``. The receiving agency's ``role`` accepts (it becomes the managing agency)
    or declines with one of ``decline_reasons``, within ``respond_within`` (the ``escalation``
    ladder notifies people when it passes); the requester may cancel before the answer.
    """

    to: str
    role: str
    requester_roles: tuple[str, ...]
    consent: str
    dataset: tuple[str, ...]
    respond_within: timedelta
    escalation: tuple[EscalationLevel, ...]
    decline_reasons: tuple[str, ...]
    where: Where = _NOWHERE

    @property
    def deadline(self) -> DeadlineSpec:
        """The answer's deadline, from the request, as the timers run it."""
        return DeadlineSpec(
            TRANSFER_DEADLINE,
            self.respond_within,
            "entered",
            self.escalation,
            "answer the transfer of the case",
            self.where,
        )


CLOCK_ANCHORS = ("incident_at", "disclosed_at", "created_at")
"""What a case clock may run from, besides a datetime fact (never a state's entry)."""

DEFAULT_WAIVE_ROLES = ("caseworker", "supervisor")
"""Who at the managing agency may waive a clock, unless the clock names its own roles."""

DEFAULT_WAIVE_REASONS = (
    "survivor_declined",
    "care_given_elsewhere",
    "survivor_unreachable",
    "survivor_moved_away",
    "not_clinically_indicated",
    "other",
)
"""Why a clock may be waived (codes, never free text), unless the clock names its own."""


@dataclass(frozen=True, slots=True)
class ClockSpec:
    """A clinical clock of the case, not of a state: it starts as soon as its anchor is known
    (at creation, or when a later change records it), runs through every state and handoff,
    and stops for good once ``stops_when`` holds (or someone waives it, with a reason).

    ``ladder`` holds its reminders first (negative ``after``: that long before the clock is
    due), then its escalation levels, numbered 1.. in that order. A clock that
    ``blocks_closure`` keeps the case from entering a final state while it runs.
    """

    name: str
    after: timedelta
    anchor: str
    stops_when: str
    ladder: tuple[EscalationLevel, ...] = ()
    blocks_closure: bool = False
    waive_roles: tuple[str, ...] = DEFAULT_WAIVE_ROLES
    waive_reasons: tuple[str, ...] = DEFAULT_WAIVE_REASONS
    description: str = ""
    where: Where = _NOWHERE

    @property
    def reminders(self) -> tuple[EscalationLevel, ...]:
        return tuple(lv for lv in self.ladder if lv.after < timedelta(0))

    @property
    def escalation(self) -> tuple[EscalationLevel, ...]:
        return tuple(lv for lv in self.ladder if lv.after >= timedelta(0))


@dataclass(frozen=True, slots=True)
class SopSpec:
    """One version of one SOP, complete and checked."""

    key: str
    version: int
    title: str
    jurisdiction: Jurisdiction
    effective: date
    review: date
    languages: tuple[str, ...]
    states: Mapping[str, StateSpec]
    transitions: tuple[TransitionSpec, ...]
    description: str = ""
    extends: str | None = None
    timezone: str | None = None
    sources: tuple[Source, ...] = ()
    data_categories: Mapping[str, DataCategory] = field(default_factory=frozen_map)
    facts: Mapping[str, FactSpec] = field(default_factory=frozen_map)
    agencies: Mapping[str, AgencySlot] = field(default_factory=frozen_map)
    roles: Mapping[str, RoleSpec] = field(default_factory=frozen_map)
    consent_scopes: Mapping[str, ConsentScope] = field(default_factory=frozen_map)
    handoffs: Mapping[str, HandoffSpec] = field(default_factory=frozen_map)
    reopen: ReopenSpec | None = None
    """How a closed case is reopened; None: it cannot be."""
    transfer: TransferSpec | None = None
    """How the case is transferred to another managing agency; None: it cannot be."""
    clocks: Mapping[str, ClockSpec] = field(default_factory=frozen_map)
    """The case's clinical clocks: they run whatever state the case is in."""
    file: str = ""
    where: Where = _NOWHERE

    @property
    def ref(self) -> str:
        return f"{self.key}@{self.version}"

    @property
    def initial_state(self) -> str:
        return next(s.name for s in self.states.values() if s.initial)

    @property
    def final_states(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.states.values() if s.final)

    @property
    def events(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.event for t in self.transitions))

    @property
    def regions(self) -> tuple[str, ...]:
        """The parallel handoffs, each a region of its own beside the case's state."""
        return tuple(h.name for h in self.handoffs.values() if h.parallel)

    def transitions_from(
        self, state: str, open_handoffs: Mapping[str, str] | None = None
    ) -> tuple[TransitionSpec, ...]:
        """What may happen with the case in ``state`` and the parallel handoffs at the stages
        ``open_handoffs`` names (handoff name to stage state, open ones only)."""
        opened = open_handoffs or {}
        return tuple(t for t in self.transitions if _fits(t, state, opened))

    def transitions_for(
        self, state: str, event: str, open_handoffs: Mapping[str, str] | None = None
    ) -> tuple[TransitionSpec, ...]:
        opened = open_handoffs or {}
        return tuple(t for t in self.transitions if t.event == event and _fits(t, state, opened))


def _fits(t: TransitionSpec, state: str, open_handoffs: Mapping[str, str]) -> bool:
    if t.region is None:
        return state in t.sources
    if t.opens:
        return state in t.sources and t.region not in open_handoffs
    return open_handoffs.get(t.region) in t.sources
