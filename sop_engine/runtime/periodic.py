"""Periodic runs (the escalation sweep, the outbox dispatch, the timeline verification): one
at a time per flow, by a lease in the database, and the time of each flow's last success.

Why not Prefect's deployment concurrency limit: its one slot is held by a run until Prefect
hears that the run ended, so a killed run kept it for minutes, and after a restart of the
Prefect server (which keeps those leases in memory) nothing ran at all. Here a run that dies
simply stops renewing its lease, and the next run takes it once it has run out: a lease is
short (``SOP_ENGINE_TIMER_LEASE_SECONDS``) and renewed by its holder after every batch.

Correctness does not rest on it: every step a run takes claims its rows in the database
(timers, messages), so two runs at once would still fire each escalation once. The lease
only keeps runs from piling up: a run that finds it held by a live run, or finds that a run
which began after its own scheduled time has succeeded (it is a late run, proposed again
after an outage, whose work is done), ends at once and does nothing.

:func:`begin` returns the :class:`Lease`, or why the run has nothing to do;
:meth:`Lease.renew` extends it (False: it was lost, stop); :meth:`Lease.finish` records the
success and frees it; :meth:`Lease.release` frees it after a failure; :func:`last_success`
is what readiness reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, or_, select, update
from sqlalchemy.exc import IntegrityError

from sop_engine.clock import Clock
from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction

__all__ = ["HELD", "SUPERSEDED", "Lease", "Refusal", "begin", "last_success", "status"]

_PR = tables.periodic_runs

HELD = "held"
"""A live run holds the lease."""
SUPERSEDED = "superseded"
"""A run that began after this run's scheduled time succeeded: its work is done."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a run has nothing to do: ``reason`` is :data:`HELD` or :data:`SUPERSEDED`."""

    reason: str
    holder_run_id: str | None = None


@dataclass(slots=True)
class Lease:
    """A run's lease on its flow, until ``until``. ``previous_run_id`` is the run whose
    lease ran out before this one took it (it died, or was stopped, mid-run), if any."""

    db: Engine
    clock: Clock
    name: str
    holder: str
    length: timedelta
    until: datetime
    previous_run_id: str | None = None

    def renew(self) -> bool:
        """Extend the lease by its length from now; False when it was lost (it ran out and
        another run took it): the caller stops."""
        until = self.clock.now() + self.length
        changed = self._update_if_ours(lease_until=until)
        if changed:
            self.until = until
        return changed

    def due_for_renewal(self) -> bool:
        """Half of the lease is gone."""
        return self.clock.now() >= self.until - self.length / 2

    def release(self) -> None:
        """Free the lease without recording a success (the run failed): the next run need
        not wait for it to run out."""
        self._update_if_ours(lease_until=None, holder=None)

    def finish(self, counts: dict[str, int]) -> bool:
        """Record the success (now, with its counts) and free the lease; False when it was
        lost meanwhile (the work done still stands: every step of it was claimed)."""
        return self._update_if_ours(
            lease_until=None,
            holder=None,
            succeeded_at=self.clock.now(),
            success_began_at=_PR.c.started_at,
            counts=dict(counts),
        )

    def _update_if_ours(self, **values: Any) -> bool:
        """Write ``values`` on the lease's row while it is still this lease (its holder, its
        end); False when it is not."""
        with self.db.begin() as conn:
            changed = conn.execute(
                update(_PR)
                .where(_PR.c.name == self.name, _PR.c.holder == self.holder)
                .where(_PR.c.lease_until == self.until)
                .values(**values)
            ).rowcount
        return bool(changed)


def begin(
    db: Engine,
    clock: Clock,
    name: str,
    *,
    holder: str,
    length: timedelta,
    run_id: str | None = None,
    scheduled_at: datetime | None = None,
) -> Lease | Refusal:
    """Take ``name``'s lease for ``holder`` (a run that was scheduled at ``scheduled_at``),
    or say why not: another run holds it and is alive (its lease has not run out), or a run
    that began at or after ``scheduled_at`` has succeeded."""
    now = clock.now()
    until = now + length
    _ensure_row(db, name)
    with db.begin() as conn:
        row = conn.execute(select(_PR).where(_PR.c.name == name).with_for_update()).one()
        if row.lease_until is not None and row.lease_until > now and row.holder != holder:
            return Refusal(HELD, row.run_id)
        began = row.success_began_at
        if scheduled_at is not None and began is not None and began >= scheduled_at:
            return Refusal(SUPERSEDED)
        expired = row.holder is not None and row.holder != holder
        taken = conn.execute(
            update(_PR)
            .where(
                _PR.c.name == name,
                or_(
                    _PR.c.lease_until.is_(None),
                    _PR.c.lease_until <= now,
                    _PR.c.holder == holder,
                ),
            )
            .values(holder=holder, run_id=run_id, lease_until=until, started_at=now)
        ).rowcount
        if not taken:  # the guarded update refuses what the check above refused too
            return Refusal(HELD, row.run_id)
    return Lease(db, clock, name, holder, length, until, row.run_id if expired else None)


def last_success(db: Engine, name: str) -> datetime | None:
    """When a run of ``name`` last finished its work; None if none ever did."""
    with read_transaction(db) as conn:
        found: datetime | None = conn.scalar(select(_PR.c.succeeded_at).where(_PR.c.name == name))
    return found


def status(db: Engine) -> dict[str, dict[str, Any]]:
    """Every flow's lease and last success, for operators (no case data in any of it)."""
    with read_transaction(db) as conn:
        rows = conn.execute(select(_PR).order_by(_PR.c.name)).all()
    return {
        r.name: {
            "lease_until": r.lease_until,
            "started_at": r.started_at,
            "succeeded_at": r.succeeded_at,
            "counts": dict(r.counts or {}),
        }
        for r in rows
    }


def _ensure_row(db: Engine, name: str) -> None:
    with read_transaction(db) as conn:
        if conn.scalar(select(_PR.c.name).where(_PR.c.name == name)) is not None:
            return
    try:
        with db.begin() as conn:
            conn.execute(_PR.insert().values(name=name, counts={}))
    except IntegrityError:
        pass  # another run made it meanwhile
