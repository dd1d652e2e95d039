"""Stage 5b: the state graph and the field's rules, checked before any referral may use an SOP.

Each function returns every problem it finds (never stopping at the first):

* :func:`graph_problems`: one initial state, every state reachable, no trap states, a final
  state reachable from everywhere, no transition that can never fire;
* :func:`rule_problems`: every deadline has an escalation ladder, no escalation moves a case
  to another agency by itself, and every disclosure to another agency or country is covered
  by a consent scope for that recipient and those data, or is a declared override demanding a
  written justification and a sign-off;
* :func:`header_problems`: dates, jurisdiction and time zone.

No escalation fires another agency's transition (a handoff's answer, or a transition the
managing agency may not fire): it would act in that agency's place.

Guards are compiled here too (:func:`compile_guards`), since a guard that does not compile
or names an unknown fact is a definition error like any other. References are checked in
:mod:`references`.
"""

from __future__ import annotations

import zoneinfo
from collections import deque
from collections.abc import Iterable, Mapping

from sop_engine.errors import Problem
from sop_engine.language.acting import slot_names
from sop_engine.language.guards import CompiledGuard, GuardCompileError, compile_guard
from sop_engine.language.report import (
    Report,
    disclosable_fields,
    transition_state,
    user_state,
    what,
)
from sop_engine.language.spec import (
    CASE_REFERENCE,
    MANAGING_AGENCY,
    DeadlineSpec,
    Disclosure,
    SopSpec,
    TransferSpec,
    TransitionSpec,
    Where,
)

__all__ = [
    "compile_guards",
    "graph_problems",
    "header_problems",
    "rule_problems",
]


def compile_guards(spec: SopSpec) -> tuple[dict[str, CompiledGuard], list[Problem]]:
    """Compile every guard once; return them by transition id, and the problems."""
    r = Report(spec)
    guards: dict[str, CompiledGuard] = {}
    for t in spec.transitions:
        if t.guard is None:
            continue
        try:
            guards[t.id] = compile_guard(t.guard, spec.facts, spec.consent_scopes)
        except GuardCompileError as exc:
            r.add(
                t.where.of("guard"),
                f"{what(t)}{exc}",
                state=transition_state(spec, t),
                hint=exc.hint,
            )
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


def _initial_and_final(r: Report, spec: SopSpec) -> None:
    initial = [s for s in spec.states.values() if s.initial]
    top = spec.where.of("states")
    if not initial:
        r.add(top, "no initial state: mark exactly one state with 'initial: true'")
    for extra in initial[1:]:
        r.add(
            extra.where.of("initial"),
            f"more than one initial state ({initial[0].name!r} and {extra.name!r})",
            state=extra.name,
        )
    if not spec.final_states:
        r.add(top, "no final state: mark at least one state with 'final: true'")
    for s in spec.states.values():
        if s.final and s.initial:
            r.add(s.where, "the initial state cannot be final", state=s.name)
        if s.final and s.handoff is not None:
            r.add(s.where, "a handoff state cannot be final", state=s.handoff)
    for t in spec.transitions:
        for src in t.sources:
            if src in spec.states and spec.states[src].final:
                r.add(
                    t.where.of("from"),
                    f"{what(t)}leaves {src!r}, but a final state cannot have transitions out of it",
                    state=src,
                )


def case_states(spec: SopSpec) -> list[str]:
    """The states the case itself can be in: all but the stages of parallel handoffs, which
    run beside it (their stages are generated, and each ends by its own answers)."""
    regions = set(spec.regions)
    return [s.name for s in spec.states.values() if s.handoff not in regions]


def _edges(spec: SopSpec) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Forward and reverse adjacency of the case's state graph (parallel handoffs aside)."""
    edges: dict[str, set[str]] = {name: set() for name in case_states(spec)}
    reverse: dict[str, set[str]] = {name: set() for name in case_states(spec)}
    for t in spec.transitions:
        if t.region is None and t.target in edges:
            for src in t.sources:
                if src in edges:
                    edges[src].add(t.target)
                    reverse[t.target].add(src)
    return edges, reverse


def _paths(r: Report, spec: SopSpec) -> None:
    """Reachability from the initial state, trap states, and states that cannot finish."""
    edges, reverse = _edges(spec)
    reported: set[str] = set()

    def once(state: str, where: Where, message: str) -> None:
        user = user_state(spec, state)
        if user not in reported:
            reported.add(user)
            r.add(where, message, state=user)

    initial = [s for s in spec.states.values() if s.initial]
    finals = set(spec.final_states)
    states = [spec.states[name] for name in edges]
    if len(initial) == 1:
        reachable = _reach([initial[0].name], edges)
        for s in states:
            if s.name not in reachable:
                once(s.name, s.where, "unreachable: no path leads here from the initial state")
        if finals and not reachable & finals:
            r.add(
                initial[0].where,
                "no final state can be reached from the initial state",
                state=initial[0].name,
            )
    for s in states:
        if not s.final and not edges[s.name]:
            once(s.name, s.where, "trap: a state that is not final has no transition out")
    if finals:
        can_finish = _reach(finals, reverse)
        for s in states:
            if s.name not in can_finish:
                once(s.name, s.where, "no path from here reaches a final state")


def _shadowed(r: Report, spec: SopSpec) -> None:
    """Two transitions of one event from one state: all but the last need a guard, or the
    later ones can never fire."""
    seen: dict[tuple[str, str], TransitionSpec] = {}
    for t in spec.transitions:
        shadows = {}
        for src in t.sources:
            earlier = seen.get((src, t.event))
            if earlier is not None and earlier.guard is None:
                shadows[user_state(spec, src)] = earlier.id
            seen.setdefault((src, t.event), t)
        if shadows:
            by = ", ".join(sorted(set(shadows.values())))
            froms = ", ".join(repr(s) for s in shadows)
            r.add(
                t.where,
                f"{what(t)}can never fire: {by!r} handles event {t.event!r} "
                f"from {froms} first, without a guard",
                state=transition_state(spec, t),
            )


def _parallel(r: Report, spec: SopSpec) -> None:
    """A parallel handoff runs beside the case: the case never is in one of its stages, so
    no transition of the SOP's own leaves one, and it cannot be where a case starts."""
    regions = set(spec.regions)
    for t in spec.transitions:
        if t.handoff is not None or t.region is not None:
            continue
        left = sorted(
            {spec.states[s].handoff or s for s in t.sources if s in spec.states} & regions
        )
        if left:
            r.add(
                t.where.of("from"),
                f"{what(t)}leaves parallel handoff {left[0]!r}, which the case is never in: "
                "it runs beside the case and ends by its own answers",
                state=left[0],
            )
    for name in regions:
        first = spec.states[f"{name}.sent"]
        if first.initial:
            r.add(first.where, "a parallel handoff cannot be the initial state", state=name)


def graph_problems(spec: SopSpec) -> list[Problem]:
    """Structural faults of the state graph."""
    r = Report(spec)
    _initial_and_final(r, spec)
    _paths(r, spec)
    _shadowed(r, spec)
    _parallel(r, spec)
    return r.problems


HEALTH_TYPES = frozenset({"health"})
"""Agency types that give clinical care: a handoff to a slot of one of them is a health
referral."""

JUSTICE_TYPES = frozenset({"police", "legal_aid", "justice", "prosecution"})
"""Agency types of the justice chain: a handoff to a slot of one of them is a justice step."""


def _handoffs_to(spec: SopSpec, types: frozenset[str]) -> set[str]:
    return {
        h.name
        for h in spec.handoffs.values()
        if h.to in spec.agencies and set(spec.agencies[h.to].types) & types
    }


def _health_first(r: Report, spec: SopSpec) -> None:
    """DOMAIN rule: health care never waits on the police. From every state the case can be
    in, a health referral can be made by a path that takes no justice step (sending a
    justice referral, or waiting on its answer or its revoke)."""
    health = _handoffs_to(spec, HEALTH_TYPES)
    if not health:
        return
    justice = _handoffs_to(spec, JUSTICE_TYPES)
    states = case_states(spec)
    in_justice = {s for s in states if spec.states[s].handoff in justice}

    def justice_step(t: TransitionSpec) -> bool:
        target = spec.states.get(t.target)
        return t.handoff in justice or (target is not None and target.handoff in justice)

    def refers_for_health(t: TransitionSpec) -> bool:
        target = spec.states.get(t.target)
        return target is not None and target.stage == "sent" and target.handoff in health

    def reaching_health(with_justice: bool) -> set[str]:
        """The case states from which a health referral can be made."""
        reverse: dict[str, set[str]] = {s: set() for s in states}
        can_refer: set[str] = set()
        for t in spec.transitions:
            if (justice_step(t) and not with_justice) or (t.region is not None and not t.opens):
                continue
            for src in (s for s in t.sources if s in reverse):
                if refers_for_health(t):
                    can_refer.add(src)
                if t.region is None and t.target in reverse:
                    reverse[t.target].add(src)
        return _reach(can_refer, reverse)

    # Only where a health referral can be made at all: past a border, for instance, the
    # other country's agencies refer under its own SOP.
    waiting = reaching_health(with_justice=True) - reaching_health(with_justice=False)
    reported: set[str] = set()
    for s in states:
        user = user_state(spec, s)
        if s not in waiting or user in reported:
            continue
        reported.add(user)
        waits = " (it waits on a justice referral)" if s in in_justice else ""
        r.add(
            spec.states[s].where,
            f"health first: from {user!r}{waits} no health referral "
            f"({', '.join(sorted(health))}) can be made without a justice step; health care "
            "never waits on the police: make the justice referral 'parallel: true', or let "
            "the health referral be made from here",
            state=user,
        )


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
    if scope is None or d.to not in spec.agencies:
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


def _moves_case(t: TransitionSpec, spec: SopSpec) -> bool:
    """Whether firing ``t`` sends the case, or data about it, to another agency."""
    target = spec.states.get(t.target)
    return t.discloses is not None or (target is not None and target.stage == "sent")


def _acts_for_another(t: TransitionSpec) -> bool:
    """Whether ``t`` is another agency's to fire: a handoff's answer, or not the managing
    agency's."""
    return t.answers_handoff or MANAGING_AGENCY not in t.agencies


def _ladder_problems(r: Report, spec: SopSpec, state: str, d: DeadlineSpec, user: str) -> None:
    ctx = f"deadline {d.name!r}: "
    if not d.escalation:
        r.add(d.where, f"{ctx[:-2]} has no escalation: say who is told when it passes", state=user)
    for previous, lv in zip(d.escalation, d.escalation[1:], strict=False):
        if lv.after < previous.after:
            r.add(
                lv.where.of("after"),
                f"{ctx}escalation level {lv.level} comes before level {previous.level}",
                state=user,
            )
    region = spec.states[state].handoff if state in spec.states else None
    parallel = region in spec.regions
    for lv in d.escalation:
        if lv.fire is None:
            continue
        if parallel:
            r.add(
                lv.where.of("fire"),
                f"{ctx}escalation fires {lv.fire!r} from parallel handoff {user!r}, beside a "
                "case that may be in any state: a parallel handoff's escalations only notify",
                state=user,
            )
            continue
        candidates = spec.transitions_for(state, lv.fire)
        if not candidates and lv.fire in spec.events:
            r.add(
                lv.where.of("fire"),
                f"{ctx}escalation fires {lv.fire!r}, which cannot fire from {user!r}",
                state=user,
            )
        foreign = next((t for t in candidates if _acts_for_another(t)), None)
        if foreign is not None:
            r.add(
                lv.where.of("fire"),
                f"{ctx}escalation fires {lv.fire!r}, which is for "
                f"{slot_names(foreign.agencies)} to fire; escalations act for the managing "
                "agency, never in another agency's place",
                state=user,
            )
        if any(_moves_case(t, spec) for t in candidates):
            r.add(
                lv.where.of("fire"),
                f"{ctx}escalation fires {lv.fire!r}, which would send the case to another "
                "agency by itself; escalations notify people, they never move a case",
                state=user,
            )


def _transfer_problems(
    r: Report, spec: SopSpec, tr: TransferSpec, fields: Mapping[str, str | None]
) -> None:
    """A transfer's consent covers its recipient and dataset; its ladder only notifies."""
    ctx = "transfer: "
    if spec.consent_scopes.get(tr.consent) is not None and tr.to in spec.agencies:
        as_transition = TransitionSpec(
            id="transfer", event="transfer", sources=(), target="", roles=(), consent=tr.consent
        )
        message = _consent_problem(spec, as_transition, Disclosure(tr.to, tr.dataset), fields)
        if message is not None:
            r.add(tr.where.of("consent"), f"{ctx}{message}")
    for previous, lv in zip(tr.escalation, tr.escalation[1:], strict=False):
        if lv.after < previous.after:
            r.add(
                lv.where.of("after"),
                f"{ctx}escalation level {lv.level} comes before level {previous.level}",
            )
    for lv in tr.escalation:
        if lv.fire is not None:
            r.add(
                lv.where.of("fire"),
                f"{ctx}escalation fires {lv.fire!r}, but a transfer's answer is the receiving "
                "agency's: its escalations notify people, they never act or move a case",
            )


def rule_problems(spec: SopSpec) -> list[Problem]:
    """The field's rules: escalation ladders, no automatic moves, consent before disclosure."""
    r = Report(spec)
    checked: set[tuple[str, int]] = set()
    for s in spec.states.values():
        user = user_state(spec, s.name)
        for d in s.deadlines.values():
            # A handoff's stages share one ladder: check it once, from the first stage.
            if d.escalation and (user, id(d.escalation)) in checked:
                continue
            checked.add((user, id(d.escalation)))
            _ladder_problems(r, spec, s.name, d, user)

    _health_first(r, spec)
    fields = disclosable_fields(spec)
    if spec.transfer is not None:
        _transfer_problems(r, spec, spec.transfer, fields)
    for t in spec.transitions:
        if t.discloses is None:
            continue
        message = _consent_problem(spec, t, t.discloses, fields)
        if message is not None:
            where = t.where.of("consent") if t.consent else t.where
            r.add(where, f"{what(t)}{message}", state=transition_state(spec, t))
    return r.problems


def header_problems(spec: SopSpec) -> list[Problem]:
    """Identity, dates, jurisdiction and time zone."""
    r = Report(spec)
    top = spec.where
    if spec.review <= spec.effective:
        r.add(
            top.of("review"),
            f"review date {spec.review} is not after effective date {spec.effective}",
        )
    j = spec.jurisdiction
    if j.countries and (j.origin or j.destination):
        r.add(
            top.of("jurisdiction"),
            "jurisdiction: give either countries or origin and destination, not both",
        )
    elif not j.countries and not (j.origin and j.destination):
        r.add(
            top.of("jurisdiction"), "jurisdiction: give countries, or both origin and destination"
        )
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
                r.add(
                    a.where.of("country"),
                    f"agency {a.name!r}: country {a.country!r} only "
                    "makes sense in a corridor SOP (origin and destination)",
                )
    return r.problems
