"""Deadline compliance: how many tasks were done in time, per SOP version, agency or country.

The measure is the agencies' tasks (the ``tasks`` table). A state's tasks open when a
referral enters it, each due at the state's deadline of the same name, else at the state's
earliest deadline; they close when the referral leaves the state. Counted as of ``now``
(the runtime's clock), for each group:

- **met**: done (``status = done``) at or before ``due_at``;
- **missed**: done after ``due_at``, or still open past it; **overdue** is the part of
  missed still open;
- **pending**: open and not yet due (``due_at >= now``);
- **cancelled**: closed by a revoked or declined handoff, or by a withdrawal: no longer
  asked of anyone, so neither met nor missed;
- **untimed**: no ``due_at`` (the state has no deadline, or its deadline's timestamp was
  unknown), neither met nor missed;
- **escalations**: timeline entries of kind ``escalation`` (a deadline's escalation level
  fired, :mod:`sop_engine.runtime.deadlines`). By SOP and by the referral's countries, every
  such entry of the group's referrals; by agency and by agency country, each entry counts
  once for every group having a task open in the escalated state when it fired (a state with
  tasks at two agencies escalates both, so these groups may add up to more than the total);
- **rate** = met / (met + missed), none when both are 0.

``since`` and ``until`` keep tasks due in ``[since, until)`` and escalations fired in it, so
untimed tasks drop out of a report with either bound.

Groups (``group_by``):

- ``sop``: ``key@version``, since versions change deadlines;
- ``agency``: the agency the task was assigned to;
- ``country``: the country where that agency works, as the SOP declares it for the task's
  agency slot (``country: origin``, ``destination`` or a country code, resolved against the
  referral). Without a declaration (``any``, or a task outside the SOP's slots such as a
  withdrawal acknowledgement), the country is known only when the referral stays in one
  country, and is none (unknown) otherwise: the engine keeps no country per agency;
- ``origin_country``, ``destination_country``: the referral's.

One SQL statement per measure does the counting, on SQLite as on PostgreSQL, both in one
read-only transaction (one snapshot); tasks and escalations are then merged by group. By
country, the statements count per SOP version, agency slot and pair of countries, and each
such group is given its country here from the SOP library's slot declarations (listed
before the read: the library may look in the database for versions published meanwhile),
rather than by a CASE over every slot of every SOP evaluated for each task.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    func,
    or_,
    select,
)

from sop_engine.errors import InvalidInput
from sop_engine.language.compiler import CompiledSop
from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction
from sop_engine.runtime.services import Services

__all__ = ["ESCALATION_KIND", "GROUPINGS", "ComplianceReport", "ComplianceRow", "compliance"]

_R = tables.referrals
_TK = tables.tasks
_T = tables.timeline_entries

ESCALATION_KIND = "escalation"
"""The timeline kind of a fired escalation level (with or without the event it fires)."""

GROUPINGS = ("sop", "agency", "country", "origin_country", "destination_country")

_COUNTS = ("met", "missed", "overdue", "pending", "cancelled", "untimed")


@dataclass(frozen=True, slots=True)
class ComplianceRow:
    group: str | None
    """``key@version``, an agency id or a country code; None when not known (see above)."""
    met: int = 0
    missed: int = 0
    overdue: int = 0
    pending: int = 0
    cancelled: int = 0
    untimed: int = 0
    escalations: int = 0

    @property
    def rate(self) -> float | None:
        decided = self.met + self.missed
        return self.met / decided if decided else None


@dataclass(frozen=True, slots=True)
class ComplianceReport:
    group_by: str
    as_of: datetime
    since: datetime | None
    until: datetime | None
    sop: str | None
    rows: list[ComplianceRow]


def compliance(
    services: Services,
    group_by: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    sop: str | None = None,
) -> ComplianceReport:
    """Deadline compliance as of the runtime clock's now (see the module docstring).

    ``sop`` keeps one SOP's referrals (every version; ``group_by="sop"`` splits them).
    """
    if group_by not in GROUPINGS:
        raise InvalidInput(f"group_by must be one of {', '.join(GROUPINGS)}", field="group_by")
    now = services.clock.now()
    declared = _declared_countries(services.library) if group_by == "country" else {}
    window: dict[str, Any] = {"since": since, "until": until, "sop": sop}
    task_counts = _task_counts(group_by, now, **window)
    escalations = _escalations(group_by, **window)
    with read_transaction(services.db) as conn:
        task_rows = conn.execute(task_counts).all()
        escalation_rows = conn.execute(escalations).all()
    merged: dict[str | None, Counter[str]] = defaultdict(Counter)
    for r in task_rows:
        counts = merged[_label(group_by, r, declared)]
        for name in _COUNTS:
            counts[name] += int(getattr(r, name) or 0)
    if group_by == "country":  # an entry counts once per country, whatever its slots there
        entries: dict[str | None, set[Any]] = defaultdict(set)
        for r in escalation_rows:
            entries[_label(group_by, r, declared)].add(r.entry_id)
        for label, ids in entries.items():
            merged[label]["escalations"] = len(ids)
    else:
        for r in escalation_rows:
            merged[_label(group_by, r, declared)]["escalations"] += int(r.escalations)
    rows = [ComplianceRow(group, **counts) for group, counts in merged.items()]
    rows.sort(key=lambda row: (row.group is None, row.group or ""))
    return ComplianceReport(group_by, now, since, until, sop, rows)


_Declared = Mapping[tuple[str, int], Mapping[str, str]]
"""(SOP key, version) -> agency slot -> its declared country: ``origin``, ``destination``,
a country code, or ``any``."""


def _declared_countries(library: Iterable[CompiledSop]) -> _Declared:
    return {
        (sop.key, sop.version): {slot.name: slot.country for slot in sop.spec.agencies.values()}
        for sop in library
    }


def _group_columns(group_by: str) -> list[ColumnElement[Any]]:
    """The columns naming a task's group, labelled ``g0``, ``g1``...: by country, those its
    country follows from (:func:`_country`)."""
    columns: list[ColumnElement[Any]]
    if group_by == "sop":
        columns = [_R.c.sop_key, _R.c.sop_version]
    elif group_by == "agency":
        columns = [_TK.c.agency_id]
    elif group_by == "country":
        columns = [
            _R.c.sop_key,
            _R.c.sop_version,
            _TK.c.agency_slot,
            _R.c.origin_country,
            _R.c.destination_country,
        ]
    else:
        columns = [_R.c[group_by]]
    return [c.label(f"g{i}") for i, c in enumerate(columns)]


def _country(row: Any, declared: _Declared) -> str | None:
    """The country of a task's agency, from its SOP's declaration of the task's agency slot;
    without one, the referral's country when it stays in one, else unknown."""
    slot_country = declared.get((row.g0, row.g1), {}).get(row.g2 or "", "any")
    if slot_country == "origin":
        return str(row.g3)
    if slot_country == "destination":
        return str(row.g4)
    if slot_country != "any":
        return slot_country
    return str(row.g3) if row.g3 == row.g4 else None


def _sop_filter(sop: str | None) -> list[ColumnElement[bool]]:
    return [_R.c.sop_key == sop] if sop is not None else []


def _task_counts(
    group_by: str,
    now: datetime,
    *,
    since: datetime | None,
    until: datetime | None,
    sop: str | None,
) -> Select[Any]:
    status, due, closed = _TK.c.status, _TK.c.due_at, _TK.c.closed_at
    timed = and_(due.is_not(None), status != "cancelled")
    flags: dict[str, ColumnElement[bool]] = {
        "met": and_(timed, status == "done", closed <= due),
        "missed": and_(
            timed, or_(and_(status == "done", closed > due), and_(status == "open", due < now))
        ),
        "overdue": and_(timed, status == "open", due < now),
        "pending": and_(timed, status == "open", due >= now),
        "cancelled": status == "cancelled",
        "untimed": and_(due.is_(None), status != "cancelled"),
    }
    where = _sop_filter(sop)
    if since is not None:
        where.append(due >= since)
    if until is not None:
        where.append(due < until)
    # The referral is joined only when the group or the filter needs it.
    source = (
        _TK if group_by == "agency" and sop is None else _TK.join(_R, _R.c.id == _TK.c.referral_id)
    )
    keys = _group_columns(group_by)
    sums = (func.sum(case((flag, 1), else_=0)).label(name) for name, flag in flags.items())
    return select(*keys, *sums).select_from(source).where(*where).group_by(*keys)


def _escalations(
    group_by: str,
    *,
    since: datetime | None,
    until: datetime | None,
    sop: str | None,
) -> Select[Any]:
    """Escalation counts by group; by country, the distinct (entry, group) pairs, counted
    once their groups are given their countries."""
    where = [_T.c.kind == ESCALATION_KIND, *_sop_filter(sop)]
    if since is not None:
        where.append(_T.c.at >= since)
    if until is not None:
        where.append(_T.c.at < until)
    source = _T.join(_R, _R.c.id == _T.c.referral_id)
    if group_by in ("agency", "country"):
        # The tasks open in the escalated state when the level fired: an escalation that
        # fires an event closes them at that same instant.
        source = source.join(
            _TK,
            and_(
                _TK.c.referral_id == _T.c.referral_id,
                _TK.c.state == _T.c.from_state,
                _TK.c.created_at <= _T.c.at,
                or_(_TK.c.closed_at.is_(None), _TK.c.closed_at >= _T.c.at),
            ),
        )
    keys = _group_columns(group_by)
    if group_by == "country":
        return select(*keys, _T.c.id.label("entry_id")).select_from(source).where(*where).distinct()
    counted = func.count(_T.c.id.distinct()).label("escalations")
    return select(*keys, counted).select_from(source).where(*where).group_by(*keys)


def _label(group_by: str, row: Any, declared: _Declared) -> str | None:
    if group_by == "sop":
        return f"{row.g0}@{row.g1}"
    if group_by == "country":
        return _country(row, declared)
    return None if row.g0 is None else str(row.g0)
