"""``GET /ready``: 200 while the database answers at this version's migration and the sweep
succeeded within two intervals; 503 with the reason otherwise, within two intervals of the
sweep stopping. No token; nothing about any case. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.app import create_app
from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.errors import MissingMasterKey
from sop_engine.key_rotation import rotate_case_keys
from sop_engine.language.compiler import SopLibrary
from sop_engine.master_keys import check_keyring
from sop_engine.persistence.migrate import alembic_config, head_revision
from sop_engine.runtime import periodic
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from tests.agencies import agency_directory

START = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
INTERVAL = timedelta(seconds=60)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def ready_client(engine: Engine, library: SopLibrary, clock: ManualClock) -> Iterator[TestClient]:
    runtime = Runtime(engine, library, MasterKeyring(MasterKey.generate("test")), clock)
    app = create_app(runtime, sweep_interval=INTERVAL)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _sweep_succeeds(engine: Engine, clock: ManualClock) -> None:
    lease = periodic.begin(engine, clock, "escalation-sweep", holder="w:1", length=INTERVAL)
    assert isinstance(lease, periodic.Lease)
    assert lease.finish({"escalated": 1})


def test_ready_while_the_sweep_succeeds_and_not_two_intervals_after_it_stops(
    ready_client: TestClient, engine: Engine, clock: ManualClock
) -> None:
    _sweep_succeeds(engine, clock)
    r = ready_client.get("/ready")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ready",
        "checks": {
            "database": "ok",
            "migration": head_revision(),
            "master_key": "ok",
            "master_keys_in_use": "ok",
            "escalation_sweep": {"succeeded_at": START.isoformat(), "max_age_seconds": 120},
        },
    }
    clock.advance(2 * INTERVAL)
    assert ready_client.get("/ready").status_code == 200
    clock.advance(timedelta(seconds=1))  # the worker stopped two intervals ago
    r = ready_client.get("/ready")
    assert r.status_code == 503
    assert r.json()["error"] == "not_ready"
    assert r.json()["message"] == (
        "the last escalation sweep succeeded 121 s ago: is a worker running?"
    )
    assert ready_client.get("/health").status_code == 200  # alive, not ready
    _sweep_succeeds(engine, clock)  # the worker is back
    assert ready_client.get("/ready").status_code == 200


def test_a_sweep_that_never_ran_is_a_fault_only_two_intervals_after_the_start(
    ready_client: TestClient, clock: ManualClock
) -> None:
    assert ready_client.get("/ready").status_code == 200  # the worker may be starting
    clock.advance(2 * INTERVAL + timedelta(seconds=1))
    r = ready_client.get("/ready")
    assert r.status_code == 503
    assert r.json()["message"] == "no escalation sweep has succeeded yet: is a worker running?"
    assert r.json()["checks"]["escalation_sweep"]["succeeded_at"] is None


def test_a_database_behind_this_versions_migrations_is_not_ready(
    ready_client: TestClient, engine: Engine, clock: ManualClock
) -> None:
    _sweep_succeeds(engine, clock)
    with engine.connect() as conn:
        command.downgrade(alembic_config(conn), "0010")
    r = ready_client.get("/ready")
    assert r.status_code == 503
    assert r.json()["message"] == (
        f"the database is at migration 0010, this version needs {head_revision()}: "
        "run sop-engine db upgrade"
    )
    assert r.json()["checks"]["migration"] == "0010"


def test_a_database_that_does_not_answer_is_not_ready(
    engine: Engine, library: SopLibrary, clock: ManualClock
) -> None:
    runtime = Runtime(engine, library, MasterKeyring(MasterKey.generate("test")), clock)
    app = create_app(runtime)
    with TestClient(app, raise_server_exceptions=False) as c:
        _sweep_succeeds(engine, clock)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE periodic_runs")
        r = c.get("/ready")
    assert r.status_code == 503
    assert r.json() == {"error": "not_ready", "message": "the database does not answer"}


def test_a_master_key_other_than_the_databases_is_not_ready(
    engine: Engine, library: SopLibrary, clock: ManualClock
) -> None:
    check_keyring(engine, MasterKeyring(MasterKey.generate("k1")), START)  # the cluster's
    _sweep_succeeds(engine, clock)
    runtime = Runtime(engine, library, MasterKeyring(MasterKey.generate("k1")), clock)
    with TestClient(create_app(runtime), raise_server_exceptions=False) as c:
        r = c.get("/ready")
    assert r.status_code == 503
    assert r.json()["message"] == (
        "the master key with id 'k1' is not the one this database was used with: "
        "set the cluster's SOP_ENGINE_MASTER_KEY"
    )
    assert r.json()["checks"]["master_key"] == "differs"


def test_a_process_lacking_a_key_another_process_rotated_onto_is_not_ready(
    engine: Engine, library: SopLibrary, clock: ManualClock
) -> None:
    """Process A runs with k1; B starts with k2 current (k1 previous) and rotates: A cannot
    open the referrals now, and says so, until it restarts with B's ring."""
    k1, k2 = MasterKey.generate("k1"), MasterKey.generate("k2")
    old, new = MasterKeyring(k1), MasterKeyring(k2, (k1,))
    check_keyring(engine, old, START)
    _sweep_succeeds(engine, clock)
    directory = agency_directory()
    a = Runtime(engine, library, old, clock, directory=directory)
    code = a.create_referral(
        sop_key="example.corridor",
        sop_version=1,
        actor=Actor("u-cw", "caseworker", "TH-NGO-1", ("ngo",)),
        origin_country="TH",
        destination_country="LA",
        incident_at=None,
        facts={"survivor_age": 24, "survivor_name": "Synthetic Survivor 0001"},
    ).case_code

    def ready(ring: MasterKeyring) -> Any:
        runtime = Runtime(engine, library, ring, clock, directory=directory)
        with TestClient(create_app(runtime), raise_server_exceptions=False) as c:
            return c.get("/ready")

    check_keyring(engine, new, START)  # B starts: k2 recorded, nothing under it yet
    assert ready(old).status_code == 200
    assert ready(old).json()["checks"]["master_keys_in_use"] == "ok"

    rotate_case_keys(engine, new, START)  # B rotates
    r = ready(old)
    assert r.status_code == 503
    assert r.json()["message"] == (
        "stored case keys are wrapped under the master key id 'k2', which this process's "
        "SOP_ENGINE_MASTER_KEY lacks (another process runs a newer ring): restart this one "
        "with the cluster's key ring"
    )
    assert r.json()["checks"]["master_keys_in_use"] == "missing"
    # What it cannot open is MissingMasterKey: 503 to retry elsewhere (tests/api/test_errors.py).
    with pytest.raises(MissingMasterKey):
        a.read_referral(code, reveal_identifying=True)
    b = Runtime(engine, library, new, clock, directory=directory)
    opened = b.read_referral(code, reveal_identifying=True).identifying
    assert opened == {"survivor_name": "Synthetic Survivor 0001"}
    assert ready(new).status_code == 200
    assert ready(MasterKeyring(k2)).status_code == 200  # k1 retired: no case key uses it
