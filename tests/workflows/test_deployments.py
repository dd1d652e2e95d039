"""The deployments a worker serves, as Prefect will see them: intervals from the settings, one
run at a time, parameters that are batch sizes and nothing else."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prefect.client.schemas.schedules import IntervalSchedule

from sop_engine.settings import Settings
from workflows.deployments import deployments


@pytest.fixture
def settings() -> Settings:
    return Settings(
        sweep_interval_seconds=60,
        dispatch_interval_seconds=30,
        verify_interval_seconds=3600,
        batch_size=25,
    )


def test_one_deployment_per_flow_on_the_settings_intervals(settings: Settings) -> None:
    sweep, dispatch, verification = deployments(settings)
    assert (sweep.flow_name, sweep.name) == ("escalation-sweep", "sop-engine")
    assert (dispatch.flow_name, dispatch.name) == ("outbox-dispatch", "sop-engine")
    assert (verification.flow_name, verification.name) == ("timeline-verification", "sop-engine")
    intervals = []
    for deployment in (sweep, dispatch, verification):
        [schedule] = deployment.schedules or []
        assert isinstance(schedule.schedule, IntervalSchedule)
        intervals.append(schedule.schedule.interval)
    assert intervals == [timedelta(seconds=60), timedelta(seconds=30), timedelta(hours=1)]


def test_no_deployment_takes_a_prefect_concurrency_slot_a_dead_run_could_keep(
    settings: Settings,
) -> None:
    # Runs are kept apart by the lease in the database (workflows.flows), which a dead run
    # loses when it runs out; Prefect's slot stayed taken, even for good after a restart.
    for deployment in deployments(settings):
        assert deployment.concurrency_limit is None
        assert deployment.concurrency_options is None


def test_parameters_are_batch_sizes_only(settings: Settings) -> None:
    for deployment in deployments(settings):
        assert deployment.parameters == {"batch_size": 25}
        schema = deployment._parameter_openapi_schema.model_dump()
        assert {name: p["type"] for name, p in schema["properties"].items()} == {
            "batch_size": "integer",
            "max_batches": "integer",
        }


def test_the_entry_points_are_module_paths_any_worker_can_import(settings: Settings) -> None:
    assert [d.entrypoint for d in deployments(settings)] == [
        "workflows.flows.escalation_sweep",
        "workflows.flows.outbox_dispatch",
        "workflows.flows.timeline_verification",
    ]
    assert all(d.work_pool_name is None for d in deployments(settings))


def test_an_interval_under_a_second_is_refused() -> None:
    with pytest.raises(ValueError, match="escalation-sweep needs an interval of at least one"):
        deployments(Settings(sweep_interval_seconds=0))
