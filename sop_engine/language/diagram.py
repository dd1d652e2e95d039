"""Draw a compiled SOP as a Mermaid ``stateDiagram-v2``.

Handoffs appear as composite states holding their stages; each transition is labelled with
its event and, where it discloses data, with the consent scope (or ⚠ override) it needs;
deadlines and their escalation ladders appear as notes on their states, and the case clocks
(which run in every state) as one note left of the initial state. The output is
deterministic, so that a diagram checked into ``docs/`` can be compared with a fresh one.
"""

from __future__ import annotations

import re
from datetime import timedelta

from sop_engine.language.spec import (
    ENDED_STAGES,
    ClockSpec,
    DeadlineSpec,
    EscalationLevel,
    SopSpec,
    StateSpec,
    TransitionSpec,
)

__all__ = ["format_duration", "level_time", "mermaid"]

_UNSAFE = re.compile(r'[":;#{}<>\[\]]')
_ENTITIES = {
    '"': "#quot;",
    ":": "#58;",
    ";": "#59;",
    "#": "#35;",
    "{": "#123;",
    "}": "#125;",
    "<": "#lt;",
    ">": "#gt;",
    "[": "#91;",
    "]": "#93;",
}


def _text(value: str) -> str:
    return _UNSAFE.sub(lambda m: _ENTITIES[m.group(0)], value)


def _id(state: str) -> str:
    return state.replace(".", "__")


def format_duration(value: timedelta) -> str:
    """``value`` as a coordinator would write it: hours under a week (``72h``, as clinical
    windows are stated), then days or weeks (``10d``, ``2w``); minutes when not whole."""
    minutes = int(value.total_seconds() // 60)
    hour, day, week = 60, 24 * 60, 7 * 24 * 60
    if minutes and minutes % week == 0:
        return f"{minutes // week}w"
    if minutes >= week and minutes % day == 0:
        return f"{minutes // day}d"
    if minutes and minutes % hour == 0:
        return f"{minutes // hour}h"
    return f"{minutes}m"


def _label(t: TransitionSpec) -> str:
    parts = [t.event.split(".")[-1] if t.handoff else t.event]
    if t.guard:
        parts.append(f"[{t.guard}]")
    if t.override is not None:
        parts.append(
            f"⚠ override ({', '.join(t.override.reasons)}; sign-off {t.override.sign_off})"
        )
    elif t.consent:
        parts.append(f"consent {t.consent}")
    return _text(" ".join(parts))


def _deadline_lines(d: DeadlineSpec) -> list[str]:
    anchor = "" if d.anchor == "entered" else f" from {d.anchor}"
    lines = [f"⏱ {d.name} {format_duration(d.after)}{anchor}"]
    for lv in d.escalation:
        fire = f", fires {lv.fire}" if lv.fire else ""
        when = f"+{format_duration(lv.after)}" if lv.after else "at due"
        lines.append(f"  L{lv.level} {when} → {', '.join(lv.notify)}{fire}")
    return lines


def _note(state: StateSpec, indent: str) -> list[str]:
    if not state.deadlines:
        return []
    body = [line for d in state.deadlines.values() for line in _deadline_lines(d)]
    return [
        f"{indent}note right of {_id(state.name)}",
        *(f"{indent}    {_text(line)}" for line in body),
        f"{indent}end note",
    ]


def level_time(lv: EscalationLevel) -> str:
    """When a level comes, from its clock's or deadline's due time: ``24h before``, ``at
    due``, ``+6h``."""
    if lv.after < timedelta(0):
        return f"{format_duration(-lv.after)} before"
    return f"+{format_duration(lv.after)}" if lv.after else "at due"


def _clock_lines(c: ClockSpec) -> list[str]:
    closing = ", blocks closure" if c.blocks_closure else ""
    lines = [f"⏲ {c.name} {format_duration(c.after)} from {c.anchor}{closing}"]
    for lv in c.ladder:
        fire = f", fires {lv.fire}" if lv.fire else ""
        lines.append(f"  L{lv.level} {level_time(lv)} → {', '.join(lv.notify)}{fire}")
    lines.append(f"  stops when {c.stops_when}")
    return lines


def _clock_note(spec: SopSpec, indent: str) -> list[str]:
    if not spec.clocks:
        return []
    body = ["case clocks, in every state"]
    body += [line for c in spec.clocks.values() for line in _clock_lines(c)]
    return [
        f"{indent}note left of {_id(spec.initial_state)}",
        *(f"{indent}    {_text(line)}" for line in body),
        f"{indent}end note",
    ]


def mermaid(spec: SopSpec) -> str:
    """The SOP as Mermaid text, ending with a newline."""
    out = ["---", f"title: {_text(spec.title)} ({spec.ref})", "---", "stateDiagram-v2"]
    handoff_states: dict[str, list[StateSpec]] = {}
    for state in spec.states.values():
        if state.handoff:
            handoff_states.setdefault(state.handoff, []).append(state)
            continue
        label = state.name + (f" — {state.description}" if state.description else "")
        out.append(f"    {_id(state.name)}: {_text(label)}")
    for name, stages in handoff_states.items():
        h = spec.handoffs[name]
        basis = f"consent {h.consent}" if h.consent else "⚠ override"
        kind = "parallel handoff, beside the case," if h.parallel else "handoff"
        title = f"{name} — {kind} to {h.to} ({basis})"
        out.append(f'    state "{_text(title)}" as {_id(name)} {{')
        out.extend(f"        {_id(stage.name)}: {stage.stage}" for stage in stages)
        if h.parallel:  # where it ends; the case stays where it was
            out.extend(f"        {_id(f'{name}.{end}')}: {end} (ends)" for end in ENDED_STAGES)
        out.append("    }")
    for state in spec.states.values():
        out.extend(_note(state, "    "))
    out.extend(_clock_note(spec, "    "))
    out.append(f"    [*] --> {_id(spec.initial_state)}")
    for t in spec.transitions:
        for source in t.sources:
            out.append(f"    {_id(source)} --> {_id(t.target)}: {_label(t)}")
    for final in spec.final_states:
        out.append(f"    {_id(final)} --> [*]")
    return "\n".join(out) + "\n"
