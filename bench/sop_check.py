"""The cost of checking the largest SOPs the language accepts.

Every bound of :mod:`sop_engine.language.limits` exists so that no document it lets through
costs more than 2 s of CPU to check (``POST /sops`` and ``/sops/validate`` check an upload
on the request's thread). Each shape here is a document at the bounds, written the way an
upload could stress one stage: a valid SOP with as many states, transitions, handoffs,
deadlines and guards as allowed; as many unknown keys, unknown names, or schema faults for
the salvage to prune as allowed; a chain of ``extends`` as long as allowed. Each is checked
as an upload is (:func:`sop_engine.publishing.check_upload`, against the shipped library and
the chain's SOPs); the figure is the CPU time of the costliest, the baseline that of the
largest shipped SOP (a corridor with the Mekong baseline it extends).

``tests/language/test_limits.py`` checks that every shape is accepted by the bounds and sits
at them; the time is only measured here.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from sqlalchemy import Engine

from sop_engine.errors import DefinitionError
from sop_engine.language.limits import (
    MAX_ENTRIES,
    MAX_EXTENDS,
    MAX_GUARD_CHARS,
    MAX_STATES,
    MAX_TRANSITIONS,
    MAX_VALUES,
    count_values,
)
from sop_engine.language.published import PUBLISHED, PublishedSources, sha256_text
from sop_engine.language.source import parse_source
from sop_engine.persistence import tables
from sop_engine.persistence.db import make_engine
from sop_engine.persistence.migrate import upgrade
from sop_engine.publishing import check_upload

__all__ = ["SHAPES", "SopCheck", "SopCheckPlan", "measure_sop_check", "shape_texts"]

LIBRARY = Path(__file__).resolve().parents[1] / "sop_definitions"
BASELINE_FILE = LIBRARY / "mekong" / "corridor.th-la.sop.yaml"
PARENT = "example.baseline@1"
"""The shipped SOP the shapes extend."""

_HEAD = f"""\
key: bench.limits
version: 1
extends: {PARENT}
title: An SOP at the language's bounds
"""


def _fill(make: Callable[[int], str], parent_values: int) -> str:
    """``make(n)`` for the largest ``n`` whose document, with what it extends, holds at most
    :data:`MAX_VALUES` values. The shapes grow about linearly in ``n``: a guess from two
    sizes, then bisection around it (a handful of parses)."""
    room = MAX_VALUES - parent_values

    def fits(n: int) -> bool:
        return _values(make(n)) <= room

    small, large = 10, 50
    slope = max(1.0, (_values(make(large)) - _values(make(small))) / (large - small))
    n = max(1, small + int((room - _values(make(small))) / slope))
    step = max(1, n // 50)
    while n > 1 and not fits(n):
        n = max(1, n - step)
    while fits(n + step):
        n += step
    low, high = n, n + step - 1  # fits(low); not fits(high + 1)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return make(low)


def _values(text: str) -> int:
    try:
        return count_values(parse_source(text).data)
    except DefinitionError:
        return MAX_VALUES + 1


def _plain(index: int, states: int) -> int:
    """The first state from ``index`` on (wrapping round) that is no handoff: a handoff's
    answer that entered another handoff would be sent by its receiver."""
    for k in range(index, index + 4):
        if (k % states) % 4 != 1:
            return k % states
    return 0


def _graph(n: int, *, prefix: str = "", states: int = MAX_STATES - 10) -> str:
    """Valid: up to ``states`` states with deadlines and handoffs, ``n`` transitions from
    several states each, with guards as long as allowed; every state is entered by one."""
    transitions = min(n, MAX_TRANSITIONS - 1)
    states = max(1, min(states, transitions))
    names = [f"{prefix}s{i}" for i in range(states)]
    lines = [_HEAD, "states:"]
    for i, name in enumerate(names):
        lines.append(f"  {name}:")
        lines.append(f"    description: State {i} of a long procedure")
        if i % 4 == 1:
            lines += [
                "    handoff:",
                "      to: health_provider",
                "      role: agency_focal_point",
                "      sender_roles: [caseworker]",
                "      consent: health_referral",
                "      dataset: [case_code, service_needed, risk_level]",
                "      acknowledge_within: 1h",
                "      respond_within: 3h",
                "      deliver_within: 1d",
                "      decline_reasons: [no_capacity, service_not_offered]",
                "      escalation:",
                "        - {after: 0h, notify: [agency_focal_point], template: deadline_reminder}",
                f"      delivered: {names[_plain(i + 1, states)]}",
                f"      declined: {names[_plain(i + 2, states)]}",
                f"      revoked: {names[_plain(i + 3, states)]}",
            ]
        else:
            lines += [
                "    deadlines:",
                f"      d{i}:",
                "        after: 3h",
                "        escalation:",
                "          - {after: 0h, notify: [caseworker], template: deadline_reminder}",
                "          - {after: 1h, notify: [supervisor], template: deadline_escalated}",
            ]
    clause = "(risk_level == 'high' && survivor_age > 17)"
    guard = " || ".join([clause] * (MAX_GUARD_CHARS // (len(clause) + 4)))
    lines += [
        "transitions:",
        f"  {prefix}close_any:",
        f"    from: [{', '.join(names)}]",
        "    to: closed",
        "    roles: [supervisor]",
    ]
    reach = min(4, states)
    for t in range(transitions):
        sources = ", ".join(names[(t + k) % states] for k in range(reach))
        lines += [
            f"  {prefix}t{t}:",
            f"    from: [intake, {sources}]",
            f"    to: {names[t % states]}",
            "    roles: [caseworker, supervisor]",
            f"    guard: {guard}",
            "    sets: [risk_level, survivor_age]",
        ]
    return "\n".join(lines) + "\n"


def _unknown_keys(n: int) -> str:
    """``n`` unknown keys, at the top level and in states, as many in each as allowed: a
    fault and a "did you mean" each."""
    per = MAX_ENTRIES - 20
    lines = [_HEAD, *(f"titel{i}: x" for i in range(min(n, per))), "states:"]
    for s, start in enumerate(range(per, n, per)):
        lines.append(f"  st{s}:")
        lines += [f"    descriptoin{i}: x" for i in range(min(per, n - start))]
    return "\n".join(lines) + "\n"


def _unknown_names(n: int) -> str:
    """``n`` transitions naming states, roles and facts that do not exist, among as many
    states as allowed: each a reference problem with a "did you mean" over every name of
    its kind."""
    states = MAX_STATES - 10
    lines = [_HEAD, "states:"]
    lines += [f"  state_number_{i}: {{description: x}}" for i in range(states)]
    lines.append("transitions:")
    for t in range(min(n, MAX_TRANSITIONS - 10)):
        sources = ", ".join(f"state_numbr_{(t + k) % states}" for k in range(12))
        lines += [
            f"  t{t}:",
            f"    from: [{sources}]",
            f"    to: state_nmber_{t % states}",
            f"    roles: [casewrker{t}, supervsor{t}]",
            f"    sets: [risk_levl{t}, survivor_ag{t}]",
        ]
    return "\n".join(lines) + "\n"


def _faults(n: int) -> str:
    """A schema fault in every state and in ``n`` transitions, for the salvage to prune,
    round after round (a pruned field leaves its object incomplete)."""
    states = MAX_STATES - 10
    lines = [_HEAD, "states:"]
    for i in range(states):
        lines += [
            f"  s{i}:",
            "    deadlines:",
            "      late: {after: soon, escalation: [{after: 0h, notify: nobody}]}",
            f"    requires: {i}",
        ]
    lines.append("transitions:")
    for t in range(min(n, MAX_TRANSITIONS - 10)):
        sources = ", ".join(f"s{(t + k) % states}" for k in range(10))
        lines += [
            f"  t{t}:",
            f"    from: [{sources}]",
            "    to: [not, a, state]",
            "    roles: caseworker",
            "    guard: 12",
        ]
    return "\n".join(lines) + "\n"


SHAPES: Mapping[str, Callable[[int], str]] = {
    "graph": _graph,
    "unknown_keys": _unknown_keys,
    "unknown_names": _unknown_names,
    "faults": _faults,
}
"""Each shape as a function of how many values to spend."""


def _chain(parent_values: int) -> list[str]:
    """SOPs extending the shipped :data:`PARENT` and each the one before, adding states and
    transitions of their own, and the upload that extends the last: :data:`MAX_EXTENDS` SOPs
    above the upload, and the whole chain at the bounds once merged."""
    levels = MAX_EXTENDS
    own = (MAX_VALUES - parent_values) // levels
    texts: list[str] = []
    parent = PARENT
    for level in range(levels):
        key, before = f"bench.chain{level}", parent

        def make(n: int, key: str = key, before: str = before, level: int = level) -> str:
            text = _graph(n, prefix=f"l{level}", states=MAX_STATES // levels - 2)
            return text.replace("key: bench.limits", f"key: {key}").replace(
                f"extends: {PARENT}", f"extends: {before}"
            )

        texts.append(_fill(make, MAX_VALUES - own))
        parent = f"{key}@1"
    return texts


def shape_texts(parent_values: int) -> Iterator[tuple[str, str]]:
    """``(name, YAML text)`` for every shape, filled up to the bounds."""
    for name, make in SHAPES.items():
        yield name, _fill(make, parent_values)


@dataclass(frozen=True)
class SopCheckPlan:
    repetitions: int = 3
    """Each document is checked this many times; the fastest run counts (the others met a
    busy machine)."""


@dataclass(frozen=True)
class SopCheck:
    worst: float
    """CPU seconds of the costliest shape."""
    baseline: float
    """CPU seconds of the largest shipped SOP."""
    shapes: dict[str, float]
    values: dict[str, int]

    @property
    def ratio(self) -> float:
        return self.baseline / self.worst


def _cpu(check: Callable[[], object], repetitions: int) -> float:
    runs = []
    for _ in range(repetitions):
        began = time.process_time()
        with contextlib.suppress(DefinitionError):
            check()
        runs.append(time.process_time() - began)
    return min(runs)


def _publish(db: Engine, texts: list[str]) -> None:
    """Store ``texts`` as published uploads, as four-eyes publishing leaves them."""
    now = datetime.now(UTC)
    rows = []
    for text in texts:
        data = parse_source(text).data
        rows.append(
            {
                "key": data["key"],
                "version": data["version"],
                "title": data["title"],
                "source": text,
                "sha256": sha256_text(text),
                "status": PUBLISHED,
                "uploaded_by": "bench-a",
                "uploaded_at": now,
                "published_by": "bench-b",
                "published_at": now,
            }
        )
    with db.begin() as conn:
        conn.execute(tables.sop_sources.insert(), rows)


def measure_sop_check(plan: SopCheckPlan) -> SopCheck:
    with tempfile.TemporaryDirectory(prefix="sop-engine-bench-") as folder:
        db = make_engine(f"sqlite:///{folder}/check.sqlite3")
        try:
            upgrade(db)
            return _measure(db, plan)
        finally:
            db.dispose()


def _measure(db: Engine, plan: SopCheckPlan) -> SopCheck:
    sources = PublishedSources(db, [LIBRARY])
    parent_values = count_values(sources.file_documents()[PARENT].data)
    baseline_text = BASELINE_FILE.read_text(encoding="utf-8")
    baseline = _cpu(lambda: check_upload(baseline_text, sources), plan.repetitions)
    shapes: dict[str, float] = {}
    values: dict[str, int] = {}
    for name, text in shape_texts(parent_values):
        values[name] = _values(text) + parent_values
        shapes[name] = _cpu(partial(check_upload, text, sources), plan.repetitions)
    *published, last = _chain(parent_values)
    _publish(db, published)
    shapes["extends_chain"] = _cpu(lambda: check_upload(last, sources), plan.repetitions)
    values["extends_chain"] = parent_values + sum(_values(t) for t in (*published, last))
    return SopCheck(max(shapes.values()), baseline, shapes, values)
