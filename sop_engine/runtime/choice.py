"""Which transition an event fires: the request, the guard's view of the referral, and the
choice among an event's transitions by role, agency and guard."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row

from sop_engine.directory.model import ServiceDirectory
from sop_engine.errors import GuardFailed, InvalidInput, RoleNotAllowed
from sop_engine.language.compiler import CompiledSop
from sop_engine.language.spec import SopSpec, TransitionSpec
from sop_engine.runtime import consent
from sop_engine.runtime.access import may_fire, refusal
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.recipients import find_recipient

__all__ = [
    "OVERRIDE_KEYS",
    "PAYLOAD_KEYS",
    "EventRequest",
    "available_events",
    "choose_transition",
    "guard_context",
    "names_context",
    "parse_payload",
]

PAYLOAD_KEYS = frozenset({"facts", "recipient_agency_id", "reason", "outcome", "override"})
OVERRIDE_KEYS = frozenset({"reason", "justification", "signed_off_by", "signed_off_role"})


@dataclass
class EventRequest:
    event: str
    actor: Actor
    facts: dict[str, Any] = field(default_factory=dict)
    recipient_agency_id: str | None = None
    reason: str | None = None
    outcome: str | None = None
    override: dict[str, Any] | None = None


def parse_payload(event: str, actor: Actor, payload: Mapping[str, Any] | None) -> EventRequest:
    payload = dict(payload or {})
    unknown = sorted(set(payload) - PAYLOAD_KEYS)
    if unknown:
        raise InvalidInput(
            f"unknown payload key {unknown[0]!r} (known: {', '.join(sorted(PAYLOAD_KEYS))})",
            field=unknown[0],
        )
    for key in ("recipient_agency_id", "reason", "outcome"):
        if payload.get(key) is not None and not isinstance(payload[key], str):
            raise InvalidInput(f"{key} must be a string", field=key)
    override = payload.get("override")
    if override is not None:
        if not isinstance(override, Mapping):
            raise InvalidInput("override must be an object", field="override")
        extra = sorted(set(override) - OVERRIDE_KEYS)
        if extra:
            raise InvalidInput(f"unknown override key {extra[0]!r}", field=f"override.{extra[0]}")
        override = dict(override)
    return EventRequest(
        event=event,
        actor=actor,
        facts=dict(payload.get("facts") or {}),
        recipient_agency_id=payload.get("recipient_agency_id"),
        reason=payload.get("reason"),
        outcome=payload.get("outcome"),
        override=override,
    )


def guard_context(
    conn: Connection,
    sop: CompiledSop,
    t: TransitionSpec,
    *,
    ref: Row[Any],
    facts: Mapping[str, Any],
    now: datetime,
    directory: ServiceDirectory | None = None,
) -> dict[str, Any]:
    """What a guard sees; ``consent.SCOPE`` is whether a live grant of the scope covers the
    agency filling the scope's slot (any live grant of it while the slot is unfilled)."""
    return names_context(
        conn,
        sop.spec,
        ref,
        facts=facts,
        incident_at=ref.incident_at,
        agencies=ref.agencies or {},
        scopes=sop.guards[t.id].consent_scopes,
        now=now,
        directory=directory,
    )


def names_context(
    conn: Connection,
    spec: SopSpec,
    ref: Row[Any],
    *,
    facts: Mapping[str, Any],
    incident_at: datetime | None,
    agencies: Mapping[str, Any],
    scopes: Iterable[str],
    now: datetime,
    directory: ServiceDirectory | None,
) -> dict[str, Any]:
    """The names a CEL condition (a guard, a clock's ``stops_when``) sees: every declared
    fact, ``facts``, the timestamps and countries, and ``consent.SCOPE`` for ``scopes``
    (whether a live grant of it covers the agency filling its slot in ``agencies``)."""
    context: dict[str, Any] = dict.fromkeys(spec.facts)
    context.update((k, v) for k, v in facts.items() if k in spec.facts)
    context["facts"] = {k: v for k, v in facts.items() if v is not None}
    context.update(
        now=now,
        incident_at=incident_at,
        disclosed_at=ref.disclosed_at,
        hours_since_incident=(now - incident_at).total_seconds() / 3600 if incident_at else -1.0,
        origin=ref.origin_country,
        destination=ref.destination_country,
        consent={},
    )
    for scope_name in scopes:
        scope = spec.consent_scopes[scope_name]
        agency_id = agencies.get(scope.recipient)
        to = find_recipient(conn, directory or ServiceDirectory(), agency_id) if agency_id else None
        grant = consent.covering_grant(
            conn, referral_id=ref.id, scope=scope, recipient=to, categories=set(), now=now
        )
        context["consent"][scope_name] = grant is not None
    return context


def choose_transition(
    conn: Connection,
    sop: CompiledSop,
    *,
    ref: Row[Any],
    request: EventRequest,
    facts: Mapping[str, Any],
    now: datetime,
    directory: ServiceDirectory | None = None,
) -> TransitionSpec:
    """The first transition of the event, from the current state, that this actor may fire."""
    spec = sop.spec
    open_handoffs = ref.handoffs or {}
    candidates = spec.transitions_for(ref.state, request.event, open_handoffs)
    agencies = dict(ref.agencies or {})
    if request.recipient_agency_id:
        for t in candidates:
            if t.discloses is not None:
                agencies.setdefault(t.discloses.to, request.recipient_agency_id)
    role_refusals: list[str] = []
    guard_refusals: list[str] = []
    for t in candidates:
        why = refusal(spec, t, request.actor, ref.owner_agency_id, agencies)
        if why is not None:
            role_refusals.append(why)
            continue
        if t.guard is not None:
            try:
                passed = sop.guards[t.id].evaluate(
                    guard_context(conn, sop, t, ref=ref, facts=facts, now=now, directory=directory)
                )
            except (TypeError, ValueError, RuntimeError) as exc:
                passed = False
                guard_refusals.append(
                    f"guard of {t.id!r} could not be evaluated: {str(exc).split('.')[0]}"
                )
            else:
                if not passed:
                    guard_refusals.append(
                        f"guard of {t.id!r} is not met: {t.guard}" + _unknown_incident(t, ref)
                    )
            if not passed:
                continue
        return t
    available = available_events(
        spec, ref.state, request.actor, ref.owner_agency_id, agencies, open_handoffs=open_handoffs
    )
    if guard_refusals:
        raise GuardFailed("; ".join(guard_refusals), available=available)
    raise RoleNotAllowed("; ".join(role_refusals), available=available)


def _unknown_incident(t: TransitionSpec, ref: Row[Any]) -> str:
    """What to do when a guard over the clinical windows failed for want of the incident
    time (``hours_since_incident`` is -1.0 then: the windows may be open)."""
    if ref.incident_at is not None or "hours_since_incident" not in (t.guard or ""):
        return ""
    return (
        " (the incident time is unknown, so the clinical windows may be open: record it, "
        "PUT /referrals/{case_code}/incident-time)"
    )


def available_events(
    spec: SopSpec,
    state: str,
    actor: Actor,
    owner: str,
    agencies: Mapping[str, Any],
    *,
    open_handoffs: Mapping[str, str] | None = None,
) -> tuple[str, ...]:
    """Events the actor may fire from ``state`` with ``open_handoffs`` (parallel handoff to
    its stage's state), by role and agency (guards not evaluated)."""
    return tuple(
        dict.fromkeys(
            t.event
            for t in spec.transitions_from(state, open_handoffs)
            if may_fire(spec, t, actor, owner, agencies)
        )
    )
