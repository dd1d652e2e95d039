"""Stage 5: check a built spec completely before any referral may use it.

Three families of checks, each returning every problem it finds (never stopping at the
first):

* :func:`reference_problems`: every name an SOP uses (role, agency, fact, data category,
  consent scope, state, event, template) is declared, with a "did you mean";
* :func:`graph_problems`: one initial state, every state reachable, no trap states, a final
  state reachable from everywhere, no event that can never fire;
* :func:`rule_problems`: the field's rules: every deadline has an escalation ladder, no
  escalation moves a case to another agency by itself, and every disclosure to another agency
  or country is covered by a consent scope for that recipient and those data, or is a declared
  override demanding a written justification and a sign-off.

Guards are compiled here too (:func:`compile_guards`), since a guard that does not compile
or names an unknown fact is a definition error like any other.
"""

from __future__ import annotations

import zoneinfo
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping

from sop_engine.errors import Problem
from sop_engine.language.guards import CompiledGuard, GuardCompileError, compile_guard
from sop_engine.language.schema import did_you_mean
from sop_engine.language.spec import (
    BUILTIN_ANCHORS,
    BUILTIN_FIELDS,
    CASE_REFERENCE,
    DeadlineSpec,
    Disclosure,
    EscalationLevel,
    Notification,
    Override,
    SopSpec,
    StateSpec,
    TaskSpec,
    TransitionSpec,
    Where,
)

__all__ = [
    "compile_guards",
    "header_problems",
    "graph_problems",
    "reference_problems",
    "rule_problems",
]


class _Report:
    """Collects problems for one SOP, with its key filled in."""

    def __init__(self, spec: SopSpec) -> None:
        self.spec = spec
        self.problems: list[Problem] = []

    def add(
        self, where: Where, message: str, *, state: str | None = None, hint: str | None = None
    ) -> None:
        self.problems.append(Problem(where.file, where.line, message, self.spec.key, state, hint))

    def ref(
        self,
        where: Where,
        kind: str,
        name: str | None,
        known: Collection[str],
        *,
        state: str | None = None,
        context: str = "",
    ) -> bool:
        """Report ``name`` unless it is one of ``known``; True when it is known."""
        if name is None or name in known:
            return True
        self.add(
            where,
            f"{context}unknown {kind} {name!r}",
            state=state,
            hint=did_you_mean(name, known),
        )
        return False


def _user_state(spec: SopSpec, state: str) -> str:
    """The name a coordinator wrote: the handoff's, for one of its generated stages."""
    return spec.states[state].handoff or state if state in spec.states else state


def _transition_state(spec: SopSpec, t: TransitionSpec) -> str | None:
    names = dict.fromkeys(_user_state(spec, s) for s in t.sources)
    return ", ".join(names) if names else None


def _what(t: TransitionSpec) -> str:
    return f"transition {t.id!r}: "


def _generated(spec: SopSpec, state: StateSpec, item: DeadlineSpec | TaskSpec) -> bool:
    """Whether a handoff stage's deadline or task was made by the engine, not written."""
    return state.handoff is not None and item.where == spec.handoffs[state.handoff].where


def _fields(spec: SopSpec) -> dict[str, str | None]:
    """Every disclosable field with its data category."""
    out: dict[str, str | None] = dict(BUILTIN_FIELDS)
    out.update((name, f.category) for name, f in spec.facts.items())
    return out


def reference_problems(spec: SopSpec, templates: Collection[str] | None = None) -> list[Problem]:
    """Every reference to something undeclared. ``templates``: known names, or None to skip."""
    r = _Report(spec)
    roles, agencies, facts = spec.roles, spec.agencies, spec.facts
    categories = {*spec.data_categories, CASE_REFERENCE}
    fields = _fields(spec)
    states = {**{s: None for s in spec.states}, **{h: None for h in spec.handoffs}}
    events = set(spec.events)

    def notifications(items: Iterable[Notification], state: str | None, ctx: str) -> None:
        for n in items:
            if templates is not None:
                r.ref(n.where.of("template"), "template", n.template, templates, state=state,
                      context=ctx)  # fmt: skip
            r.ref(n.where.of("to"), "role", n.to, roles, state=state, context=ctx)
            r.ref(n.where.of("agency"), "agency", n.agency, agencies, state=state, context=ctx)

    def ladder(levels: Iterable[EscalationLevel], state: str, ctx: str) -> None:
        for lv in levels:
            for role in lv.notify:
                r.ref(lv.where.of("notify"), "role", role, roles, state=state, context=ctx)
            if templates is not None:
                r.ref(lv.where.of("template"), "template", lv.template, templates, state=state,
                      context=ctx)  # fmt: skip
            r.ref(lv.where.of("fire"), "event", lv.fire, events, state=state, context=ctx)

    def override(o: Override | None, state: str | None, ctx: str) -> None:
        if o is not None:
            r.ref(o.where.of("sign_off"), "role", o.sign_off, roles, state=state, context=ctx)

    for f in facts.values():
        r.ref(f.where.of("category"), "data category", f.category, categories,
              context=f"fact {f.name!r}: ")  # fmt: skip
        if f.type == "enum" and not f.values:
            r.add(f.where, f"fact {f.name!r}: an enum fact needs 'values'")
        if f.type != "enum" and f.values:
            r.add(f.where.of("values"), f"fact {f.name!r}: 'values' is only for enum facts")
        if (f.min is not None or f.max is not None) and f.type not in ("integer", "number"):
            r.add(f.where, f"fact {f.name!r}: 'min' and 'max' are only for numbers")
    for c in spec.consent_scopes.values():
        ctx = f"consent scope {c.name!r}: "
        r.ref(c.where.of("recipient"), "agency", c.recipient, agencies, context=ctx)
        for cat in c.data_categories:
            r.ref(c.where.of("data_categories"), "data category", cat, categories, context=ctx)

    for s in spec.states.values():
        if s.handoff is not None and s.stage != "sent":
            continue
        name = _user_state(spec, s.name)
        for fact in s.requires:
            r.ref(s.where, "fact", fact, facts, state=name, context="requires ")
        for task in s.tasks.values():
            if _generated(spec, s, task):
                continue
            ctx = f"task {task.name!r}: "
            r.ref(task.where.of("role"), "role", task.role, roles, state=name, context=ctx)
            r.ref(task.where.of("agency"), "agency", task.agency, agencies, state=name,
                  context=ctx)  # fmt: skip
        for d in s.deadlines.values():
            if _generated(spec, s, d):
                continue
            if d.anchor in BUILTIN_ANCHORS:
                pass
            elif d.anchor in facts:
                if facts[d.anchor].type != "datetime":
                    r.add(d.where.of("from"), f"deadline {d.name!r} runs from fact "
                          f"{d.anchor!r}, which is not a datetime", state=name)  # fmt: skip
            else:
                r.ref(d.where.of("from"), "timestamp", d.anchor,
                      [*BUILTIN_ANCHORS, *(f for f in facts if facts[f].type == "datetime")],
                      state=name, context=f"deadline {d.name!r}: ")  # fmt: skip
            ladder(d.escalation, name, f"deadline {d.name!r}: ")

    for h in spec.handoffs.values():
        ctx = "handoff: "
        r.ref(h.where.of("to"), "agency", h.to, agencies, state=h.name, context=ctx)
        r.ref(h.where.of("role"), "role", h.role, roles, state=h.name, context=ctx)
        for role in h.sender_roles:
            r.ref(h.where.of("sender_roles"), "role", role, roles, state=h.name, context=ctx)
        r.ref(h.where.of("consent"), "consent scope", h.consent, spec.consent_scopes,
              state=h.name, context=ctx)  # fmt: skip
        override(h.override, h.name, ctx)
        for field in h.dataset:
            r.ref(h.where.of("dataset"), "dataset field", field, fields, state=h.name,
                  context=ctx)  # fmt: skip
        for key in ("delivered", "declined", "revoked"):
            r.ref(h.where.of(key), "state", getattr(h, key), states, state=h.name, context=ctx)
        ladder(h.escalation, h.name, ctx)
        notifications(h.notify, h.name, ctx)
        if h.reason_required and not h.decline_reasons:
            r.add(h.where, "handoff: reason_required needs a list of decline_reasons",
                  state=h.name)  # fmt: skip

    for t in spec.transitions:
        if t.handoff is not None:
            continue
        state = _transition_state(spec, t)
        ctx = _what(t)
        for src in t.sources:
            r.ref(t.where.of("from"), "state", src, spec.states, state=state, context=ctx)
        r.ref(t.where.of("to"), "state", t.target, spec.states, state=state, context=ctx)
        for role in t.roles:
            r.ref(t.where.of("roles"), "role", role, roles, state=state, context=ctx)
        for fact in t.sets:
            r.ref(t.where.of("sets"), "fact", fact, facts, state=state, context=ctx)
        r.ref(t.where.of("consent"), "consent scope", t.consent, spec.consent_scopes,
              state=state, context=ctx)  # fmt: skip
        override(t.override, state, ctx)
        if t.discloses is not None and t.discloses.where.file != "<engine>":
            d = t.discloses
            r.ref(d.where.of("to"), "agency", d.to, agencies, state=state, context=ctx)
            for field in d.fields:
                r.ref(d.where.of("fields"), "dataset field", field, fields, state=state,
                      context=ctx)  # fmt: skip
        from_handoff = spec.handoffs[t.target.split(".")[0]].notify if t.target.endswith(
            ".sent") and t.target.split(".")[0] in spec.handoffs else ()
        notifications([n for n in t.notify if n not in from_handoff], state, ctx)
    return r.problems


def compile_guards(spec: SopSpec) -> tuple[dict[str, CompiledGuard], list[Problem]]:
    """Compile every guard once; return them by transition id, and the problems."""
    r = _Report(spec)
    guards: dict[str, CompiledGuard] = {}
    for t in spec.transitions:
        if t.guard is None:
            continue
        try:
            guards[t.id] = compile_guard(t.guard, spec.facts, spec.consent_scopes)
        except GuardCompileError as exc:
            r.add(t.where.of("guard"), f"{_what(t)}{exc}", state=_transition_state(spec, t),
                  hint=exc.hint)  # fmt: skip
    return guards, r.problems


def _reach(start: Iterable[str], edges: Mapping[str, set[str]]) -> set[str]:
    seen = set(start)
    queue = deque(seen)
    while queue:
        for nxt in edges.get(queue.popleft(), ()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def graph_problems(spec: SopSpec) -> list[Problem]:
    """Structural faults of the state graph."""
    r = _Report(spec)
    states = spec.states
    initial = [s for s in states.values() if s.initial]
    top = spec.where.of("states")
    if not initial:
        r.add(top, "no initial state: mark exactly one state with 'initial: true'")
    for extra in initial[1:]:
        r.add(extra.where.of("initial"), f"more than one initial state ({initial[0].name!r} "
              f"and {extra.name!r})", state=extra.name)  # fmt: skip
    finals = {s.name for s in states.values() if s.final}
    if not finals:
        r.add(top, "no final state: mark at least one state with 'final: true'")
    for s in states.values():
        if s.final and s.initial:
            r.add(s.where, "the initial state cannot be final", state=s.name)
        if s.final and s.handoff is not None:
            r.add(s.where, "a handoff state cannot be final", state=s.handoff)

    edges: dict[str, set[str]] = {name: set() for name in states}
    reverse: dict[str, set[str]] = {name: set() for name in states}
    for t in spec.transitions:
        if t.target not in states:
            continue
        for src in t.sources:
            if src in states:
                edges[src].add(t.target)
                reverse[t.target].add(src)

    reported: set[str] = set()

    def once(state: str, where: Where, message: str) -> None:
        user = _user_state(spec, state)
        if user not in reported:
            reported.add(user)
            r.add(where, message, state=user)

    if initial:
        reachable = _reach([initial[0].name], edges)
        for s in states.values():
            if s.name not in reachable:
                once(s.name, s.where, "unreachable: no path leads here from the initial state")
        if finals and not reachable & finals:
            r.add(initial[0].where, "no final state can be reached from the initial state",
                  state=initial[0].name)  # fmt: skip
    for s in states.values():
        if s.final:
            if edges[s.name]:
                once(s.name, s.where, "a final state cannot have transitions out of it")
        elif not edges[s.name]:
            once(s.name, s.where, "trap: a state that is not final has no transition out")
    if finals:
        can_finish = _reach(finals, reverse)
        for s in states.values():
            if s.name not in can_finish:
                once(s.name, s.where, "no path from here reaches a final state")

    # Two transitions of one event from one state: all but the last need a guard, or the
    # later ones can never fire.
    seen: dict[tuple[str, str], TransitionSpec] = {}
    for t in spec.transitions:
        for src in t.sources:
            earlier = seen.get((src, t.event))
            if earlier is not None and earlier.guard is None:
                r.add(t.where, f"{_what(t)}can never fire: {earlier.id!r} handles event "
                      f"{t.event!r} from {_user_state(spec, src)!r} first, without a guard",
                      state=_transition_state(spec, t))  # fmt: skip
            seen.setdefault((src, t.event), t)
    return r.problems


def _consent_problem(
    spec: SopSpec, t: TransitionSpec, d: Disclosure, fields: Mapping[str, str | None]
) -> str | None:
    """Why the consent basis of disclosure ``d`` is not enough, or None when it is."""
    if t.override is not None:
        if not t.override.reasons or not t.override.sign_off:
            return "an override needs reasons and a sign-off role"
        return None
    if t.consent is None:
        recipient = spec.agencies.get(d.to)
        country = recipient.country if recipient else "?"
        return (
            f"discloses {', '.join(d.fields)} to {d.to!r} (country: {country}) without consent: "
            "add 'consent: SCOPE' covering that recipient and those data, or declare an "
            "'override' (reasons and a sign-off role)"
        )
    scope = spec.consent_scopes.get(t.consent)
    if scope is None:
        return None  # reported as an unknown reference
    if scope.recipient != d.to:
        return (
            f"consent scope {scope.name!r} covers recipient {scope.recipient!r}, "
            f"but the transition discloses to {d.to!r}"
        )
    agency = spec.agencies.get(d.to)
    if agency and scope.country not in ("any", agency.country) and agency.country != "any":
        return (
            f"consent scope {scope.name!r} covers country {scope.country!r}, "
            f"but {d.to!r} is in {agency.country!r}"
        )
    if agency and agency.country == "any" and scope.country != "any":
        return (
            f"consent scope {scope.name!r} covers only country {scope.country!r}, "
            f"but {d.to!r} may be in any country; give the agency a country"
        )
    uncovered = [
        f"{f} ({fields[f]})"
        for f in d.fields
        if f in fields and fields[f] != CASE_REFERENCE and fields[f] not in scope.data_categories
    ]
    uncategorised = [f for f in d.fields if f in fields and fields[f] is None]
    if uncategorised:
        return (
            f"discloses {', '.join(uncategorised)} which has no data category, so no consent "
            "can cover it: give the fact a 'category'"
        )
    if uncovered:
        return (
            f"consent scope {scope.name!r} does not cover the data categories of "
            f"{', '.join(uncovered)}"
        )
    return None


def rule_problems(spec: SopSpec) -> list[Problem]:
    """The field's rules: escalation ladders, no automatic moves, consent before disclosure."""
    r = _Report(spec)
    fields = _fields(spec)
    enters_handoff: Callable[[TransitionSpec], bool] = lambda t: (  # noqa: E731
        t.target in spec.states and spec.states[t.target].stage == "sent"
    )

    ladders_seen: set[int] = set()
    for s in spec.states.values():
        user = _user_state(spec, s.name)
        for d in s.deadlines.values():
            if id(d.escalation) in ladders_seen:
                continue
            if d.escalation:
                ladders_seen.add(id(d.escalation))
            if not d.escalation:
                r.add(d.where, f"deadline {d.name!r} has no escalation: say who is told when "
                      "it passes", state=user)  # fmt: skip
            previous = None
            for lv in d.escalation:
                if previous is not None and lv.after < previous:
                    r.add(lv.where.of("after"), f"deadline {d.name!r}: escalation level "
                          f"{lv.level} comes before level {lv.level - 1}", state=user)  # fmt: skip
                previous = lv.after
                if lv.fire is None:
                    continue
                candidates = spec.transitions_for(s.name, lv.fire)
                if not candidates:
                    r.add(lv.where.of("fire"), f"deadline {d.name!r}: escalation fires "
                          f"{lv.fire!r}, which cannot fire from {user!r}", state=user)  # fmt: skip
                for t in candidates:
                    if enters_handoff(t) or t.discloses is not None:
                        r.add(lv.where.of("fire"), f"deadline {d.name!r}: escalation fires "
                              f"{lv.fire!r}, which would send the case to another agency by "
                              "itself; escalations notify people, they never move a case",
                              state=user)  # fmt: skip

    for t in spec.transitions:
        if t.discloses is None:
            continue
        message = _consent_problem(spec, t, t.discloses, fields)
        if message is not None:
            where = t.where.of("consent") if t.consent else t.where
            r.add(where, f"{_what(t)}{message}", state=_transition_state(spec, t))
    return r.problems


def header_problems(spec: SopSpec) -> list[Problem]:
    """Identity, dates, jurisdiction and time zone."""
    r = _Report(spec)
    top = spec.where
    if spec.review <= spec.effective:
        r.add(top.of("review"), f"review date {spec.review} is not after effective date {spec.effective}")
    j = spec.jurisdiction
    if j.countries and (j.origin or j.destination):
        r.add(top.of("jurisdiction"), "jurisdiction: give either countries or origin and destination, not both")
    elif not j.countries and not (j.origin and j.destination):
        r.add(top.of("jurisdiction"), "jurisdiction: give countries, or both origin and destination")
    elif j.origin and j.origin == j.destination:
        r.add(top.of("jurisdiction"), "jurisdiction: origin and destination are the same country")
    if spec.timezone is not None:
        try:
            zoneinfo.ZoneInfo(spec.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            r.add(top.of("timezone"), f"unknown time zone {spec.timezone!r}")
    if not j.is_corridor:
        for a in spec.agencies.values():
            if a.country in ("origin", "destination"):
                r.add(a.where.of("country"), f"agency {a.name!r}: country {a.country!r} only "
                      "makes sense in a corridor SOP (origin and destination)")  # fmt: skip
    return r.problems
