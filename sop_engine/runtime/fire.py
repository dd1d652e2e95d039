"""``fire``: the one entry point for every change of a referral's state.

In one database transaction it checks the actor's role and agency, the guard, the facts the
target state requires and the consent (or override) behind any disclosure; moves the state
through the SOP version's one machine; bumps the referral's version (a concurrent change is
a conflict, never a lost update); appends a hash-chained timeline entry; stops the timers and
closes the tasks of the state it leaves and starts those of the state it enters; and writes
the notifications the SOP names to the outbox. With an idempotency key seen before, it
returns the first result and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from sop_engine.errors import (
    ConsentMissing,
    IdempotencyKeyReused,
    InvalidInput,
    MissingFacts,
    NotFound,
    TransitionNotAllowed,
)
from sop_engine.language.compiler import CompiledSop
from sop_engine.language.machine import idle
from sop_engine.language.spec import (
    MANAGING_AGENCY,
    OUTCOMES,
    HandoffSpec,
    SopSpec,
    StateSpec,
    TransitionSpec,
)
from sop_engine.persistence import tables
from sop_engine.runtime import consent
from sop_engine.runtime.actors import SYSTEM, Actor
from sop_engine.runtime.change import (
    SELECT_BY_CASE_CODE,
    Change,
    check_version,
    recipient_agency,
)
from sop_engine.runtime.choice import (
    PAYLOAD_KEYS,
    EventRequest,
    available_events,
    choose_transition,
    parse_payload,
)
from sop_engine.runtime.clocks import (
    refuse_closure_while_clocks_run,
    update_clocks,
    waiting_warnings,
)
from sop_engine.runtime.disclosure import (
    categories_of,
    check_override,
    disclosed_values,
    handoff_grant_withdrawn,
    seal_facts,
    sealed_note,
)
from sop_engine.runtime.facts import check_facts, split_identifying
from sop_engine.runtime.fingerprints import RequestFingerprint, fingerprint
from sop_engine.runtime.recipients import Recipient, check_slot, recipient
from sop_engine.runtime.referrals import handoffs_seen_by
from sop_engine.runtime.services import Services
from sop_engine.timeline.entries import EntryDraft

__all__ = [
    "PAYLOAD_KEYS",
    "FireResult",
    "apply_transition",
    "available_events",
    "fire",
    "fire_as_system",
]

_R = tables.referrals
_I = tables.idempotency_keys


@dataclass(frozen=True, slots=True)
class FireResult:
    """What a fired event did. ``available_events`` are those the same actor may fire next
    (by role and agency; their guards are checked when fired)."""

    case_code: str
    event: str
    from_state: str
    state: str
    version: int
    available_events: tuple[str, ...]
    timeline_seq: int
    timeline_hash: str
    disclosed_to: str | None = None
    consent_grant_id: str | None = None
    override: bool = False
    warnings: tuple[str, ...] = ()
    handoffs: Mapping[str, str] = field(default_factory=dict)
    """The parallel handoffs open after the event, each at its stage's state: those the
    actor's agency may know of (:func:`~sop_engine.runtime.referrals.handoffs_seen_by`)."""
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("replayed")
        data["handoffs"] = dict(self.handoffs)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, replayed: bool) -> FireResult:
        values = dict(data)
        values["available_events"] = tuple(values["available_events"])
        values["warnings"] = tuple(values.get("warnings", ()))
        values["handoffs"] = dict(values.get("handoffs", {}))
        return cls(**values, replayed=replayed)


def _fingerprint(
    services: Services, case_code: str, event: str, payload: Mapping[str, Any] | None
) -> RequestFingerprint:
    request = {"case_code": case_code, "event": event, "payload": dict(payload or {})}
    return fingerprint(services.keyring, request)


def apply_transition(
    conn: Connection,
    services: Services,
    change: Change,
    *,
    sop: CompiledSop,
    t: TransitionSpec,
    request: EventRequest,
    facts: Mapping[str, Any],
) -> dict[str, Any]:
    """Apply chosen transition ``t`` to ``change``; return what the timeline entry says."""
    spec, ref, now = sop.spec, change.ref, change.now
    plain, identifying = split_identifying(spec, facts)
    change.facts.update(plain)
    if identifying:
        seal_facts(conn, services, change, identifying)
    _note_writer(change, request.actor, facts)

    target = spec.states.get(t.target)
    known = {k for k, v in change.facts.items() if v is not None} | set(change.sealed_fields)
    missing = [f for f in (target.requires if target else ()) if f not in known]
    if missing:
        raise MissingFacts(
            f"state {t.target!r} requires {', '.join(missing)} to be known first",
            missing=missing,
        )

    if t.region is None and t.target in spec.final_states and change.handoffs:
        still = ", ".join(
            f"{h} ({stage.rsplit('.', 1)[-1]})" for h, stage in change.handoffs.items()
        )
        raise TransitionNotAllowed(
            f"{t.event!r} would close the case with referrals still open: {still}; "
            "they must be delivered, declined or revoked first"
        )
    moved = t.region if t.region is not None and not t.opens else None
    blocked = handoff_grant_withdrawn(conn, services, spec, ref, now, region=moved)
    if blocked and not (t.handoff == blocked and t.action in ("revoke", "decline")):
        raise ConsentMissing(
            f"consent for handoff {blocked!r} was withdrawn: it can only be revoked or declined now"
        )

    entry: dict[str, Any] = {"kind": "transition", "details": {}}
    if t.handoff is not None and t.action == "decline":
        entry["details"]["reason"] = _decline_reason(spec.handoffs[t.handoff], request)
    if t.handoff is not None and t.action == "deliver":
        outcome, reason = _delivery_outcome(spec.handoffs[t.handoff], request)
        entry["details"]["outcome"] = outcome
        if reason is not None:
            entry["details"]["reason"] = reason

    if t.discloses is not None:
        slot = t.discloses.to
        agency_id, to = _recipient(conn, services, change, slot, request)
        grant_id = None
        if t.override is not None:
            entry["kind"] = "override"
            entry["override"] = True
            entry["details"]["override"] = check_override(t, request)
            justification = request.override["justification"] if request.override else ""
            entry["details"]["justification_sealed"] = sealed_note(
                conn, services, change, justification
            )
        else:
            assert t.consent is not None
            scope = spec.consent_scopes[t.consent]
            wanted = {
                "referral_id": ref.id,
                "scope": scope,
                "recipient": to,
                "categories": categories_of(spec, t.discloses.fields),
                "now": now,
            }
            grant = consent.covering_grant(conn, **wanted)
            if grant is None:
                fields = ", ".join(t.discloses.fields)
                raise ConsentMissing(
                    f"{t.event!r} discloses {fields} to {slot!r}, {to.describe()}: "
                    + consent.why_not_covered(conn, **wanted)
                )
            grant_id = grant.id
        entry.update(
            disclosed_to=agency_id,
            consent_grant_id=grant_id,
            disclosed_fields=t.discloses.fields,
            disclosed_values=disclosed_values(conn, services, change, t.discloses.fields),
        )
    return entry


def _note_writer(change: Change, actor: Actor, facts: Mapping[str, Any]) -> None:
    """Remember which facts an agency other than the managing one wrote (they reach the
    managing agency only as disclosed to it); the managing agency's writes clear the mark."""
    writer = actor.agency_id
    for name in facts:
        if writer is None or writer == change.ref.owner_agency_id:
            change.fact_writers.pop(name, None)
        else:
            change.fact_writers[name] = writer


def _decline_reason(h: HandoffSpec, request: EventRequest) -> str | None:
    if request.reason is None and h.reason_required:
        raise InvalidInput(
            f"declining needs a reason: one of {', '.join(h.decline_reasons)}", field="reason"
        )
    if request.reason is not None and request.reason not in h.decline_reasons:
        raise InvalidInput(f"reason must be one of {', '.join(h.decline_reasons)}", field="reason")
    return request.reason


def _delivery_outcome(h: HandoffSpec, request: EventRequest) -> tuple[str, str | None]:
    """``successful``, or ``unsuccessful`` with one of the handoff's reasons."""
    outcome, reason = request.outcome, request.reason
    if outcome not in OUTCOMES:
        raise InvalidInput(
            "reporting a delivery needs its outcome: successful, or unsuccessful with a reason",
            field="outcome",
        )
    if outcome == "successful":
        if reason is not None:
            raise InvalidInput("a successful delivery takes no reason", field="reason")
        return outcome, None
    if reason not in h.unsuccessful_reasons:
        raise InvalidInput(
            f"an unsuccessful delivery needs a reason: one of {', '.join(h.unsuccessful_reasons)}",
            field="reason",
        )
    return outcome, reason


def _recipient(
    conn: Connection, services: Services, change: Change, slot: str, request: EventRequest
) -> tuple[str, Recipient]:
    """The agency a disclosure goes to: the one filling ``slot``, or the one the request
    names (which must be listed in the directory and fit the slot); it then fills the slot."""
    field = "recipient_agency_id"
    chosen, named = change.agencies.get(slot), request.recipient_agency_id
    if chosen is not None and named is not None and named != chosen:
        raise InvalidInput(
            f"{slot!r} is {chosen} for this referral: it cannot be changed to {named}", field=field
        )
    agency_id = chosen or named
    if agency_id is None:
        raise InvalidInput(
            f"say which agency receives the referral as {slot!r}: recipient_agency_id", field=field
        )
    to = recipient(conn, services.directory, agency_id, field=field)
    ref = change.ref
    check_slot(change.spec, slot, to, ref.origin_country, ref.destination_country, field=field)
    change.agencies[slot] = agency_id
    return agency_id, to


def _takes_part(actor: Actor, ref: Any) -> bool:
    agency = actor.agency_id
    return agency is not None and (
        agency == ref.owner_agency_id or agency in (ref.agencies or {}).values()
    )


def fire(  # noqa: PLR0917 (the one entry point keeps the signature of issue #3)
    services: Services,
    case_code: str,
    event: str,
    actor: Actor,
    payload: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    *,
    expected_version: int | None = None,
    hide_from_outsiders: bool = False,
) -> FireResult:
    """Fire ``event`` on the referral ``case_code`` as ``actor`` (see the module docstring).

    With ``hide_from_outsiders`` (the API's way), an actor whose agency neither manages the
    referral nor fills one of its agency slots is answered :class:`NotFound`, exactly as for
    a case code that does not exist, before anything else is checked: the referral's version
    or state never leaks to her.

    ``payload`` may hold ``facts`` (those the transition ``sets``), ``recipient_agency_id``
    (the agency receiving a disclosure, when not chosen before), ``reason`` (declining a
    handoff, or reporting its delivery unsuccessful), ``outcome`` (reporting a delivery:
    ``successful`` or ``unsuccessful``) and ``override`` (``reason``, ``justification``,
    ``signed_off_by``, ``signed_off_role``) for a transition that shares data without consent.
    """
    request = parse_payload(event, actor, payload)
    request_mac = (
        _fingerprint(services, case_code, event, payload) if idempotency_key is not None else None
    )
    with services.db.begin() as conn:
        if idempotency_key is not None:
            seen = conn.execute(
                select(_I).where(_I.c.actor_id == actor.id, _I.c.key == idempotency_key)
            ).first()
            if seen is not None:
                assert request_mac is not None
                if not request_mac.matches(seen.request_hash):
                    raise IdempotencyKeyReused(
                        "this idempotency key was already used for a different request",
                        field="Idempotency-Key",
                    )
                return FireResult.from_json(seen.result, replayed=True)
        ref = conn.execute(SELECT_BY_CASE_CODE, {"p_code": case_code}).first()
        if ref is None or (hide_from_outsiders and not _takes_part(actor, ref)):
            raise NotFound(f"no referral {case_code}")
        check_version(ref, expected_version)
        if ref.erased_at is not None:
            raise TransitionNotAllowed(f"referral {case_code} was erased")
        sop = services.sop(ref.sop_key, ref.sop_version)
        spec = sop.spec
        open_handoffs = ref.handoffs or {}
        candidates = spec.transitions_for(ref.state, event, open_handoffs)
        if not candidates:
            available = available_events(
                spec,
                ref.state,
                actor,
                ref.owner_agency_id,
                ref.agencies or {},
                open_handoffs=open_handoffs,
            )
            known = " (unknown event)" if event not in spec.events else ""
            where = _configuration(ref.state, open_handoffs)
            raise TransitionNotAllowed(
                f"{event!r} cannot happen in {where}{known}", available=available
            )
        allowed = {f for t in candidates for f in t.sets}
        new_facts = check_facts(spec, request.facts, allowed)
        facts = {**(ref.facts or {}), **new_facts}
        now = services.clock.now()
        t = choose_transition(
            conn, sop, ref=ref, request=request, facts=facts, now=now, directory=services.directory
        )

        change = Change.open(conn, ref, spec, now)
        result = _apply(conn, services, change, sop=sop, t=t, request=request, new_facts=new_facts)
        version = change.write()
        fired = FireResult(
            case_code=case_code,
            event=event,
            from_state=ref.state,
            state=change.state,
            version=version,
            available_events=available_events(
                spec,
                change.state,
                actor,
                ref.owner_agency_id,
                change.agencies,
                open_handoffs=change.handoffs,
            ),
            timeline_seq=result.seq,
            timeline_hash=result.hash,
            disclosed_to=result.entry.get("disclosed_to"),
            consent_grant_id=result.entry.get("consent_grant_id"),
            override=bool(result.entry.get("override")),
            warnings=(*_warnings(change, ref.state), *waiting_warnings(result.waiting)),
            handoffs=handoffs_seen_by(
                spec, change.handoffs, change.agencies, ref.owner_agency_id, actor.agency_id
            ),
        )
        if idempotency_key is not None and request_mac is not None:
            conn.execute(
                _I.insert().values(
                    actor_id=actor.id,
                    key=idempotency_key,
                    referral_id=ref.id,
                    request_hash=request_mac.stored,
                    result=fired.to_json(),
                    created_at=change.now,
                )
            )
        return fired


class _StateHolder:
    """What the machine moves for the length of one trigger: a state, nothing else."""

    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


def _warnings(change: Change, from_state: str) -> tuple[str, ...]:
    if change.state == from_state:  # the case did not move (a parallel handoff may have)
        return ()
    unknown = change.missing_anchors(change.state)
    return tuple(f"deadline {d!r} not started: its timestamp is unknown" for d in unknown)


@dataclass(frozen=True, slots=True)
class _Applied:
    seq: int
    hash: str
    entry: dict[str, Any]
    waiting: tuple[str, ...] = ()
    """The case clocks that still cannot start: the time they run from (the incident's) is
    unknown, so the windows may be open and nobody is alerted until it is recorded."""


def _apply(
    conn: Connection,
    services: Services,
    change: Change,
    *,
    sop: CompiledSop,
    t: TransitionSpec,
    request: EventRequest,
    new_facts: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    kind: str | None = None,
) -> _Applied:
    """Check and apply ``t``, move the state through the machine, record everything."""
    entry = apply_transition(conn, services, change, sop=sop, t=t, request=request, facts=new_facts)
    if kind is not None:
        entry["kind"] = kind
    entry["details"].update(extra or {})

    # The machine moves the holder: the case's state, or the parallel handoff's stage.
    before = _moved_state(change, t)
    holder = _StateHolder(before)
    sop.machine.events[t.event].trigger(holder, allow=lambda tid: tid == t.id, chosen=[])
    if holder.state == before and t.target != before:
        raise TransitionNotAllowed(f"the machine refused {t.event!r} from {before!r}")
    _check_clocks_before(conn, services, change, sop=sop, t=t)
    seq, digest = _move(
        change, sop.spec, t, request.actor, entry, from_state=before, to_state=holder.state
    )
    waiting = update_clocks(conn, sop, change, request.actor, directory=services.directory)
    return _Applied(seq, digest, entry, tuple(waiting))


def _check_clocks_before(
    conn: Connection, services: Services, change: Change, *, sop: CompiledSop, t: TransitionSpec
) -> None:
    """A case clock that blocks closure keeps ``t`` from entering a final state while it runs
    (:mod:`sop_engine.runtime.clocks`)."""
    if t.region is None and sop.spec.clocks and sop.spec.states[t.target].final:
        refuse_closure_while_clocks_run(conn, sop, change, services.directory)


def _ask(target: StateSpec | None, role: str) -> str:
    tasks = target.tasks.values() if target is not None else ()
    return next((task.ask for task in tasks if task.role == role), "")


def _moved_state(change: Change, t: TransitionSpec) -> str:
    """What ``t`` moves, as the machine knows it: the case's state, or the stage of the
    parallel handoff it answers or opens (its idle state while not open)."""
    if t.region is None:
        return change.state
    return change.handoffs.get(t.region, idle(t.region))


def _configuration(state: str, open_handoffs: Mapping[str, str]) -> str:
    if not open_handoffs:
        return f"state {state!r}"
    return f"state {state!r} with {', '.join(map(repr, open_handoffs.values()))} open"


def fire_as_system(
    conn: Connection,
    services: Services,
    change: Change,
    *,
    sop: CompiledSop,
    event: str,
    details: Mapping[str, Any],
) -> str:
    """Fire ``event`` for an escalation, inside the escalation's transaction and change."""
    request = EventRequest(event=event, actor=SYSTEM)
    t = choose_transition(
        conn,
        sop,
        ref=change.ref,
        request=request,
        facts=dict(change.facts),
        now=change.now,
        directory=services.directory,
    )
    _apply(
        conn,
        services,
        change,
        sop=sop,
        t=t,
        request=request,
        new_facts={},
        extra=details,
        kind="escalation",
    )
    return event


def _move(
    change: Change,
    spec: SopSpec,
    t: TransitionSpec,
    actor: Actor,
    entry: dict[str, Any],
    *,
    from_state: str,
    to_state: str,
) -> tuple[int, str]:
    """Leave ``from_state``, record, enter ``to_state`` (where the machine moved the case, or
    the parallel handoff ``t`` moves) and notify, in that order."""
    moving = to_state != from_state
    if moving:
        cancel = t.handoff is not None and t.event.split(".")[-1] in ("revoke", "decline")
        if t.region is None:
            change.leave(t.event, cancel=cancel)
        elif not t.opens:
            change.leave(t.event, cancel=cancel, state=from_state)
    seq_hash = change.record(
        EntryDraft(
            kind=entry["kind"],
            actor=actor,
            event=t.event,
            from_state=from_state,
            to_state=to_state,
            consent_grant_id=entry.get("consent_grant_id"),
            disclosed_to=entry.get("disclosed_to"),
            disclosed_fields=tuple(entry.get("disclosed_fields", ())),
            override=bool(entry.get("override")),
            details=entry["details"],
        )
    )
    if t.discloses is not None and entry.get("disclosed_to"):
        values, sealed = entry["disclosed_values"]
        change.disclose(
            t.discloses.to,
            entry["disclosed_to"],
            entry.get("consent_grant_id"),
            bool(entry.get("override")),
            t.discloses.fields,
            values=values,
            sealed_values=sealed,
        )
    if moving and t.region is not None:
        change.move_handoff(t.region, to_state)
    elif moving:
        change.enter(to_state)
    target = spec.states.get(to_state)
    moved = target.handoff if target is not None and target.handoff else t.region
    service = spec.handoffs[moved].service if moved else ""
    due = (
        change.rows.get("tasks", [{}])[0].get("due_at")
        if moving and target is not None and target.tasks
        else None
    )
    details = entry["details"]
    for n in t.notify:
        if n.agency == MANAGING_AGENCY:
            agency: str | None = change.ref.owner_agency_id
        else:
            agency = change.agencies.get(n.agency) if n.agency else None
        if n.agency is None:
            agency = recipient_agency(
                spec, target, n.to, change.agencies, change.ref.owner_agency_id
            )
        change.notify(
            n.template,
            n.to,
            agency,
            {
                "event": t.event,
                "state": to_state,
                "service": service,
                "ask": _ask(target, n.to),
                "due_at": due.isoformat() if due else None,
                "reason": details.get("reason"),
                "outcome": details.get("outcome"),
            },
        )
    return seq_hash
