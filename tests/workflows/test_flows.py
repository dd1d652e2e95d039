"""The flows' bodies, called through ``.fn`` on a real SQLite runtime with a manual clock: no
Prefect server, no waiting. Every name, agency and fact here is synthetic."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, func, select

from notifications.channels import InboxChannel
from sop_engine.clock import ManualClock
from sop_engine.directory import ServiceDirectory
from sop_engine.persistence import tables
from sop_engine.runtime import periodic
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from sop_engine.timeline.verifications import STALE_AFTER
from workflows import (
    Delivery,
    escalation_sweep,
    outbox_dispatch,
    timeline_verification,
    use_runtime,
)

T, OUT, INBOX = tables.timeline_entries, tables.outbox, tables.inbox_messages
R, V = tables.referrals, tables.timeline_verifications

NewReferral = Callable[[], str]


def _escalations(runtime: Runtime) -> list[tuple[str, int]]:
    with runtime.db.connect() as conn:
        rows = conn.execute(
            select(T.c.referral_id, T.c.details).where(T.c.kind == "escalation").order_by(T.c.id)
        ).all()
    return [(row.referral_id, row.details["level"]) for row in rows]


def _count(runtime: Runtime, table_: Table) -> int:
    with runtime.db.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table_)) or 0)


def test_a_passed_deadline_is_escalated_once(
    runtime: Runtime, clock: ManualClock, caseworker: Actor, new_referral: NewReferral
) -> None:
    referral = new_referral()
    with use_runtime(runtime):
        assert escalation_sweep.fn() == {}  # nothing due yet
        clock.advance(timedelta(hours=1))  # level 1 of 'assign' is due
        assert escalation_sweep.fn() == {"escalated": 1}
        assert escalation_sweep.fn() == {}
    assert _escalations(runtime) == [(referral, 1)]
    with runtime.db.connect() as conn:
        notified = conn.execute(
            select(OUT.c.template, OUT.c.recipient_role, OUT.c.recipient_agency_id)
        ).all()
    reminder = ("deadline_reminder", "caseworker", caseworker.agency_id)
    assert [tuple(n) for n in notified] == [reminder]


def test_the_sweep_goes_on_while_batches_come_back_full_up_to_its_cap(
    runtime: Runtime, clock: ManualClock, new_referral: NewReferral
) -> None:
    for _ in range(5):
        new_referral()
    clock.advance(timedelta(hours=1))
    with use_runtime(runtime):
        assert escalation_sweep.fn(batch_size=2, max_batches=2) == {"escalated": 4}
        assert escalation_sweep.fn(batch_size=2, max_batches=2) == {"escalated": 1}
        assert escalation_sweep.fn(batch_size=2, max_batches=2) == {}
    assert len(_escalations(runtime)) == 5


def test_a_timer_claimed_by_a_sweep_that_died_is_escalated_once_its_lease_runs_out(
    runtime: Runtime, clock: ManualClock, new_referral: NewReferral
) -> None:
    new_referral()
    clock.advance(timedelta(hours=1))
    # Another sweep claimed the timer and died: the claim's lease has to run out first.
    [claim] = runtime.claim_due_timers(worker="a-sweep-that-died")
    with use_runtime(runtime):
        assert escalation_sweep.fn() == {}
        clock.advance(timedelta(minutes=6))
        assert escalation_sweep.fn() == {"escalated": 1}
    assert runtime.fire_escalation(claim).outcome == "already_fired"


def test_the_dispatch_delivers_escalations_to_the_in_app_inbox(
    runtime: Runtime, clock: ManualClock, new_referral: NewReferral, directory: ServiceDirectory
) -> None:
    new_referral()
    clock.advance(timedelta(hours=1))
    delivery = Delivery(directory, [InboxChannel(runtime.db)])
    with use_runtime(runtime, delivery):
        escalation_sweep.fn()
        assert outbox_dispatch.fn() == {"sent": 1}
        assert outbox_dispatch.fn() == {}
    with runtime.db.connect() as conn:
        inbox = conn.execute(
            select(INBOX.c.template, INBOX.c.recipient_agency_id, INBOX.c.language)
        ).all()
    assert [tuple(m) for m in inbox] == [("deadline_reminder", "TH-SYN-LEGAL-BANGKOK", "th")]


def test_the_dispatch_works_in_batches_up_to_its_cap(
    runtime: Runtime, clock: ManualClock, new_referral: NewReferral, directory: ServiceDirectory
) -> None:
    for _ in range(3):
        new_referral()
    clock.advance(timedelta(hours=1))
    with use_runtime(runtime, Delivery(directory, [InboxChannel(runtime.db)])):
        assert escalation_sweep.fn() == {"escalated": 3}
        assert outbox_dispatch.fn(batch_size=1, max_batches=2) == {"sent": 2}
        assert outbox_dispatch.fn(batch_size=1, max_batches=2) == {"sent": 1}
    assert _count(runtime, INBOX) == 3


def test_the_verification_records_every_timeline_due_and_finds_a_broken_one(
    runtime: Runtime, clock: ManualClock, new_referral: NewReferral
) -> None:
    """Never verified: all are due; then none until one changes or a day has passed. The
    records are what audit pages of long timelines report."""
    referrals = [new_referral() for _ in range(5)]
    with use_runtime(runtime):
        assert timeline_verification.fn(batch_size=2) == {"ok": 5}  # three batches
        assert timeline_verification.fn() == {}
        with runtime.db.begin() as conn:
            conn.execute(
                T.update().where(T.c.referral_id == referrals[0], T.c.seq == 1).values(kind="x")
            )
            conn.execute(R.update().where(R.c.id == referrals[1]).values(head_hash="f" * 64))
        assert timeline_verification.fn() == {"broken": 1}  # the rewritten head is due
        clock.advance(STALE_AFTER)  # a day on, every record is due again: the edit shows
        capped = timeline_verification.fn(batch_size=2, max_batches=2)
        rest = timeline_verification.fn()
        assert sum(capped.values()) == 4  # the cap: the next run goes on
        assert Counter(capped) + Counter(rest) == {"ok": 3, "broken": 2}
        assert timeline_verification.fn() == {}
    with runtime.db.connect() as conn:
        records = dict(conn.execute(select(V.c.referral_id, V.c.ok)).all())
    assert records == {r: r not in referrals[:2] for r in referrals}


def test_outside_use_runtime_the_flows_build_their_runtime_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sop_engine.settings import get_settings
    from workflows import runtime as flow_parts

    monkeypatch.setenv("SOP_ENGINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SOP_ENGINE_DATABASE_URL", raising=False)
    monkeypatch.delenv("SOP_ENGINE_MASTER_KEY", raising=False)
    monkeypatch.delenv("SOP_ENGINE_ENVIRONMENT", raising=False)
    monkeypatch.setenv("SOP_ENGINE_TIMER_LEASE_SECONDS", "15")
    get_settings.cache_clear()
    flow_parts._runtime_from_settings.cache_clear()
    try:
        assert escalation_sweep.fn() == {}  # migrates the embedded database on first use
        assert outbox_dispatch.fn() == {}
        assert timeline_verification.fn() == {}
        built = flow_parts.flow_runtime()
        assert flow_parts.flow_runtime() is built  # once per process
        assert built.db.url.database == str(tmp_path / "data" / "sop_engine.sqlite3")
        assert built.timer_lease == timedelta(seconds=15)
    finally:
        flow_parts.flow_runtime().db.dispose()
        flow_parts._runtime_from_settings.cache_clear()
        flow_parts._delivery_from_settings.cache_clear()
        get_settings.cache_clear()


def test_the_public_surface() -> None:
    import workflows

    assert sorted(workflows.__all__) == [
        "Delivery",
        "LocalPrefectServer",
        "PrefectServerError",
        "deployments",
        "escalation_sweep",
        "flow_delivery",
        "flow_runtime",
        "outbox_dispatch",
        "serve",
        "timeline_verification",
        "use_runtime",
        "wait_until_healthy",
    ]
    assert all(hasattr(workflows, name) for name in workflows.__all__)
    assert (
        workflows.escalation_sweep.name,
        workflows.outbox_dispatch.name,
        workflows.timeline_verification.name,
    ) == ("escalation-sweep", "outbox-dispatch", "timeline-verification")


def test_a_run_finding_another_run_at_work_ends_at_once_with_nothing_done(
    runtime: Runtime, clock: ManualClock, new_referral: NewReferral
) -> None:
    new_referral()
    clock.advance(timedelta(hours=1))
    other = periodic.begin(
        runtime.db, clock, "escalation-sweep", holder="other-host:1", length=runtime.timer_lease
    )
    assert isinstance(other, periodic.Lease)
    with use_runtime(runtime):
        assert escalation_sweep.fn() == {}  # the other run works: no second sweep
        assert _escalations(runtime) == []
        clock.advance(runtime.timer_lease)  # it died: its lease ran out
        assert escalation_sweep.fn() == {"escalated": 1}
    assert not other.renew()
    status = periodic.status(runtime.db)["escalation-sweep"]
    assert status["succeeded_at"] == clock.now()
    assert status["counts"] == {"escalated": 1}
    assert status["lease_until"] is None


def test_every_flow_records_its_last_success(runtime: Runtime, directory: ServiceDirectory) -> None:
    delivery = Delivery(directory, [InboxChannel(runtime.db)])
    with use_runtime(runtime, delivery):
        escalation_sweep.fn()
        outbox_dispatch.fn()
        timeline_verification.fn()
    for name in ("escalation-sweep", "outbox-dispatch", "timeline-verification"):
        assert periodic.last_success(runtime.db, name) == runtime.clock.now()


def test_a_run_that_lost_its_lease_stops_after_its_batch(
    runtime: Runtime, clock: ManualClock, new_referral: NewReferral
) -> None:
    for _ in range(4):
        new_referral()
    clock.advance(timedelta(hours=1))
    real_sweep = runtime.sweep

    def sweep_then_stall(*args: Any, **kwargs: Any) -> Any:
        outcomes = real_sweep(*args, **kwargs)
        clock.advance(runtime.timer_lease)  # stalled: another run takes over meanwhile
        taken = periodic.begin(
            runtime.db, clock, "escalation-sweep", holder="other:1", length=runtime.timer_lease
        )
        assert isinstance(taken, periodic.Lease)
        return outcomes

    runtime.sweep = sweep_then_stall  # type: ignore[method-assign]
    with use_runtime(runtime):
        assert escalation_sweep.fn(batch_size=2) == {"escalated": 2}  # one batch, then stop
    assert periodic.last_success(runtime.db, "escalation-sweep") is None


def test_a_flow_run_given_another_key_than_the_databases_refuses_to_build_its_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sop_engine.crypto import MasterKey
    from sop_engine.errors import ConfigurationError
    from sop_engine.settings import get_settings
    from workflows import runtime as flow_parts

    monkeypatch.setenv("SOP_ENGINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SOP_ENGINE_DATABASE_URL", raising=False)
    monkeypatch.delenv("SOP_ENGINE_ENVIRONMENT", raising=False)
    try:
        for attempt in (1, 2):
            monkeypatch.setenv("SOP_ENGINE_MASTER_KEY", MasterKey.generate("k1").to_setting())
            get_settings.cache_clear()
            flow_parts._runtime_from_settings.cache_clear()
            if attempt == 1:
                flow_parts.flow_runtime().db.dispose()  # the cluster's key, recorded
            else:
                with pytest.raises(ConfigurationError, match="id 'k1' is not the one"):
                    flow_parts.flow_runtime()
    finally:
        flow_parts._runtime_from_settings.cache_clear()
        get_settings.cache_clear()


def test_a_run_that_fails_frees_the_lease_for_the_next_run_at_once(
    runtime: Runtime, clock: ManualClock, new_referral: NewReferral
) -> None:
    new_referral()
    clock.advance(timedelta(hours=1))
    real_sweep = runtime.sweep

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("synthetic failure of a batch")

    runtime.sweep = failing  # type: ignore[method-assign]
    with use_runtime(runtime), pytest.raises(RuntimeError, match="synthetic failure"):
        escalation_sweep.fn()
    assert periodic.last_success(runtime.db, "escalation-sweep") is None
    assert periodic.status(runtime.db)["escalation-sweep"]["lease_until"] is None
    runtime.sweep = real_sweep  # type: ignore[method-assign]
    # Another worker's run, at once, not a lease later:
    other = periodic.begin(
        runtime.db, clock, "escalation-sweep", holder="other:1", length=runtime.timer_lease
    )
    assert isinstance(other, periodic.Lease)


class Bound(Exception):
    """Raised by the stand-in for :func:`workflows.lifeline.bind_to_worker`."""


@pytest.mark.parametrize(
    "flow", [escalation_sweep, outbox_dispatch, timeline_verification], ids=lambda f: f.name
)
def test_every_flow_binds_itself_to_the_worker_before_any_work(
    runtime: Runtime, directory: ServiceDirectory, monkeypatch: pytest.MonkeyPatch, flow: Any
) -> None:
    """So that a flow run outlives no worker killed under it (tests/workflows/test_lifeline.py)."""

    def bind() -> None:
        raise Bound

    monkeypatch.setattr("workflows.flows.bind_to_worker", bind)
    delivery = Delivery(directory, [InboxChannel(runtime.db)])
    with use_runtime(runtime, delivery), pytest.raises(Bound):
        flow.fn()
    assert periodic.status(runtime.db) == {}
