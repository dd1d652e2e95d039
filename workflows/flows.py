"""The periodic flows: the escalation sweep, the outbox dispatch and the timeline
verification.

Each run works in batches until nothing is left or a cap is reached, so that one run a minute
keeps up with any number of referrals (never one flow run per deadline or message: each costs
about a second of Prefect's own work). The flows are thin: claiming, firing and sending live
in :mod:`sop_engine` and :mod:`notifications`, and every step there is idempotent, so a run
that dies half-way is finished by the next one.

No personal data reaches Prefect: the flows' names are fixed, their parameters are batch
sizes, their logs and results are counts by outcome.
"""

from __future__ import annotations

import logging
from collections import Counter

from prefect import flow, get_run_logger
from prefect.exceptions import MissingContextError

from notifications.dispatch import dispatch_pending
from sop_engine.runtime.deadlines import default_worker
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
"""A run stuck longer than this is failed by Prefect, which frees its deployment's one
concurrency slot; claims it held come back when their lease runs out."""


@flow(name=ESCALATION_SWEEP, timeout_seconds=RUN_TIMEOUT_SECONDS, persist_result=False)
def escalation_sweep(batch_size: int = 100, max_batches: int = 20) -> dict[str, int]:
    """Fire every due escalation level: claim up to ``batch_size`` due timers, fire each, and
    go on while batches come back full, at most ``max_batches`` times.

    Returns how many claims ended in each outcome (``escalated``, ``stale``,
    ``already_fired``, ``lost_claim``, ``conflict``); an empty dict when nothing was due.
    """
    runtime = flow_runtime()
    worker = default_worker()
    counts: Counter[str] = Counter()
    batches, full = 0, True
    while full and batches < max_batches:
        outcomes = runtime.sweep(batch_size, worker=worker)
        batches += 1
        counts.update(o.outcome for o in outcomes)
        full = len(outcomes) >= batch_size
    _log_counts("escalation sweep", batches, counts, capped=full)
    return dict(counts)


@flow(name=OUTBOX_DISPATCH, timeout_seconds=RUN_TIMEOUT_SECONDS, persist_result=False)
def outbox_dispatch(batch_size: int = 50, max_batches: int = 20) -> dict[str, int]:
    """Send what the outbox holds: claim up to ``batch_size`` due messages, render and send
    each through its channel, and go on while batches come back full, at most
    ``max_batches`` times.

    Returns how many messages ended in each outcome (``sent``, ``retried``, ``dead``,
    ``skipped``, as :func:`~notifications.dispatch.dispatch_pending` counts them); an empty
    dict when nothing was due.
    """
    runtime = flow_runtime()
    delivery = flow_delivery()
    worker = default_worker()
    counts: Counter[str] = Counter()
    batches, full = 0, True
    while full and batches < max_batches:
        report = dispatch_pending(
            runtime, delivery.directory, delivery.channels, worker=worker, limit=batch_size
        )
        batches += 1
        outcomes = {
            "sent": report.sent,
            "retried": report.retried,
            "dead": report.dead,
            "skipped": report.skipped,
        }
        counts.update({outcome: n for outcome, n in outcomes.items() if n})
        full = sum(outcomes.values()) >= batch_size
    _log_counts("outbox dispatch", batches, counts, capped=full)
    return dict(counts)


@flow(name=TIMELINE_VERIFICATION, timeout_seconds=RUN_TIMEOUT_SECONDS, persist_result=False)
def timeline_verification(batch_size: int = 100, max_batches: int = 20) -> dict[str, int]:
    """Verify in full, and record, the timelines due for it (never verified, changed since,
    or last verified a day ago or more), ``batch_size`` at a time, going on while batches come
    back full, at most ``max_batches`` times; what audit pages of long timelines report as
    their last full verification.

    Returns how many timelines were ``ok`` and how many ``broken`` (which ones: the audit
    routes and ``sop-engine timeline verify`` name them); an empty dict when none was due.
    """
    runtime = flow_runtime()
    counts: Counter[str] = Counter()
    batches, full = 0, True
    while full and batches < max_batches:
        checks = runtime.verify_due_timelines(batch_size)
        batches += 1
        counts.update("ok" if c.ok else "broken" for c in checks)
        full = len(checks) >= batch_size
    if counts["broken"]:
        _logger().warning("%d timeline(s) do not verify: see GET /audit", counts["broken"])
    _log_counts("timeline verification", batches, counts, capped=full)
    return dict(counts)


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
