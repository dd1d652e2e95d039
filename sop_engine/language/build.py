"""Stage 4: turn schema-valid SOP data into :mod:`spec` objects, expanding handoffs.

The builder trusts the schema for shapes and types and decides nothing about meaning:
references, graphs and consent are checked by :mod:`checks` on the objects built here.
It reads each kind of object only through :data:`KEYS`, which a test keeps equal to the
published schema, so that the language the engine reads and the one editors are told about
cannot drift apart.

A state with a ``handoff`` block becomes three states, ``NAME.sent``, ``NAME.acknowledged``
and ``NAME.accepted``, and five events, ``NAME.acknowledge``, ``NAME.accept``,
``NAME.decline``, ``NAME.deliver`` and ``NAME.revoke``. A transition into ``NAME`` enters
``NAME.sent`` and discloses the handoff's dataset under its consent scope; a transition from
``NAME`` leaves from any of its stages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

from sop_engine.language.source import DataPath, SourceDocument
from sop_engine.language.spec import (
    DEFAULT_REOPEN_REASONS,
    DEFAULT_UNSUCCESSFUL_REASONS,
    DEFAULT_WAIVE_REASONS,
    DEFAULT_WAIVE_ROLES,
    FEEDBACK_TEMPLATES,
    HANDOFF_STAGES,
    MANAGING_AGENCY,
    OUTCOME_KEYS,
    REVOKED_TEMPLATE,
    AgencySlot,
    ClockSpec,
    ConsentScope,
    DataCategory,
    DeadlineSpec,
    Disclosure,
    EscalationLevel,
    FactSpec,
    HandoffSpec,
    Jurisdiction,
    Notification,
    Override,
    ReopenSpec,
    RoleSpec,
    SopSpec,
    Source,
    StateSpec,
    TaskSpec,
    TransferSpec,
    TransitionSpec,
    Where,
    frozen_map,
)

__all__ = ["KEYS", "build_spec", "parse_duration"]

KEYS: Mapping[str, frozenset[str]] = {
    "sop": frozenset(
        {
            "$schema",
            "key",
            "version",
            "extends",
            "title",
            "description",
            "jurisdiction",
            "effective",
            "review",
            "languages",
            "timezone",
            "sources",
            "data_categories",
            "facts",
            "agencies",
            "roles",
            "consent_scopes",
            "states",
            "transitions",
            "reopen",
            "transfer",
            "clocks",
        }
    ),
    "reopen": frozenset({"to", "roles", "reasons"}),
    "transfer": frozenset(
        {
            "to",
            "role",
            "requester_roles",
            "consent",
            "dataset",
            "respond_within",
            "escalation",
            "decline_reasons",
        }
    ),
    "clock": frozenset(
        {
            "description",
            "from",
            "after",
            "reminders",
            "escalation",
            "stops_when",
            "blocks_closure",
            "waive",
        }
    ),
    "reminder": frozenset({"before", "notify", "template"}),
    "clock_waive": frozenset({"roles", "reasons"}),
    "untimed": frozenset({"respond", "deliver"}),
    "source": frozenset({"title", "url", "note"}),
    "jurisdiction": frozenset({"countries", "origin", "destination", "context"}),
    "data_category": frozenset({"description", "identifying"}),
    "fact": frozenset({"type", "values", "min", "max", "category", "identifying", "description"}),
    "agency": frozenset({"description", "types", "country"}),
    "role": frozenset({"description", "agency_types", "agency"}),
    "consent_scope": frozenset(
        {"description", "purpose", "recipient", "data_categories", "country", "valid_for"}
    ),
    "task": frozenset({"role", "agency", "ask"}),
    "escalation_level": frozenset({"after", "notify", "template", "fire"}),
    "deadline": frozenset({"description", "after", "from", "escalation"}),
    "notification": frozenset({"template", "to", "agency"}),
    "handoff": frozenset(
        {
            "to",
            "role",
            "sender",
            "parallel",
            "sender_roles",
            "consent",
            "override",
            "dataset",
            "service",
            "acknowledge_within",
            "respond_within",
            "deliver_within",
            "escalation",
            "decline_reasons",
            "reason_required",
            "unsuccessful_reasons",
            "untimed",
            "notify",
            "delivered",
            "declined",
            "revoked",
        }
    ),
    "state": frozenset(
        {"description", "initial", "final", "requires", "tasks", "deadlines", "handoff"}
    ),
    "override": frozenset({"reasons", "sign_off"}),
    "disclosure": frozenset({"to", "fields"}),
    "transition": frozenset(
        {
            "event",
            "description",
            "from",
            "to",
            "roles",
            "agencies",
            "guard",
            "sets",
            "consent",
            "override",
            "discloses",
            "notify",
        }
    ),
}
"""The keys the builder reads, per kind of object; equal to the schema's properties."""

_DURATION = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

DEFAULT_SENDER_ROLES = ("caseworker",)


def parse_duration(text: str) -> timedelta:
    """``30m``, ``72h``, ``3d`` or ``2w`` as a timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


class _Reader:
    """Typed, located access to one object of the data, limited to the keys of its kind."""

    def __init__(self, doc: SourceDocument, kind: str, path: DataPath) -> None:
        self.doc, self.kind, self.path = doc, kind, path
        value = _at(doc.data, path)
        self.data: dict[str, Any] = value if isinstance(value, dict) else {}

    def __call__(self, key: str, default: Any = None) -> Any:
        if key not in KEYS[self.kind]:
            raise KeyError(f"builder reads undeclared key {key!r} of {self.kind}")
        return self.data.get(key, default)

    def where(self) -> Where:
        keys = tuple((k, f, ln) for k, (f, ln) in self.doc.child_locations(self.path))
        return Where(*self.doc.where(self.path), keys=keys)

    def child(self, kind: str, *sub: str | int) -> _Reader:
        return _Reader(self.doc, kind, (*self.path, *sub))

    def names(self, key: str) -> tuple[str, ...]:
        return tuple(self(key) or ())


def _at(data: Any, path: DataPath) -> Any:
    for part in path:
        if isinstance(data, dict) and isinstance(part, str):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def _duration(value: Any) -> timedelta | None:
    return parse_duration(value) if isinstance(value, str) else None


def _date(value: Any) -> date:
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        return date.min


def _escalation(r: _Reader, key: str) -> tuple[EscalationLevel, ...]:
    levels = []
    for i, _ in enumerate(r(key) or ()):
        lv = r.child("escalation_level", key, i)
        levels.append(
            EscalationLevel(
                level=i + 1,
                after=_duration(lv("after")) or timedelta(0),
                notify=lv.names("notify"),
                template=lv("template", ""),
                fire=lv("fire"),
                where=lv.where(),
            )
        )
    return tuple(levels)


def _notifications(r: _Reader, key: str) -> tuple[Notification, ...]:
    out = []
    for i, _ in enumerate(r(key) or ()):
        n = r.child("notification", key, i)
        out.append(Notification(n("template"), n("to"), n("agency"), n.where()))
    return tuple(out)


def _override(r: _Reader) -> Override | None:
    if r("override") is None:
        return None
    o = r.child("override", "override")
    return Override(o.names("reasons"), o("sign_off", ""), o.where())


def _state(r: _Reader, name: str) -> StateSpec:
    tasks = {}
    for task_name in r("tasks") or {}:
        t = r.child("task", "tasks", task_name)
        tasks[task_name] = TaskSpec(task_name, t("role"), t("ask"), t("agency"), t.where())
    deadlines = {}
    for dl_name in r("deadlines") or {}:
        d = r.child("deadline", "deadlines", dl_name)
        deadlines[dl_name] = DeadlineSpec(
            name=dl_name,
            after=_duration(d("after")) or timedelta(0),
            anchor=d("from", "entered"),
            escalation=_escalation(d, "escalation"),
            description=d("description", ""),
            where=d.where(),
        )
    return StateSpec(
        name=name,
        description=r("description", ""),
        initial=bool(r("initial", False)),
        final=bool(r("final", False)),
        requires=r.names("requires"),
        tasks=frozen_map(tasks),
        deadlines=frozen_map(deadlines),
        where=r.where(),
    )


def _handoff(r: _Reader, name: str) -> HandoffSpec:
    parallel = bool(r("parallel", False))
    return HandoffSpec(
        name=name,
        to=r("to"),
        role=r("role"),
        sender_roles=r.names("sender_roles") or DEFAULT_SENDER_ROLES,
        dataset=r.names("dataset"),
        acknowledge_within=_duration(r("acknowledge_within")) or timedelta(0),
        escalation=_escalation(r, "escalation"),
        # A parallel handoff ends in a state of its own; the case does not move.
        delivered=f"{name}.delivered" if parallel else r("delivered", ""),
        declined=f"{name}.declined" if parallel else r("declined", ""),
        revoked=f"{name}.revoked" if parallel else r("revoked", ""),
        written_outcomes=tuple(k for k in OUTCOME_KEYS if r(k) is not None),
        consent=r("consent"),
        override=_override(r),
        service=r("service", ""),
        respond_within=_duration(r("respond_within")),
        deliver_within=_duration(r("deliver_within")),
        decline_reasons=r.names("decline_reasons"),
        reason_required=bool(r("reason_required", True)),
        unsuccessful_reasons=r.names("unsuccessful_reasons") or DEFAULT_UNSUCCESSFUL_REASONS,
        untimed=frozen_map(
            {k: str(v).strip() for k, v in (r("untimed") or {}).items() if v is not None}
        ),
        notify=_notifications(r, "notify"),
        sender=r("sender", MANAGING_AGENCY),
        parallel=parallel,
        where=r.where(),
    )


def _handoff_states(base: StateSpec, h: HandoffSpec) -> list[StateSpec]:
    def stage(stage: str, task: str, ask: str, within: timedelta | None) -> StateSpec:
        deadlines = {}
        if within is not None:
            deadlines[task] = DeadlineSpec(
                task, within, "entered", h.escalation, f"{task} the referral", h.where
            )
        return StateSpec(
            name=f"{h.name}.{stage}",
            description=f"{base.description} ({stage})".strip(),
            tasks=frozen_map({task: TaskSpec(task, h.role, ask, h.to, h.where)}),
            deadlines=frozen_map(deadlines),
            handoff=h.name,
            stage=stage,
            where=base.where,
        )

    service = f" for {h.service}" if h.service else ""
    return [
        stage("sent", "acknowledge", f"Acknowledge the referral{service}", h.acknowledge_within),
        stage(
            "acknowledged", "respond", f"Accept or decline the referral{service}", h.respond_within
        ),
        stage(
            "accepted",
            "deliver",
            f"Deliver the service{service} and report delivery",
            h.deliver_within,
        ),
    ]


def _handoff_transitions(h: HandoffSpec) -> list[TransitionSpec]:
    n = h.name
    sent, ack, acc = (f"{n}.{s}" for s in HANDOFF_STAGES)

    def t(
        action: str, sources: tuple[str, ...], target: str, roles: tuple[str, ...]
    ) -> TransitionSpec:
        if action == "revoke":  # the receiver is told to stop work
            told = Notification(REVOKED_TEMPLATE, h.role, h.to, h.where)
        else:  # the sender hears every answer
            told = Notification(FEEDBACK_TEMPLATES[action], h.sender_roles[0], h.sender, h.where)
        return TransitionSpec(
            id=f"{n}.{action}",
            event=f"{n}.{action}",
            sources=sources,
            target=target,
            roles=roles,
            notify=(told,),
            handoff=n,
            agencies=(h.sender,) if action == "revoke" else (h.to,),
            region=n if h.parallel else None,
            where=h.where,
        )

    return [
        t("acknowledge", (sent,), ack, (h.role,)),
        t("accept", (ack,), acc, (h.role,)),
        t("decline", (sent, ack), h.declined, (h.role,)),
        t("deliver", (acc,), h.delivered, (h.role,)),
        t("revoke", (sent, ack, acc), h.revoked, h.sender_roles),
    ]


def _enter(t: TransitionSpec, handoffs: Mapping[str, HandoffSpec]) -> TransitionSpec:
    """Point ``t`` at the stages of handoffs, and make entering one disclose its dataset."""
    sources = tuple(
        s2
        for s in t.sources
        for s2 in ((f"{s}.{st}" for st in HANDOFF_STAGES) if s in handoffs else (s,))
    )
    h = handoffs.get(t.target)
    if h is None:
        return replace(t, sources=sources)
    own_basis = t.consent is not None or t.override is not None
    return replace(
        t,
        sources=sources,
        target=f"{h.name}.sent",
        region=h.name if h.parallel else None,
        opens=h.parallel,
        discloses=t.discloses or Disclosure(h.to, h.dataset, h.where),
        consent=t.consent if own_basis else h.consent,
        override=t.override if own_basis else h.override,
        notify=t.notify + h.notify,
    )


def build_spec(doc: SourceDocument) -> SopSpec:
    """Build the spec of one schema-valid, fully merged document."""
    top = _Reader(doc, "sop", ())
    j = top.child("jurisdiction", "jurisdiction")
    jurisdiction = Jurisdiction(
        countries=j.names("countries"),
        origin=j("origin"),
        destination=j("destination"),
        context=j("context", "development"),
    )
    sources = tuple(
        Source(s("title"), s("url"), s("note"))
        for i, _ in enumerate(top("sources") or ())
        for s in [top.child("source", "sources", i)]
    )
    categories = {
        name: DataCategory(name, c("description", ""), bool(c("identifying", False)), c.where())
        for name in top("data_categories") or {}
        for c in [top.child("data_category", "data_categories", name)]
    }
    facts = {
        name: FactSpec(
            name=name,
            type=f("type"),
            values=f.names("values"),
            min=f("min"),
            max=f("max"),
            category=f("category"),
            identifying=bool(f("identifying", False)),
            description=f("description", ""),
            where=f.where(),
        )
        for name in top("facts") or {}
        for f in [top.child("fact", "facts", name)]
    }
    agencies = {
        name: AgencySlot(
            name, a.names("types"), a("country", "any"), a("description", ""), a.where()
        )
        for name in top("agencies") or {}
        for a in [top.child("agency", "agencies", name)]
    }
    roles = {
        name: RoleSpec(name, r.names("agency_types"), r("description", ""), r("agency"), r.where())
        for name in top("roles") or {}
        for r in [top.child("role", "roles", name)]
    }
    scopes = {
        name: ConsentScope(
            name=name,
            purpose=c("purpose", ""),
            recipient=c("recipient", ""),
            data_categories=c.names("data_categories"),
            country=c("country", "any"),
            valid_for=_duration(c("valid_for")),
            description=c("description", ""),
            where=c.where(),
        )
        for name in top("consent_scopes") or {}
        for c in [top.child("consent_scope", "consent_scopes", name)]
    }

    states: dict[str, StateSpec] = {}
    handoffs: dict[str, HandoffSpec] = {}
    generated: list[TransitionSpec] = []
    for name in top("states") or {}:
        r = top.child("state", "states", name)
        base = _state(r, name)
        if r("handoff") is None:
            states[name] = base
            continue
        h = _handoff(r.child("handoff", "handoff"), name)
        handoffs[name] = h
        stages = _handoff_states(base, h)
        # The first stage keeps the state's own tasks and deadlines and its initial flag.
        first = stages[0]
        stages[0] = _replace_state(first, base)
        states.update((s.name, s) for s in stages)
        generated.extend(_handoff_transitions(h))

    transitions = []
    for tid in top("transitions") or {}:
        t = top.child("transition", "transitions", tid)
        source = t("from")
        froms = (source,) if isinstance(source, str) else tuple(source or ())
        d = t("discloses")
        dr = t.child("disclosure", "discloses")
        transitions.append(
            TransitionSpec(
                id=tid,
                event=t("event", tid),
                sources=froms,
                target=t("to"),
                roles=t.names("roles"),
                guard=t("guard"),
                sets=t.names("sets"),
                consent=t("consent"),
                override=_override(t),
                discloses=Disclosure(dr("to"), dr.names("fields"), dr.where()) if d else None,
                notify=_notifications(t, "notify"),
                description=t("description", ""),
                agencies=t.names("agencies") or (MANAGING_AGENCY,),
                where=t.where(),
            )
        )
    transitions.extend(generated)
    transitions = [_enter(t, handoffs) for t in transitions]

    return SopSpec(
        key=top("key"),
        version=top("version"),
        title=top("title", ""),
        jurisdiction=jurisdiction,
        effective=_date(top("effective")),
        review=_date(top("review")),
        languages=top.names("languages"),
        states=frozen_map(states),
        transitions=tuple(transitions),
        description=top("description", ""),
        extends=top("extends"),
        timezone=top("timezone"),
        sources=sources,
        data_categories=frozen_map(categories),
        facts=frozen_map(facts),
        agencies=frozen_map(agencies),
        roles=frozen_map(roles),
        consent_scopes=frozen_map(scopes),
        handoffs=frozen_map(handoffs),
        reopen=_reopen(top),
        transfer=_transfer(top),
        clocks=frozen_map(_clocks(top)),
        file=doc.file,
        where=top.where(),
    )


def _reopen(top: _Reader) -> ReopenSpec | None:
    if top("reopen") is None:
        return None
    r = top.child("reopen", "reopen")
    return ReopenSpec(
        to=r("to"),
        roles=r.names("roles") or DEFAULT_SENDER_ROLES,
        reasons=r.names("reasons") or DEFAULT_REOPEN_REASONS,
        where=r.where(),
    )


def _transfer(top: _Reader) -> TransferSpec | None:
    if top("transfer") is None:
        return None
    r = top.child("transfer", "transfer")
    return TransferSpec(
        to=r("to"),
        role=r("role"),
        requester_roles=r.names("requester_roles") or DEFAULT_SENDER_ROLES,
        consent=r("consent"),
        dataset=r.names("dataset"),
        respond_within=_duration(r("respond_within")) or timedelta(0),
        escalation=_escalation(r, "escalation"),
        decline_reasons=r.names("decline_reasons"),
        where=r.where(),
    )


def _clocks(top: _Reader) -> dict[str, ClockSpec]:
    """The case clocks: each one's reminders (as levels ``before`` its due time) and then
    its escalation, numbered as one ladder."""
    clocks = {}
    for name in top("clocks") or {}:
        c = top.child("clock", "clocks", name)
        reminders = []
        for i, _ in enumerate(c("reminders") or ()):
            rm = c.child("reminder", "reminders", i)
            reminders.append(
                EscalationLevel(
                    level=i + 1,
                    after=-(_duration(rm("before")) or timedelta(0)),
                    notify=rm.names("notify"),
                    template=rm("template", ""),
                    where=rm.where(),
                )
            )
        escalation = [
            replace(lv, level=len(reminders) + lv.level) for lv in _escalation(c, "escalation")
        ]
        waive = c.child("clock_waive", "waive")
        clocks[name] = ClockSpec(
            name=name,
            after=_duration(c("after")) or timedelta(0),
            anchor=c("from", ""),
            stops_when=c("stops_when", ""),
            ladder=(*reminders, *escalation),
            blocks_closure=bool(c("blocks_closure", False)),
            waive_roles=waive.names("roles") or DEFAULT_WAIVE_ROLES,
            waive_reasons=waive.names("reasons") or DEFAULT_WAIVE_REASONS,
            description=c("description", ""),
            where=c.where(),
        )
    return clocks


def _replace_state(stage: StateSpec, base: StateSpec) -> StateSpec:
    return replace(
        stage,
        initial=base.initial,
        requires=base.requires,
        tasks=frozen_map({**base.tasks, **stage.tasks}),
        deadlines=frozen_map({**base.deadlines, **stage.deadlines}),
    )
