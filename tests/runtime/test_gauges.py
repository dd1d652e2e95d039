"""What operators watch, read from the database: overdue timers and the oldest's age,
escalations, the outbox by status, the periodic flows. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import update

from sop_engine.clock import ManualClock
from sop_engine.persistence import tables
from sop_engine.runtime import periodic
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.gauges import read_gauges
from sop_engine.runtime.outbox import MAX_ATTEMPTS
from sop_engine.runtime.referrals import ReferralView

OUT = tables.outbox


def test_overdue_timers_and_the_oldest_age_until_the_sweep_escalates_them(
    runtime: Runtime, clock: ManualClock, corridor_referral: Callable[..., ReferralView]
) -> None:
    corridor_referral(survivor_age=22)
    corridor_referral(survivor_age=31)
    g = read_gauges(runtime.db, clock.now())
    assert (g.overdue_timers, g.oldest_overdue_seconds(), g.escalations) == (0, 0.0, 0)
    clock.advance(timedelta(hours=1))  # level 1 of 'assign' (1 h) of both is due now
    g = read_gauges(runtime.db, clock.now())
    assert (g.overdue_timers, g.oldest_overdue_seconds()) == (2, 0.0)
    clock.advance(timedelta(minutes=10))
    g = read_gauges(runtime.db, clock.now())
    assert (g.overdue_timers, g.oldest_overdue_seconds()) == (2, 600.0)
    claims = runtime.claim_due_timers(worker="w1")  # claimed is not yet escalated
    assert read_gauges(runtime.db, clock.now()).overdue_timers == 2
    for claim in claims:
        assert runtime.fire_escalation(claim).outcome == "escalated"
    g = read_gauges(runtime.db, clock.now())
    assert (g.overdue_timers, g.oldest_overdue_at, g.escalations) == (0, None, 2)
    assert g.outbox["pending"] > 0


def test_the_outbox_by_status_and_the_oldest_pending_message(
    runtime: Runtime, clock: ManualClock, corridor_referral: Callable[..., ReferralView]
) -> None:
    corridor_referral(survivor_age=22)
    corridor_referral(survivor_age=31)
    clock.advance(timedelta(hours=1))
    runtime.sweep(worker="w1")
    pending = read_gauges(runtime.db, clock.now()).outbox["pending"]
    assert pending >= 2
    clock.advance(timedelta(minutes=5))
    g = read_gauges(runtime.db, clock.now())
    assert g.oldest_pending_seconds() == 300.0
    with runtime.db.begin() as conn:  # every message is on its last attempt
        conn.execute(update(OUT).values(attempts=MAX_ATTEMPTS - 1))
    first, second, *_ = runtime.claim_outbox(10, worker="d1")
    assert runtime.mark_sent(first, channels=["in_app"])
    assert runtime.mark_failed_attempt(second, "DeliveryError:smtp_451", retryable=True) == "dead"
    g = read_gauges(runtime.db, clock.now())
    # The dead message's notice to the coordinators is one more pending message.
    assert dict(g.outbox) == {"pending": pending - 2 + 1, "sent": 1, "dead": 1}


def test_each_periodic_flow_its_lease_and_last_success(
    runtime: Runtime, clock: ManualClock
) -> None:
    assert dict(read_gauges(runtime.db, clock.now()).periodic) == {}
    lease = periodic.begin(
        runtime.db, clock, "escalation-sweep", holder="w:1", length=timedelta(seconds=60)
    )
    assert isinstance(lease, periodic.Lease)
    sweep = read_gauges(runtime.db, clock.now()).periodic["escalation-sweep"]
    assert (sweep.lease_held, sweep.succeeded_at, dict(sweep.counts)) == (True, None, {})
    clock.advance(timedelta(seconds=5))
    assert lease.finish({"escalated": 3, "already_fired": 1})
    sweep = read_gauges(runtime.db, clock.now()).periodic["escalation-sweep"]
    assert sweep.lease_held is False
    assert sweep.succeeded_at == clock.now()
    assert dict(sweep.counts) == {"escalated": 3, "already_fired": 1}
