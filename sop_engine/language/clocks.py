"""Stage 5c: the case clocks (``clocks:``), checked and their ``stops_when`` compiled.

A clock belongs to the case, not to a state, so what it may name differs a little from a
state's deadline: it runs from the incident, the disclosure, the referral's creation or a
datetime fact (never from a state's entry, which a clock has none of); its reminders come
before its due time and its escalation after, in time order; an event its ladder fires must
be one the managing agency fires, that sends nothing to another agency, from whichever state
the case is in. ``stops_when`` is a CEL expression over the names a guard sees, compiled here
once per SOP version (:func:`compile_conditions`), keyed by :func:`condition_key` beside the
transitions' guards.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta

from sop_engine.errors import Problem
from sop_engine.language.acting import slot_names
from sop_engine.language.guards import CompiledGuard, GuardCompileError, compile_guard
from sop_engine.language.report import Report
from sop_engine.language.spec import (
    CLOCK_ANCHORS,
    MANAGING_AGENCY,
    ClockSpec,
    SopSpec,
    TransitionSpec,
)

__all__ = ["clock_problems", "compile_conditions", "condition_key"]


def condition_key(clock: str) -> str:
    """Where a clock's compiled ``stops_when`` is kept among the SOP's guards (transition
    names cannot hold a colon, so it never meets one)."""
    return f"clock:{clock}"


def compile_conditions(spec: SopSpec) -> tuple[dict[str, CompiledGuard], list[Problem]]:
    """Every clock's ``stops_when``, compiled, by :func:`condition_key`; and the problems."""
    r = Report(spec)
    out: dict[str, CompiledGuard] = {}
    for c in spec.clocks.values():
        if not c.stops_when:
            continue
        try:
            out[condition_key(c.name)] = compile_guard(
                c.stops_when, spec.facts, spec.consent_scopes
            )
        except GuardCompileError as exc:
            message = str(exc).replace("guard ", "stops_when ", 1)
            r.add(c.where.of("stops_when"), f"clock {c.name!r}: {message}", hint=exc.hint)
    return out, r.problems


def _moves_or_acts_for_another(spec: SopSpec, t: TransitionSpec) -> str | None:
    if t.answers_handoff or MANAGING_AGENCY not in t.agencies:
        return (
            f"which is for {slot_names(t.agencies)} to fire; escalations act for the managing "
            "agency, never in another agency's place"
        )
    target = spec.states.get(t.target)
    if t.discloses is not None or (target is not None and target.stage == "sent"):
        return (
            "which would send the case to another agency by itself; escalations notify "
            "people, they never move a case"
        )
    return None


class _Clocks:
    def __init__(self, spec: SopSpec, templates: Collection[str] | None) -> None:
        self.spec, self.templates, self.report = spec, templates, Report(spec)

    def ref(self, clock: ClockSpec, key: str, kind: str, name: str, known: Collection[str]) -> None:
        self.report.ref(clock.where.of(key), kind, name, known, context=f"clock {clock.name!r}: ")

    def anchor(self, c: ClockSpec) -> None:
        ctx, at = f"clock {c.name!r}: ", c.where.of("from")
        fact = self.spec.facts.get(c.anchor)
        if c.anchor == "entered":
            self.report.add(
                at,
                f"{ctx}a clock belongs to the case, not to a state, so it cannot run from "
                "'entered': give incident_at, disclosed_at, created_at or a datetime fact",
            )
        elif fact is not None and fact.type != "datetime":
            self.report.add(at, f"{ctx}runs from fact {c.anchor!r}, which is not a datetime")
        elif fact is None:
            known = [
                *CLOCK_ANCHORS,
                *(f.name for f in self.spec.facts.values() if f.type == "datetime"),
            ]
            self.ref(c, "from", "timestamp", c.anchor, known)

    def ladder(self, c: ClockSpec) -> None:
        spec, r, ctx = self.spec, self.report, f"clock {c.name!r}: "
        if not c.ladder:
            r.add(c.where, f"clock {c.name!r} has no reminders and no escalation: say who is told")
        for previous, lv in zip(c.ladder, c.ladder[1:], strict=False):
            if lv.after < previous.after:
                key = "before" if lv.after < timedelta(0) else "after"
                r.add(
                    lv.where.of(key),
                    f"{ctx}level {lv.level} comes before level {previous.level}: give reminders "
                    "and escalation levels in time order",
                )
        for lv in c.reminders:
            if -lv.after > c.after:
                r.add(
                    lv.where.of("before"),
                    f"{ctx}a reminder {_hours(-lv.after)} before the due time comes before the "
                    f"clock starts (it is due {_hours(c.after)} from {c.anchor})",
                )
        for lv in c.ladder:
            for role in lv.notify:
                self.report.ref(lv.where.of("notify"), "role", role, spec.roles, context=ctx)
            if self.templates is not None:
                self.report.ref(
                    lv.where.of("template"), "template", lv.template, self.templates, context=ctx
                )
            if lv.fire is None:
                continue
            if not self.report.ref(lv.where.of("fire"), "event", lv.fire, spec.events, context=ctx):
                continue
            for t in spec.transitions:
                why = _moves_or_acts_for_another(spec, t) if t.event == lv.fire else None
                if why is not None:
                    r.add(lv.where.of("fire"), f"{ctx}escalation fires {lv.fire!r}, {why}")
                    break

    def waive(self, c: ClockSpec) -> None:
        for role in c.waive_roles:
            if role not in self.spec.roles:
                self.ref(c, "waive", "role", role, self.spec.roles)


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:g}h"


def clock_problems(spec: SopSpec, templates: Collection[str] | None = None) -> list[Problem]:
    """Every fault of the SOP's clocks but their conditions (:func:`compile_conditions`)."""
    check = _Clocks(spec, templates)
    for c in spec.clocks.values():
        check.anchor(c)
        check.ladder(c)
        check.waive(c)
    return check.report.problems
