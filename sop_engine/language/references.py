"""Stage 5a: every name an SOP uses is declared.

Roles, agencies, facts, data categories, consent scopes, states, events and notification
templates: each reference is checked, and a near miss gets a "did you mean".
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from sop_engine.errors import Problem
from sop_engine.language.report import (
    Report,
    disclosable_fields,
    entered_handoff,
    from_handoff,
    generated,
    transition_state,
    user_state,
    what,
)
from sop_engine.language.spec import (
    BUILTIN_ANCHORS,
    CASE_REFERENCE,
    MANAGING_AGENCY,
    OUTCOME_KEYS,
    DeadlineSpec,
    EscalationLevel,
    HandoffSpec,
    Notification,
    Override,
    SopSpec,
    Where,
)

__all__ = ["reference_problems"]


class _References:
    """Checks one spec's references; each kind of name has one collection it must be in."""

    def __init__(self, spec: SopSpec, templates: Collection[str] | None) -> None:
        self.spec = spec
        self.report = Report(spec)
        self.templates = templates
        self.known: dict[str, Collection[str]] = {
            "role": spec.roles,
            "agency": spec.agencies,
            "acting agency": {*spec.agencies, MANAGING_AGENCY},
            "fact": spec.facts,
            "data category": {*spec.data_categories, CASE_REFERENCE},
            "dataset field": disclosable_fields(spec),
            "consent scope": spec.consent_scopes,
            "state": spec.states,
            "target state": {*spec.states, *spec.handoffs},
            "event": set(spec.events),
            "template": templates or (),
            "timestamp": [
                *BUILTIN_ANCHORS,
                *(f.name for f in spec.facts.values() if f.type == "datetime"),
            ],
        }

    def ref(self, where: Where, kind: str, name: str | None, state: str | None, ctx: str) -> None:
        if kind == "template" and self.templates is None:
            return
        shown = {"target state": "state", "acting agency": "agency"}.get(kind, kind)
        self.report.ref(where, shown, name, self.known[kind], state=state, context=ctx)

    def notifications(self, items: Iterable[Notification], state: str | None, ctx: str) -> None:
        for n in items:
            self.ref(n.where.of("template"), "template", n.template, state, ctx)
            self.ref(n.where.of("to"), "role", n.to, state, ctx)
            self.ref(n.where.of("agency"), "agency", n.agency, state, ctx)

    def ladder(self, levels: Iterable[EscalationLevel], state: str | None, ctx: str) -> None:
        for lv in levels:
            for role in lv.notify:
                self.ref(lv.where.of("notify"), "role", role, state, ctx)
            self.ref(lv.where.of("template"), "template", lv.template, state, ctx)
            self.ref(lv.where.of("fire"), "event", lv.fire, state, ctx)

    def override(self, o: Override | None, state: str | None, ctx: str) -> None:
        if o is not None:
            self.ref(o.where.of("sign_off"), "role", o.sign_off, state, ctx)

    def facts(self) -> None:
        r = self.report
        for f in self.spec.facts.values():
            ctx = f"fact {f.name!r}: "
            self.ref(f.where.of("category"), "data category", f.category, None, ctx)
            if f.type == "enum" and not f.values:
                r.add(f.where, f"{ctx}an enum fact needs 'values'")
            if f.type != "enum" and f.values:
                r.add(f.where.of("values"), f"{ctx}'values' is only for enum facts")
            if (f.min is not None or f.max is not None) and f.type not in ("integer", "number"):
                r.add(f.where, f"{ctx}'min' and 'max' are only for numbers")

    def roles(self) -> None:
        for role in self.spec.roles.values():
            self.ref(role.where.of("agency"), "agency", role.agency, None, f"role {role.name!r}: ")

    def consent_scopes(self) -> None:
        for c in self.spec.consent_scopes.values():
            ctx = f"consent scope {c.name!r}: "
            self.ref(c.where.of("recipient"), "agency", c.recipient, None, ctx)
            for cat in c.data_categories:
                self.ref(c.where.of("data_categories"), "data category", cat, None, ctx)

    def deadline(self, d: DeadlineSpec, state: str) -> None:
        ctx = f"deadline {d.name!r}: "
        fact = self.spec.facts.get(d.anchor)
        if fact is not None and fact.type != "datetime":
            self.report.add(
                d.where.of("from"),
                f"{ctx}runs from fact {d.anchor!r}, which is not a datetime",
                state=state,
            )
        elif fact is None:
            self.ref(d.where.of("from"), "timestamp", d.anchor, state, ctx)
        self.ladder(d.escalation, state, ctx)

    def states(self) -> None:
        spec = self.spec
        for s in spec.states.values():
            if s.handoff is not None and s.stage != "sent":
                continue
            name = user_state(spec, s.name)
            for fact in s.requires:
                self.ref(s.where.of("requires"), "fact", fact, name, "requires ")
            for task in s.tasks.values():
                if not generated(spec, s, task):
                    ctx = f"task {task.name!r}: "
                    self.ref(task.where.of("role"), "role", task.role, name, ctx)
                    self.ref(task.where.of("agency"), "agency", task.agency, name, ctx)
            for d in s.deadlines.values():
                if not generated(spec, s, d):
                    self.deadline(d, name)

    def outcomes(self, h: HandoffSpec, ctx: str) -> None:
        """Where the case goes once the handoff ended: given for one that occupies the case's
        state, never for a parallel one (the case stays where it is)."""
        at, name = h.where.of, h.name
        for key in OUTCOME_KEYS:
            given = key in h.written_outcomes
            if h.parallel and given:
                self.report.add(
                    at(key),
                    f"{ctx}{key!r} cannot be given for a parallel handoff: it ends without "
                    "moving the case",
                    state=name,
                )
            elif not h.parallel and not given:
                self.report.add(
                    h.where,
                    f"{ctx}'{key}' is required: the state the case moves to once the referral "
                    f"is {key} (or make the handoff 'parallel: true')",
                    state=name,
                )
            elif given:
                self.ref(at(key), "target state", getattr(h, key), name, ctx)

    def handoffs(self) -> None:
        ctx = "handoff: "
        for h in self.spec.handoffs.values():
            at, name = h.where.of, h.name
            self.ref(at("to"), "agency", h.to, name, ctx)
            self.ref(at("role"), "role", h.role, name, ctx)
            self.ref(at("sender"), "acting agency", h.sender, name, ctx)
            for role in h.sender_roles:
                self.ref(at("sender_roles"), "role", role, name, ctx)
            self.ref(at("consent"), "consent scope", h.consent, name, ctx)
            self.override(h.override, name, ctx)
            for field in h.dataset:
                self.ref(at("dataset"), "dataset field", field, name, ctx)
            self.outcomes(h, ctx)
            self.ladder(h.escalation, name, ctx)
            self.notifications(h.notify, name, ctx)
            for task, key, stage in (
                ("respond", "respond_within", "acknowledged"),
                ("deliver", "deliver_within", "accepted"),
            ):
                timed, why = getattr(h, key) is not None, h.untimed.get(task)
                if not timed and not why:
                    self.report.add(
                        h.where,
                        f"{ctx}stage {stage!r} has no deadline: give {key}, or say why it "
                        f"has none under untimed.{task}",
                        state=name,
                    )
                elif timed and why:
                    self.report.add(
                        at("untimed"),
                        f"{ctx}stage {stage!r} has {key} and a reason for having no deadline "
                        f"(untimed.{task}): keep one",
                        state=name,
                    )
            if h.reason_required and not h.decline_reasons:
                self.report.add(
                    h.where, f"{ctx}reason_required needs a list of decline_reasons", state=name
                )

    def reopen(self) -> None:
        spec, r = self.spec, self.spec.reopen
        if r is None:
            return
        ctx = "reopen: "
        for role in r.roles:
            self.ref(r.where.of("roles"), "role", role, None, ctx)
        self.ref(r.where.of("to"), "state", r.to, None, ctx)
        target = spec.states.get(r.to)
        if target is not None and (target.final or target.handoff is not None):
            self.report.add(
                r.where.of("to"),
                f"{ctx}a reopened case returns to a state of its own, not to "
                f"{'a final state' if target.final else 'a handoff'} ({r.to!r})",
            )

    def transfer(self) -> None:
        spec, tr = self.spec, self.spec.transfer
        if tr is None:
            return
        ctx, at = "transfer: ", tr.where.of
        self.ref(at("to"), "agency", tr.to, None, ctx)
        self.ref(at("role"), "role", tr.role, None, ctx)
        for role in tr.requester_roles:
            self.ref(at("requester_roles"), "role", role, None, ctx)
        self.ref(at("consent"), "consent scope", tr.consent, None, ctx)
        for field in tr.dataset:
            self.ref(at("dataset"), "dataset field", field, None, ctx)
        self.ladder(tr.escalation, None, ctx)
        answering = spec.roles.get(tr.role)
        if answering is not None and answering.agency not in (None, tr.to):
            self.report.add(
                at("role"),
                f"{ctx}role {tr.role!r} works at {answering.agency!r}, but the case is "
                f"transferred to {tr.to!r}: the receiving agency's role answers",
            )

    def transitions(self) -> None:
        spec = self.spec
        for t in spec.transitions:
            if t.handoff is not None:
                continue
            state, ctx, at = transition_state(spec, t), what(t), t.where.of
            for src in t.sources:
                self.ref(at("from"), "state", src, state, ctx)
            self.ref(at("to"), "state", t.target, state, ctx)
            for role in t.roles:
                self.ref(at("roles"), "role", role, state, ctx)
            for agency in t.agencies:
                self.ref(at("agencies"), "acting agency", agency, state, ctx)
            for fact in t.sets:
                self.ref(at("sets"), "fact", fact, state, ctx)
            self.ref(at("consent"), "consent scope", t.consent, state, ctx)
            self.override(t.override, state, ctx)
            if t.discloses is not None and not from_handoff(spec, t):
                d = t.discloses
                self.ref(d.where.of("to"), "agency", d.to, state, ctx)
                for field in d.fields:
                    self.ref(d.where.of("fields"), "dataset field", field, state, ctx)
            entered = entered_handoff(spec, t)
            inherited = entered.notify if entered is not None else ()
            self.notifications([n for n in t.notify if n not in inherited], state, ctx)


def reference_problems(spec: SopSpec, templates: Collection[str] | None = None) -> list[Problem]:
    """Every reference to something undeclared. ``templates``: known names, or None to skip."""
    check = _References(spec, templates)
    check.facts()
    check.roles()
    check.consent_scopes()
    check.states()
    check.handoffs()
    check.reopen()
    check.transfer()
    check.transitions()
    return check.report.problems
