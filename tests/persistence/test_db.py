"""Engines as the service uses them: SQLite in WAL mode whose writers wait their turn, and
PostgreSQL from a plain ``postgresql://`` URL."""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sop_engine.errors import ConfigurationError
from sop_engine.persistence.db import default_database_url, is_postgres, is_sqlite, make_engine
from sop_engine.persistence.models import CaseKey, Referral


def test_the_default_database_is_an_absolute_sqlite_file_in_the_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_database_url(Path("data")) == f"sqlite:///{tmp_path}/data/sop_engine.sqlite3"


def test_a_sqlite_file_gets_its_folder_wal_and_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/not/yet/there.sqlite3")
    try:
        with engine.connect() as connection:
            pragmas = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
        assert pragmas == {
            "journal_mode": "wal",
            "synchronous": 1,  # NORMAL
            "foreign_keys": 1,
            "busy_timeout": 10_000,
        }
        assert (tmp_path / "not" / "yet" / "there.sqlite3").exists()
        assert stat.S_IMODE((tmp_path / "not" / "yet").stat().st_mode) == 0o700
        assert is_sqlite(engine)
        assert not is_postgres(engine)
    finally:
        engine.dispose()


def test_an_in_memory_sqlite_database_works_without_wal() -> None:
    engine = make_engine("sqlite://")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "memory"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_sqlite_refuses_a_row_pointing_at_no_referral(sqlite_engine: Engine) -> None:
    with Session(sqlite_engine) as session:
        session.add(
            CaseKey(
                referral_id="no-such-referral",
                master_key_id="k1",
                wrapped_key=b"\0" * 40,
                created_at=datetime.now(UTC),
            )
        )
        with pytest.raises(IntegrityError, match="FOREIGN KEY"):
            session.commit()


def test_every_sqlite_transaction_begins_immediate(sqlite_engine: Engine) -> None:
    statements: list[str] = []
    with sqlite_engine.connect() as connection:
        sqlite = connection.connection.driver_connection
        assert sqlite is not None
        sqlite.set_trace_callback(statements.append)
        connection.execute(select(func.count()).select_from(Referral)).scalar()
        connection.rollback()
    assert statements[0] == "BEGIN IMMEDIATE"


def test_concurrent_sqlite_writers_take_turns_instead_of_failing(
    sqlite_engine: Engine, new_referral: Callable[..., Referral]
) -> None:
    """Each writer reads the referral, pauses, then writes it back: the read-then-write
    pattern of ``fire``. With pysqlite's own transactions the read runs outside any
    transaction and half the changes are lost; with a deferred ``BEGIN`` one writer fails
    with "database is locked" when it upgrades to a write. ``BEGIN IMMEDIATE`` makes the
    second writer wait until the first commits, so every change lands."""
    referral_id = "r-1"
    with Session(sqlite_engine) as session, session.begin():
        session.add(new_referral(id=referral_id))
    rounds = 15
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def bump_version() -> None:
        try:
            start.wait()
            for _ in range(rounds):
                with Session(sqlite_engine) as session, session.begin():
                    row = session.get_one(Referral, referral_id)
                    time.sleep(0.002)
                    row.version += 1
        except BaseException as exc:
            failures.append(exc)

    writers = [threading.Thread(target=bump_version) for _ in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    assert failures == []
    with Session(sqlite_engine) as session:
        assert session.get_one(Referral, referral_id).version == 1 + 2 * rounds


@pytest.mark.postgres
def test_a_plain_postgresql_url_uses_psycopg_and_checks_connections(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+psycopg://")
    engine = make_engine(postgres_url.replace("postgresql+psycopg://", "postgresql://", 1))
    try:
        assert engine.url.drivername == "postgresql+psycopg"
        assert engine.pool._pre_ping
        assert is_postgres(engine)
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        engine.dispose()


def test_other_databases_are_refused_without_showing_the_password() -> None:
    with pytest.raises(ConfigurationError, match="unsupported database 'mysql'") as info:
        make_engine("mysql://admin:hunter2@db.example/sop")
    assert "hunter2" not in str(info.value)
