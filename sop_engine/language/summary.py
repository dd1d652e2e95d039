"""A one-page summary of a compiled SOP, in Markdown: its steps, deadlines, case clocks,
handoffs, case transfer, disclosures and sources, with its Mermaid diagram. ``sop-engine
docs`` writes one per SOP into ``docs/sops/``; a test keeps them in step with the SOP
files."""

from __future__ import annotations

from pathlib import Path

from sop_engine.language.diagram import format_duration, level_time, mermaid
from sop_engine.language.spec import MANAGING_AGENCY, DeadlineSpec, EscalationLevel, SopSpec

__all__ = ["summary"]


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _ladder(levels: tuple[EscalationLevel, ...]) -> str:
    parts = []
    for lv in levels:
        when = "at due" if not lv.after else f"+{format_duration(lv.after)}"
        fire = f", fires `{lv.fire}`" if lv.fire else ""
        parts.append(f"{when}: {', '.join(lv.notify)}{fire}")
    return "; ".join(parts)


def _deadline(d: DeadlineSpec) -> str:
    anchor = "" if d.anchor == "entered" else f" from `{d.anchor}`"
    return f"{format_duration(d.after)}{anchor}"


def _shown_file(file: str) -> str:
    """The SOP's file as it stands in the repository, whatever folder it was read from."""
    parts = Path(file).parts
    if "sop_definitions" in parts:
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("sop_definitions") :])
    return Path(file).name


def _header(spec: SopSpec) -> list[str]:
    j = spec.jurisdiction
    where = f"{j.origin} to {j.destination} (corridor)" if j.is_corridor else ", ".join(j.countries)
    if j.context != "development":
        where += f", {j.context} context"
    lines = [
        f"# {spec.title}",
        "",
        f"`{spec.ref}`"
        + (f", extends `{spec.extends}`" if spec.extends else "")
        + f". Generated from `{_shown_file(spec.file)}` by `sop-engine docs`; do not edit by hand.",
        "",
        "| | |",
        "|---|---|",
        f"| jurisdiction | {where} |",
        f"| effective | {spec.effective} |",
        f"| review by | {spec.review} |",
        f"| languages | {', '.join(spec.languages)} |",
    ]
    if spec.timezone:
        lines.append(f"| time zone | {spec.timezone} |")
    lines += ["", _cell(spec.description), ""] if spec.description else [""]
    return lines


def _steps(spec: SopSpec) -> list[str]:
    lines = ["## Steps and deadlines", "", "| state | what happens | tasks | deadlines |",
             "|---|---|---|---|"]  # fmt: skip
    for state in spec.states.values():
        if state.handoff:
            continue
        kind = " (start)" if state.initial else " (end)" if state.final else ""
        tasks = "<br>".join(f"{t.role}: {_cell(t.ask)}" for t in state.tasks.values())
        deadlines = "<br>".join(
            f"**{d.name}** {_deadline(d)}: {_cell(d.description)} — {_ladder(d.escalation)}"
            for d in state.deadlines.values()
        )
        lines.append(
            f"| `{state.name}`{kind} | {_cell(state.description)} | {tasks} | {deadlines} |"
        )
    return [*lines, ""]


def _clocks(spec: SopSpec) -> list[str]:
    if not spec.clocks:
        return []
    lines = [
        "## Case clocks (of the case, in every state and handoff)",
        "",
        "Each starts as soon as its time is known and stops for good once its condition holds; "
        "one that blocks closure keeps the case open until then, or until the managing agency "
        "waives it with a reason.",
        "",
        "| clock | runs | what | reminders and escalation | stops when | closure |",
        "|---|---|---|---|---|---|",
    ]
    for c in spec.clocks.values():
        ladder = "; ".join(
            f"{level_time(lv)}: {', '.join(lv.notify)}"
            + (f", fires `{lv.fire}`" if lv.fire else "")
            for lv in c.ladder
        )
        closure = (
            f"blocks it; waived by {', '.join(c.waive_roles)} ({', '.join(c.waive_reasons)})"
            if c.blocks_closure
            else "does not block it"
        )
        lines.append(
            f"| **{c.name}** | {format_duration(c.after)} from `{c.anchor}` "
            f"| {_cell(c.description)} | {ladder} | `{_cell(c.stops_when)}` | {closure} |"
        )
    return [*lines, ""]


def _handoffs(spec: SopSpec) -> list[str]:
    if not spec.handoffs:
        return []
    lines = [
        "## Handoffs (sent, acknowledged, accepted or declined, delivered; revoked by the sender)",
        "",
        "| handoff | sent by | to | consent | dataset | acknowledge within | escalation |",
        "|---|---|---|---|---|---|---|",
    ]
    for h in spec.handoffs.values():
        basis = f"`{h.consent}`" if h.consent else "override"
        times = format_duration(h.acknowledge_within)
        if h.respond_within:
            times += f"; answer within {format_duration(h.respond_within)}"
        if h.deliver_within:
            times += f"; deliver within {format_duration(h.deliver_within)}"
        for task, why in h.untimed.items():
            times += f"; {'answer' if task == 'respond' else task}: no deadline ({_cell(why)})"
        runs = (
            "; parallel: beside the case, which stays where it is"
            if h.parallel
            else f"; then the case moves to {h.delivered} (delivered), {h.declined} (declined), "
            f"{h.revoked} (revoked)"
        )
        times += runs
        lines.append(
            f"| `{h.name}` ({_cell(h.service)}) | {_acting((h.sender,))} | `{h.to}` | {basis} "
            f"| {', '.join(h.dataset)} "
            f"| {times} | {_ladder(h.escalation)} |"
        )
    return [*lines, ""]


def _transfer(spec: SopSpec) -> list[str]:
    tr = spec.transfer
    if tr is None:
        return ["## Case transfer", "", "This SOP does not allow transferring a case.", ""]
    scope = spec.consent_scopes[tr.consent]
    return [
        "## Case transfer (requested, then accepted or declined; cancelled by the requester)",
        "",
        f"The managing agency's {', '.join(tr.requester_roles)} may ask an agency fitting "
        f"`{tr.to}` to take over the case, under consent `{scope.name}` "
        f"({_cell(scope.purpose)}; {scope.country}); that agency's {tr.role} accepts (it then "
        f"manages the case) or declines ({', '.join(tr.decline_reasons)}) within "
        f"{format_duration(tr.respond_within)} ({_ladder(tr.escalation)}).",
        "",
        f"Disclosed with the request: {', '.join(tr.dataset)}.",
        "",
    ]


def _acting(slots: tuple[str, ...]) -> str:
    return ", ".join("managing agency" if a == MANAGING_AGENCY else f"`{a}`" for a in slots)


def _who_acts(spec: SopSpec) -> list[str]:
    lines = ["## Who acts", "",
             "Each event is fired only by the named roles at the named agencies; a handoff's "
             "answers belong to its receiving agency, its revoke to its sender.", "",
             "| event | from | roles | agencies |", "|---|---|---|---|"]  # fmt: skip
    for t in spec.transitions:
        if t.handoff is not None:
            continue
        froms = ", ".join(dict.fromkeys(spec.states[s].handoff or s for s in t.sources))
        lines.append(f"| `{t.event}` | {froms} | {', '.join(t.roles)} | {_acting(t.agencies)} |")
    return [*lines, ""]


def _disclosures(spec: SopSpec) -> list[str]:
    lines = ["## What is disclosed, to whom, on what basis", "",
             "| event | from | to agency | fields | basis |", "|---|---|---|---|---|"]  # fmt: skip
    seen = set()
    for t in spec.transitions:
        if t.discloses is None or t.id in seen:
            continue
        seen.add(t.id)
        if t.override is not None:
            basis = (
                f"**override** ({', '.join(t.override.reasons)}): written justification and "
                f"sign-off by a {t.override.sign_off}"
            )
        else:
            scope = spec.consent_scopes[t.consent or ""]
            basis = f"consent `{scope.name}` ({_cell(scope.purpose)}; {scope.country})"
        froms = ", ".join(dict.fromkeys(spec.states[s].handoff or s for s in t.sources))
        lines.append(
            f"| `{t.event}` | {froms} | `{t.discloses.to}` | {', '.join(t.discloses.fields)} "
            f"| {basis} |"
        )
    return [*lines, ""]


def _sources(spec: SopSpec) -> list[str]:
    if not spec.sources:
        return []
    lines = ["## Sources", ""]
    for s in spec.sources:
        title = f"[{s.title}]({s.url})" if s.url else s.title
        lines.append(f"- {title}" + (f": {_cell(s.note)}" if s.note else ""))
    return [*lines, ""]


def summary(spec: SopSpec) -> str:
    """The SOP's one-page summary, ending with its diagram."""
    lines = [
        *_header(spec),
        *_steps(spec),
        *_clocks(spec),
        *_handoffs(spec),
        *_transfer(spec),
        *_who_acts(spec),
        *_disclosures(spec),
        *_sources(spec),
        "## Diagram",
        "",
        "```mermaid",
        mermaid(spec).rstrip("\n"),
        "```",
        "",
    ]
    return "\n".join(lines)
