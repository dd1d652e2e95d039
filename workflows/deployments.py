"""The deployments a worker serves: the escalation sweep, the outbox dispatch and the
timeline verification, each on an interval from the settings.

The deployments have no concurrency limit of Prefect's: its one slot stays taken until
Prefect hears that the run holding it ended, which after a killed worker took minutes, and
after a restart of the Prefect server (which keeps those slots in memory) never came. Runs
are kept from overlapping by a lease in the database instead (:mod:`workflows.flows`): a run
that comes due while the previous one still works ends at once, and one whose holder died
takes over when its lease runs out. A worker that was down finds the runs scheduled
meanwhile late; the first does the work, and the others find it done and end (each run
sweeps everything due, so nothing is lost). The schedules keep a fixed anchor, so a worker
that re-registers them (on every start, and on every machine) asks for the same run times.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import Flow
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Interval
from prefect.types.entrypoint import EntrypointType

from sop_engine.settings import Settings
from workflows.flows import escalation_sweep, outbox_dispatch, timeline_verification

__all__ = ["DEPLOYMENT_NAME", "deployments"]

DEPLOYMENT_NAME = "sop-engine"
"""Each flow's deployment is ``<flow>/sop-engine``: ``escalation-sweep/sop-engine``."""

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
        parameters={"batch_size": batch_size},
        description=description,
        tags=TAGS,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
