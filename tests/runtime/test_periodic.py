"""The periodic runs' lease (:mod:`sop_engine.runtime.periodic`) on SQLite and PostgreSQL: one
run at a time, a dead run taken over once its lease runs out, a late run finding its work
done, and the last success that readiness reads."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from sop_engine.clock import ManualClock
from sop_engine.runtime import periodic

START = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def _begin(
    engine: Engine, clock: ManualClock, holder: str, **kwargs: object
) -> periodic.Lease | periodic.Refusal:
    return periodic.begin(
        engine,
        clock,
        "escalation-sweep",
        holder=holder,
        length=MINUTE,
        **kwargs,  # type: ignore[arg-type]
    )


def test_one_run_holds_the_lease_and_a_second_run_ends_with_nothing_to_do(engine: Engine) -> None:
    clock = ManualClock(START)
    first = _begin(engine, clock, "host:1", run_id="run-1")
    assert isinstance(first, periodic.Lease)
    assert first.until == START + MINUTE
    assert first.previous_run_id is None
    assert _begin(engine, clock, "host:2", run_id="run-2") == periodic.Refusal(
        periodic.HELD, "run-1"
    )
    clock.advance(timedelta(seconds=59))
    assert isinstance(_begin(engine, clock, "host:2"), periodic.Refusal)


def test_a_renewed_lease_stays_its_holders_past_its_first_length(engine: Engine) -> None:
    clock = ManualClock(START)
    lease = _begin(engine, clock, "host:1")
    assert isinstance(lease, periodic.Lease)
    clock.advance(timedelta(seconds=20))
    assert not lease.due_for_renewal()
    clock.advance(timedelta(seconds=20))
    assert lease.due_for_renewal()
    assert lease.renew()
    assert lease.until == START + timedelta(seconds=40) + MINUTE
    clock.advance(timedelta(seconds=50))  # past the first length, inside the renewed one
    assert isinstance(_begin(engine, clock, "host:2"), periodic.Refusal)


def test_a_run_that_died_is_taken_over_once_its_lease_runs_out(engine: Engine) -> None:
    clock = ManualClock(START)
    dead = _begin(engine, clock, "host:1", run_id="run-1")
    assert isinstance(dead, periodic.Lease)
    clock.advance(MINUTE)
    taken = _begin(engine, clock, "host:2", run_id="run-2")
    assert isinstance(taken, periodic.Lease)
    assert taken.previous_run_id == "run-1"  # the run to mark crashed
    # The dead run, if it was only stuck, finds the lease lost: it stops, records nothing.
    assert not dead.renew()
    assert not dead.finish({"escalated": 1})
    assert periodic.last_success(engine, "escalation-sweep") is None
    assert taken.finish({"escalated": 2})
    assert periodic.status(engine)["escalation-sweep"]["counts"] == {"escalated": 2}


def test_finishing_records_the_success_and_frees_the_lease(engine: Engine) -> None:
    clock = ManualClock(START)
    assert periodic.last_success(engine, "escalation-sweep") is None
    lease = _begin(engine, clock, "host:1")
    assert isinstance(lease, periodic.Lease)
    clock.advance(timedelta(seconds=5))
    assert lease.finish({"escalated": 3, "stale": 1})
    assert periodic.last_success(engine, "escalation-sweep") == START + timedelta(seconds=5)
    row = periodic.status(engine)["escalation-sweep"]
    assert row["lease_until"] is None
    assert row["counts"] == {"escalated": 3, "stale": 1}
    # Free at once, not when the lease would have run out; a finished lease cannot renew.
    assert isinstance(_begin(engine, clock, "host:2"), periodic.Lease)
    assert not lease.renew()


def test_a_late_run_finds_its_work_done_by_a_run_that_began_after_it_was_due(
    engine: Engine,
) -> None:
    clock = ManualClock(START)
    lease = _begin(engine, clock, "host:1", scheduled_at=START)
    assert isinstance(lease, periodic.Lease)
    assert lease.finish({})
    # Runs scheduled during an outage, picked up after it: their work is done.
    for late in (START - 3 * MINUTE, START - MINUTE, START):
        assert _begin(engine, clock, "host:2", scheduled_at=late) == periodic.Refusal(
            periodic.SUPERSEDED
        )
    # A run due after that run began still works: something may have come due since.
    later = _begin(engine, clock, "host:2", scheduled_at=START + timedelta(seconds=1))
    assert isinstance(later, periodic.Lease)


def test_a_success_that_began_before_a_runs_schedule_does_not_supersede_it(
    engine: Engine,
) -> None:
    clock = ManualClock(START)
    lease = _begin(engine, clock, "host:1")
    assert isinstance(lease, periodic.Lease)
    clock.advance(timedelta(seconds=30))  # finished after the next run was due, began before
    assert lease.finish({})
    due = START + timedelta(seconds=10)
    assert isinstance(_begin(engine, clock, "host:2", scheduled_at=due), periodic.Lease)


def test_each_flow_has_its_own_lease(engine: Engine) -> None:
    clock = ManualClock(START)
    assert isinstance(_begin(engine, clock, "host:1"), periodic.Lease)
    other = periodic.begin(engine, clock, "outbox-dispatch", holder="host:2", length=MINUTE)
    assert isinstance(other, periodic.Lease)
    assert set(periodic.status(engine)) == {"escalation-sweep", "outbox-dispatch"}


def test_of_runs_starting_at_once_exactly_one_takes_the_lease(engine: Engine) -> None:
    clock = ManualClock(START)
    start = threading.Barrier(6)
    results: list[periodic.Lease | periodic.Refusal] = []
    errors: list[BaseException] = []

    def run(number: int) -> None:
        start.wait()
        try:
            results.append(_begin(engine, clock, f"host:{number}"))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(isinstance(r, periodic.Lease) for r in results) == 1
    assert sum(r == periodic.Refusal(periodic.HELD, None) for r in results) == 5
