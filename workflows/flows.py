"""The periodic flows: the escalation sweep, the outbox dispatch and the timeline
verification.

Each run works in batches until nothing is left or a cap is reached, so that one run a minute
keeps up with any number of referrals (never one flow run per deadline or message: each costs
about a second of Prefect's own work). The flows are thin: claiming, firing and sending live
in :mod:`sop_engine` and :mod:`notifications`, and every step there is idempotent, so a run
that dies half-way is finished by the next one.

One run of each flow works at a time, by a lease in the database
(:mod:`sop_engine.runtime.periodic`), renewed after every batch: a run that finds the lease
held by a live run, or finds its own work done by a run that began after its scheduled time,
returns at once with nothing done. A run that died (its worker killed) stops renewing; the
next run takes the lease once it has run out, and marks the dead runs that Prefect still
shows as running Crashed, since no process is left to report them.

No personal data reaches Prefect: the flows' names are fixed, their parameters are batch
sizes, their logs and results are counts by outcome.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError
from prefect.states import Crashed

from notifications.dispatch import dispatch_pending
from sop_engine.runtime import periodic
from sop_engine.runtime.deadlines import default_worker
from sop_engine.runtime.engine import Runtime
from workflows.lifeline import bind_to_worker
from workflows.runtime import flow_delivery, flow_runtime

__all__ = [
    "ESCALATION_SWEEP",
    "OUTBOX_DISPATCH",
    "TIMELINE_VERIFICATION",
    "escalation_sweep",
    "outbox_dispatch",
    "timeline_verification",
]

ESCALATION_SWEEP = "escalation-sweep"
OUTBOX_DISPATCH = "outbox-dispatch"
TIMELINE_VERIFICATION = "timeline-verification"

RUN_TIMEOUT_SECONDS = 15 * 60
"""A run stuck longer than this is failed by Prefect; its lease and the claims it held come
back when they run out (a run renews them only while it works)."""

Batch = Callable[[], tuple[Counter[str], bool]]
"""One batch of a flow's work: its counts by outcome, and whether it came back full."""


@flow(name=ESCALATION_SWEEP, timeout_seconds=RUN_TIMEOUT_SECONDS, persist_result=False)
def escalation_sweep(batch_size: int = 100, max_batches: int = 20) -> dict[str, int]:
    """Fire every due escalation level: claim up to ``batch_size`` due timers, fire each, and
    go on while batches come back full, at most ``max_batches`` times.

    Returns how many claims ended in each outcome (``escalated``, ``stale``,
    ``already_fired``, ``lost_claim``, ``conflict``); an empty dict when nothing was due.
    """
    bind_to_worker()
    runtime = flow_runtime()
    worker = default_worker()

    def batch() -> tuple[Counter[str], bool]:
        outcomes = runtime.sweep(batch_size, worker=worker)
        return Counter(o.outcome for o in outcomes), len(outcomes) >= batch_size

    return _periodic(runtime, ESCALATION_SWEEP, "escalation sweep", batch, max_batches)


@flow(name=OUTBOX_DISPATCH, timeout_seconds=RUN_TIMEOUT_SECONDS, persist_result=False)
def outbox_dispatch(batch_size: int = 50, max_batches: int = 20) -> dict[str, int]:
    """Send what the outbox holds: claim up to ``batch_size`` due messages, render and send
    each through its channel, and go on while batches come back full, at most
    ``max_batches`` times.

    Returns how many messages ended in each outcome (``sent``, ``retried``, ``dead``,
    ``skipped``, as :func:`~notifications.dispatch.dispatch_pending` counts them); an empty
    dict when nothing was due.
    """
    bind_to_worker()
    runtime = flow_runtime()
    delivery = flow_delivery()
    worker = default_worker()

    def batch() -> tuple[Counter[str], bool]:
        report = dispatch_pending(
            runtime, delivery.directory, delivery.channels, worker=worker, limit=batch_size
        )
        outcomes = {
            "sent": report.sent,
            "retried": report.retried,
            "dead": report.dead,
            "skipped": report.skipped,
        }
        counts = Counter({outcome: n for outcome, n in outcomes.items() if n})
        return counts, sum(outcomes.values()) >= batch_size

    return _periodic(runtime, OUTBOX_DISPATCH, "outbox dispatch", batch, max_batches)


@flow(name=TIMELINE_VERIFICATION, timeout_seconds=RUN_TIMEOUT_SECONDS, persist_result=False)
def timeline_verification(batch_size: int = 100, max_batches: int = 20) -> dict[str, int]:
    """Verify in full, and record, the timelines due for it (never verified, changed since,
    or last verified a day ago or more), ``batch_size`` at a time, going on while batches come
    back full, at most ``max_batches`` times; what audit pages of long timelines report as
    their last full verification.

    Returns how many timelines were ``ok`` and how many ``broken`` (which ones: the audit
    routes and ``sop-engine timeline verify`` name them); an empty dict when none was due.
    """
    bind_to_worker()
    runtime = flow_runtime()

    def batch() -> tuple[Counter[str], bool]:
        checks = runtime.verify_due_timelines(batch_size)
        broken = sum(not c.ok for c in checks)
        if broken:
            _logger().warning("%d timeline(s) do not verify: see GET /audit", broken)
        counts = Counter("ok" if c.ok else "broken" for c in checks)
        return counts, len(checks) >= batch_size

    return _periodic(runtime, TIMELINE_VERIFICATION, "timeline verification", batch, max_batches)


def _periodic(
    runtime: Runtime, name: str, what: str, batch: Batch, max_batches: int
) -> dict[str, int]:
    """Take ``name``'s lease, run ``batch`` while batches come back full (at most
    ``max_batches`` times), renewing the lease after each, and record the success."""
    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    taken = periodic.begin(
        runtime.db,
        runtime.clock,
        name,
        holder=default_worker(),
        length=runtime.timer_lease,
        run_id=str(run.id) if run is not None else None,
        scheduled_at=run.expected_start_time if run is not None else None,
    )
    if isinstance(taken, periodic.Refusal):
        why = {
            periodic.HELD: f"another run ({taken.holder_run_id or 'outside Prefect'}) is working",
            periodic.SUPERSEDED: "a run that began after this one was due has done its work",
        }[taken.reason]
        _logger().info("%s: nothing to do, %s", what, why)
        return {}
    if run is not None:
        _crash_dead_runs(name, str(run.id), runtime.timer_lease)
    counts: Counter[str] = Counter()
    batches, full = 0, True
    try:
        while full and batches < max_batches:
            done, full = batch()
            batches += 1
            counts.update(done)
            if full and batches < max_batches and not taken.renew():
                _logger().warning("%s: the lease was lost; the next run goes on", what)
                break
    except BaseException:
        taken.release()  # failed: the next run need not wait for the lease to run out
        raise
    taken.finish(dict(counts))
    _log_counts(what, batches, counts, capped=full)
    return dict(counts)


def _crash_dead_runs(name: str, own: str, lease: timedelta) -> None:
    """Mark Crashed the runs of flow ``name`` that Prefect shows pending or running for longer
    than a lease, other than ``own``: this run holds the lease, so they are not working (a
    run that is alive either holds it or ends within seconds), and their process is gone
    (a killed worker takes its runs with it) or no longer renews it. A Prefect server that
    cannot be asked only delays the marking to a later run; it never stops this one."""
    cutoff = datetime.now(UTC) - lease
    try:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[name])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
                    )
                ),
                limit=200,
            )
            for dead in runs:
                since = dead.state.timestamp if dead.state is not None else None
                if str(dead.id) == own or since is None or since > cutoff:
                    continue
                message = "its worker stopped renewing the run's lease; a later run took over"
                client.set_flow_run_state(dead.id, Crashed(message=message), force=True)
                _logger().warning("%s: run %s marked crashed (%s)", name, dead.name, message)
    except Exception as error:  # never stops the run that asks
        _logger().warning(
            "%s: could not mark dead runs crashed (%s); a later run tries again",
            name,
            type(error).__name__,
        )


def _log_counts(what: str, batches: int, counts: Counter[str], *, capped: bool) -> None:
    shown = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "nothing due"
    more = "; stopped at the batch cap, the next run goes on" if capped else ""
    _logger().info("%s: %s in %d batch(es)%s", what, shown, batches, more)


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The flow run's logger (its lines reach the Prefect UI), or this module's when a flow's
    body is called directly, outside a run."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)
