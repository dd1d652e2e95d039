"""Migrations 0011 (the periodic runs' leases) and 0012 (master key fingerprints) go up,
down and up again on SQLite and PostgreSQL, and what they store works after them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import Engine, inspect

from sop_engine.clock import ManualClock
from sop_engine.persistence.migrate import alembic_config, current_revision, upgrade
from sop_engine.runtime import periodic

NOW = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)


def test_0011_adds_the_periodic_runs_and_goes_down_and_up_again(empty_engine: Engine) -> None:
    upgrade(empty_engine, "0010")
    assert "periodic_runs" not in inspect(empty_engine).get_table_names()
    upgrade(empty_engine, "0011")
    assert current_revision(empty_engine) == "0011"
    lease = periodic.begin(
        empty_engine, ManualClock(NOW), "escalation-sweep", holder="h:1", length=timedelta(1)
    )
    assert isinstance(lease, periodic.Lease)
    assert lease.finish({"escalated": 1})
    assert periodic.last_success(empty_engine, "escalation-sweep") == NOW

    with empty_engine.connect() as conn:
        command.downgrade(alembic_config(conn), "0010")
    assert current_revision(empty_engine) == "0010"
    assert "periodic_runs" not in inspect(empty_engine).get_table_names()
    upgrade(empty_engine, "0011")
    assert periodic.last_success(empty_engine, "escalation-sweep") is None


def test_0012_adds_the_master_key_fingerprints_and_goes_down_and_up_again(
    empty_engine: Engine,
) -> None:
    from sop_engine.crypto import MasterKey, MasterKeyring
    from sop_engine.master_keys import check_keyring, mismatched

    upgrade(empty_engine, "0012")
    key = MasterKeyring(MasterKey.generate("k1"))
    check_keyring(empty_engine, key, NOW)
    assert mismatched(empty_engine, MasterKeyring(MasterKey.generate("k1"))) == ["k1"]
    with empty_engine.connect() as conn:
        command.downgrade(alembic_config(conn), "0011")
    assert "master_key_fingerprints" not in inspect(empty_engine).get_table_names()
    upgrade(empty_engine)
    assert mismatched(empty_engine, MasterKeyring(MasterKey.generate("k1"))) == []
