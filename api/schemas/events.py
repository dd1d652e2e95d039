"""The events a user may fire on a referral now, each with what firing it takes.

Built from the referral's compiled SOP version: for every transition out of the current
state that the user's role and agency may fire (``sop_engine.runtime.access.may_fire``),
the facts it sets and the target state requires (typed as the SOP declares them), the
consent scope behind a disclosure and the agency slot it goes to, the override it allows,
and the reasons a handoff may be declined for. Guards are shown, not evaluated: they are
checked when the event is fired.
"""

from __future__ import annotations

from collections.abc import Collection

from pydantic import BaseModel, Field

from sop_engine.language.spec import FactSpec, SopSpec, TransitionSpec
from sop_engine.runtime.access import may_fire
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.referrals import ReferralView

__all__ = [
    "ConsentNeeded",
    "DisclosurePublic",
    "EventOption",
    "EventsAvailable",
    "FactPublic",
    "OverridePublic",
    "TransitionOption",
]


class FactPublic(BaseModel):
    name: str
    type: str
    """``string``, ``integer``, ``number``, ``boolean``, ``date``, ``datetime``, ``enum`` or
    ``list``."""
    values: list[str]
    """The allowed values of an ``enum``."""
    min: float | None
    max: float | None
    identifying: bool
    """Sealed with the case key when sent, and never returned."""

    @classmethod
    def of(cls, spec: SopSpec, f: FactSpec) -> FactPublic:
        category = spec.data_categories.get(f.category or "")
        return cls(
            name=f.name,
            type=f.type,
            values=list(f.values),
            min=f.min,
            max=f.max,
            identifying=f.identifying or (category is not None and category.identifying),
        )


class ConsentNeeded(BaseModel):
    scope: str
    purpose: str
    recipient: str
    """The agency slot the scope lets data go to."""


class DisclosurePublic(BaseModel):
    to: str
    """The agency slot receiving the data."""
    agency_id: str | None
    """The agency filling that slot on this referral; null: send ``recipient_agency_id``."""
    fields: list[str]
    """The dataset disclosed, by field name."""


class OverridePublic(BaseModel):
    """Sharing without consent: a reason, a written justification and another person's
    sign-off in the ``sign_off`` role (``override`` in the event's body)."""

    reasons: list[str]
    sign_off: str


class TransitionOption(BaseModel):
    """One way the event can go; with several, the first whose guard holds is taken."""

    to: str
    """The state the referral moves to."""
    description: str
    guard: str | None
    """The SOP's condition, checked when fired (409 ``guard_failed`` when it does not hold)."""
    sets: list[FactPublic]
    """Facts the event may set (``facts`` in the body); no others are accepted."""
    requires: list[FactPublic]
    """Facts the target state requires."""
    missing: list[str]
    """Of those, the ones the referral does not have yet: send them, or 409 ``missing_facts``."""
    consent: ConsentNeeded | None
    """The consent scope the transition names: a disclosure needs an unexpired, unwithdrawn
    grant of it covering the recipient (record one with ``POST .../consents``)."""
    discloses: DisclosurePublic | None
    override: OverridePublic | None
    """Present when this is an override: it shares data without consent."""


class EventOption(BaseModel):
    event: str
    handoff: str | None
    """For a handoff's own events (``NAME.acknowledge``, ``.accept``, ``.decline``,
    ``.deliver``, ``.revoke``): the handoff's name."""
    decline_reasons: list[str]
    """For declining a handoff: the ``reason`` values accepted."""
    reason_required: bool
    transitions: list[TransitionOption] = Field(min_length=1)


class EventsAvailable(BaseModel):
    case_code: str
    state: str
    version: int
    events: list[EventOption]
    """Events the calling user's role and agency may fire now, in the SOP's order."""

    @classmethod
    def of(
        cls, spec: SopSpec, view: ReferralView, actor: Actor, *, sets: str | None = None
    ) -> EventsAvailable:
        """The events ``actor`` may fire on ``view``; with ``sets``, only those that may set
        that fact."""
        known = {k for k, v in view.facts.items() if v is not None} | set(view.sealed_fields)
        options: dict[str, list[TransitionSpec]] = {}
        if view.available_events:  # none once the referral is closed or erased
            for t in spec.transitions_from(view.state, view.handoffs):
                wanted = sets is None or sets in t.sets
                if wanted and may_fire(spec, t, actor, view.owner_agency_id, view.agencies):
                    options.setdefault(t.event, []).append(t)
        return cls(
            case_code=view.case_code,
            state=view.state,
            version=view.version,
            events=[_event(spec, view, event, ts, known) for event, ts in options.items()],
        )


def _event(
    spec: SopSpec, view: ReferralView, event: str, ts: list[TransitionSpec], known: Collection[str]
) -> EventOption:
    handoff = ts[0].handoff
    declining = handoff is not None and event.endswith(".decline")
    h = spec.handoffs[handoff] if declining and handoff is not None else None
    return EventOption(
        event=event,
        handoff=handoff,
        decline_reasons=list(h.decline_reasons) if h else [],
        reason_required=h.reason_required if h else False,
        transitions=[_transition(spec, view, t, known) for t in ts],
    )


def _transition(
    spec: SopSpec, view: ReferralView, t: TransitionSpec, known: Collection[str]
) -> TransitionOption:
    target = spec.states.get(t.target)
    requires = target.requires if target is not None else ()
    scope = spec.consent_scopes.get(t.consent) if t.consent else None
    d = t.discloses
    return TransitionOption(
        to=t.target,
        description=t.description,
        guard=t.guard,
        sets=[FactPublic.of(spec, spec.facts[f]) for f in t.sets],
        requires=[FactPublic.of(spec, spec.facts[f]) for f in requires],
        missing=[f for f in requires if f not in known],
        consent=ConsentNeeded(scope=scope.name, purpose=scope.purpose, recipient=scope.recipient)
        if scope is not None
        else None,
        discloses=DisclosurePublic(
            to=d.to, agency_id=view.agencies.get(d.to), fields=list(d.fields)
        )
        if d is not None
        else None,
        override=OverridePublic(reasons=list(t.override.reasons), sign_off=t.override.sign_off)
        if t.override is not None
        else None,
    )
