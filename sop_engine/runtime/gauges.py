"""What operators watch, read from the database at one moment: overdue timers and the age
of the oldest, escalations so far, the outbox by status, and every periodic flow's last
success. ``GET /metrics`` (:mod:`api.metrics`) shows them to Prometheus.

They come from the database, not from counters in a process, because the work happens in
flow runs that each live in a process of their own, on any worker: only the database has
seen all of it. Every figure is a count, an age or a time; none names a referral.

All of it is one read transaction of five index-backed queries: cheap enough to scrape
every 15 seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import Engine, func, select

from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction

__all__ = ["OUTBOX_STATUSES", "Gauges", "PeriodicFigures", "read_gauges"]

_TM = tables.timers
_O = tables.outbox
_PR = tables.periodic_runs
_TL = tables.timeline_entries

OUTBOX_STATUSES = ("pending", "sent", "dead")
"""Every status an outbox message can have; each is reported, zero when none has it."""
ESCALATION = "escalation"
"""The timeline entry a fired escalation writes (:mod:`sop_engine.runtime.deadlines`)."""


@dataclass(frozen=True, slots=True)
class PeriodicFigures:
    """One periodic flow's row: whether a run holds its lease now, its last success and the
    counts of that run by outcome (``escalated``: 3)."""

    lease_held: bool
    succeeded_at: datetime | None
    counts: MappingProxyType[str, int]


@dataclass(frozen=True, slots=True)
class Gauges:
    """The figures at ``at``."""

    at: datetime
    overdue_timers: int
    """Timers due and not fired: the sweep has not escalated them yet."""
    oldest_overdue_at: datetime | None
    """When the longest-waiting of them fell due; None when none is overdue."""
    escalations: int
    """Escalations fired since the database began (timeline entries: never deleted)."""
    outbox: MappingProxyType[str, int]
    """Messages by status: pending, sent, dead."""
    oldest_pending_at: datetime | None
    """When the longest-waiting pending message was written; None when none is pending."""
    periodic: MappingProxyType[str, PeriodicFigures] = field(
        default_factory=lambda: MappingProxyType({})
    )
    """By flow name (``escalation-sweep``, ``outbox-dispatch``, ...)."""

    def oldest_overdue_seconds(self) -> float:
        """How long the oldest overdue timer has waited; 0 when none waits."""
        return _age(self.at, self.oldest_overdue_at)

    def oldest_pending_seconds(self) -> float:
        """How long the oldest pending message has waited; 0 when none waits."""
        return _age(self.at, self.oldest_pending_at)


def read_gauges(db: Engine, now: datetime) -> Gauges:
    """The figures as the database holds them at ``now``, in one read transaction."""
    due = (_TM.c.fired_at.is_(None), _TM.c.due_at <= now)
    with read_transaction(db) as conn:
        overdue, oldest = conn.execute(
            select(func.count(), func.min(_TM.c.due_at)).where(*due)
        ).one()
        escalations = conn.scalar(select(func.count()).where(_TL.c.kind == ESCALATION)) or 0
        by_status: dict[str, int] = dict.fromkeys(OUTBOX_STATUSES, 0)
        for status, count in conn.execute(select(_O.c.status, func.count()).group_by(_O.c.status)):
            by_status[status] = count
        oldest_pending = conn.scalar(
            select(func.min(_O.c.created_at)).where(_O.c.status == "pending")
        )
        runs = conn.execute(
            select(_PR.c.name, _PR.c.lease_until, _PR.c.succeeded_at, _PR.c.counts)
        ).all()
    periodic = {
        r.name: PeriodicFigures(
            lease_held=r.lease_until is not None and r.lease_until > now,
            succeeded_at=r.succeeded_at,
            counts=MappingProxyType(_counts(r.counts)),
        )
        for r in runs
    }
    return Gauges(
        at=now,
        overdue_timers=int(overdue or 0),
        oldest_overdue_at=oldest,
        escalations=int(escalations),
        outbox=MappingProxyType(by_status),
        oldest_pending_at=oldest_pending,
        periodic=MappingProxyType(periodic),
    )


def _counts(stored: Any) -> dict[str, int]:
    """The integer counts of a run (anything else in the column is not a figure)."""
    if not isinstance(stored, dict):
        return {}
    return {str(k): v for k, v in stored.items() if isinstance(v, int) and not isinstance(v, bool)}


def _age(now: datetime, since: datetime | None) -> float:
    return max((now - since).total_seconds(), 0.0) if since is not None else 0.0
