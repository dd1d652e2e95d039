"""The deployments a worker serves: the escalation sweep, the outbox dispatch and the
timeline verification, each on an interval from the settings.

Overlapping runs are prevented by Prefect's server, for every worker at once: each deployment
has a concurrency limit of one with the ``CANCEL_NEW`` collision strategy, so a run that
comes due while the previous one still runs is cancelled instead of queued. A worker that was
down finds the runs scheduled meanwhile late; it picks them up together, one of them takes
the slot and the others are cancelled (Prefect also cancels, rather than marks late, a run
whose slot is taken), and since every run sweeps everything due, nothing is lost. The
schedules keep a fixed anchor, so a worker that re-registers them (on every start, and on
every machine) asks for the same run times.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import Flow
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Interval
from prefect.types.entrypoint import EntrypointType

from sop_engine.settings import Settings
from workflows.flows import escalation_sweep, outbox_dispatch, timeline_verification

__all__ = ["DEPLOYMENT_NAME", "ONE_AT_A_TIME", "deployments"]

DEPLOYMENT_NAME = "sop-engine"
"""Each flow's deployment is ``<flow>/sop-engine``: ``escalation-sweep/sop-engine``."""

ONE_AT_A_TIME = ConcurrencyLimitConfig(
    limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
)
"""At most one run of a deployment at a time; a run due meanwhile is cancelled, not queued."""

ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)
"""Runs fall on whole multiples of the interval from here, whoever registers the schedule."""

TAGS = ["sop-engine"]


def deployments(settings: Settings) -> list[RunnerDeployment]:
    """The sweep every ``sweep_interval_seconds``, the dispatch every
    ``dispatch_interval_seconds`` and the verification every ``verify_interval_seconds``,
    with the settings' batch size as their one parameter.

    (What ``flow.to_deployment`` builds outside an event loop; its entry point is the flow's
    module path, which every worker of an installed engine can import.)
    """
    return [
        _deployment(
            escalation_sweep,
            settings.sweep_interval_seconds,
            settings.batch_size,
            "Fire the escalation levels whose deadlines passed.",
        ),
        _deployment(
            outbox_dispatch,
            settings.dispatch_interval_seconds,
            settings.batch_size,
            "Render and send the notifications waiting in the outbox.",
        ),
        _deployment(
            timeline_verification,
            settings.verify_interval_seconds,
            settings.batch_size,
            "Verify in full the timelines changed since, or not verified for a day.",
        ),
    ]


def _deployment(
    flow: Flow[..., dict[str, int]], seconds: int, batch_size: int, description: str
) -> RunnerDeployment:
    if seconds < 1:
        raise ValueError(f"{flow.name} needs an interval of at least one second, not {seconds}")
    return RunnerDeployment.from_flow(
        flow,
        DEPLOYMENT_NAME,
        schedule=Interval(timedelta(seconds=seconds), anchor_date=ANCHOR),
        concurrency_limit=ONE_AT_A_TIME,
        parameters={"batch_size": batch_size},
        description=description,
        tags=TAGS,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
