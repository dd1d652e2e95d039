"""Engines as the service uses them: SQLite in WAL mode whose writers wait their turn and
whose readers wait for nobody, and PostgreSQL from a plain ``postgresql://`` URL; on both,
a read transaction refuses to write."""

from __future__ import annotations

import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from sop_engine.errors import ConfigurationError
from sop_engine.persistence import tables
from sop_engine.persistence.db import (
    _turn_on_wal,
    default_database_url,
    is_postgres,
    is_sqlite,
    make_engine,
    read_transaction,
)

WAIT = 30.0
"""Seconds a thread or event waits before the test fails instead of hanging."""

_R = tables.referrals


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


class RefusingCursor:
    """A real sqlite3 cursor whose first ``refusals`` statements fail as SQLite fails one of
    two connections turning a new file to WAL at once: "database is locked", at once."""

    def __init__(self, cursor: sqlite3.Cursor, refusals: int, message: str) -> None:
        self.cursor, self.refusals, self.message = cursor, refusals, message
        self.tries = 0

    def execute(self, statement: str) -> sqlite3.Cursor:
        self.tries += 1
        if self.tries <= self.refusals:
            raise sqlite3.OperationalError(self.message)
        return self.cursor.execute(statement)


def test_turning_on_wal_is_tried_again_while_another_connection_switches_the_file(
    tmp_path: Path,
) -> None:
    """Several processes starting on one new file (the CI's migration test failed once so)
    each turn it to WAL; SQLite can refuse one of them without waiting."""
    connection = sqlite3.connect(tmp_path / "new.sqlite3")
    try:
        cursor = RefusingCursor(connection.cursor(), 3, "database is locked")
        _turn_on_wal(cursor)
        assert cursor.tries == 4
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        other = RefusingCursor(connection.cursor(), 1, "disk I/O error")
        with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
            _turn_on_wal(other)
        assert other.tries == 1
    finally:
        connection.close()


def test_an_in_memory_sqlite_database_works_without_wal() -> None:
    engine = make_engine("sqlite://")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "memory"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_sqlite_refuses_a_row_pointing_at_no_referral(sqlite_engine: Engine) -> None:
    orphan = tables.case_keys.insert().values(
        referral_id="no-such-referral",
        master_key_id="k1",
        wrapped_key=b"\0" * 40,
        created_at=datetime.now(UTC),
    )
    with sqlite_engine.connect() as connection, pytest.raises(IntegrityError, match="FOREIGN KEY"):
        connection.execute(orphan)


def _traced(engine: Engine, run: Callable[[Engine], None]) -> list[str]:
    """The statements SQLite ran for ``run``, on one pooled connection."""
    statements: list[str] = []
    with engine.connect() as connection:
        sqlite = connection.connection.driver_connection
        assert sqlite is not None
        sqlite.set_trace_callback(statements.append)
    try:
        run(engine)
    finally:
        with engine.connect() as connection:
            sqlite = connection.connection.driver_connection
            assert sqlite is not None
            sqlite.set_trace_callback(None)
    return statements


def _count_referrals(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(select(func.count()).select_from(_R)).scalar()


def _read_referrals(engine: Engine) -> None:
    with read_transaction(engine) as connection:
        connection.execute(select(func.count()).select_from(_R)).scalar()


def test_writers_begin_immediate_and_readers_deferred_under_query_only(
    sqlite_engine: Engine,
) -> None:
    sqlite_engine.pool.dispose()  # one connection, handed to each transaction in turn
    writes = _traced(sqlite_engine, _count_referrals)
    assert writes[0] == "BEGIN IMMEDIATE"
    reads = _traced(sqlite_engine, _read_referrals)
    assert reads[:2] == ["PRAGMA query_only=ON", "BEGIN"]
    again = _traced(sqlite_engine, _read_referrals)
    assert again[0] == "BEGIN"  # the connection is a reader already
    back = _traced(sqlite_engine, _count_referrals)
    assert back[:2] == ["PRAGMA query_only=OFF", "BEGIN IMMEDIATE"]
    with sqlite_engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA query_only").scalar() == 0


def test_a_read_transaction_refuses_to_write(
    engine: Engine, new_referral: Callable[..., dict[str, Any]]
) -> None:
    with engine.begin() as connection:
        connection.execute(_R.insert(), new_referral(id="r-x"))
    with read_transaction(engine) as connection, pytest.raises(DBAPIError) as refused:
        connection.execute(delete(_R).where(_R.c.id == "r-x"))
    assert "readonly" in str(refused.value).replace("-", "").replace(" ", "").lower()
    with engine.begin() as connection:  # the connection writes again after
        connection.execute(_R.insert(), new_referral(id="r-y"))
    with read_transaction(engine) as connection:
        codes = connection.scalars(select(_R.c.id)).all()
    assert sorted(codes) == ["r-x", "r-y"]


@pytest.mark.postgres
def test_a_postgresql_read_is_one_read_only_snapshot(postgres_engine: Engine) -> None:
    with read_transaction(postgres_engine) as connection:
        settings = [
            connection.exec_driver_sql(f"SHOW {name}").scalar()
            for name in ("transaction_read_only", "transaction_isolation")
        ]
    assert settings == ["on", "repeatable read"]
    with postgres_engine.begin() as connection:  # the pooled connection is reset after
        settings = [
            connection.exec_driver_sql(f"SHOW {name}").scalar()
            for name in ("transaction_read_only", "transaction_isolation")
        ]
    assert settings == ["off", "read committed"]


def test_a_sqlite_reader_neither_waits_for_a_writer_nor_makes_it_wait(
    sqlite_engine: Engine, new_referral: Callable[..., dict[str, Any]]
) -> None:
    """A writer holds the write lock with an uncommitted insert; readers in other threads
    answer at once from the last committed snapshot, and the writer commits while a reader's
    transaction is still open. With ``BEGIN IMMEDIATE`` for reads, each reader would wait
    for the lock until the busy timeout and fail with "database is locked"."""
    with sqlite_engine.begin() as connection:
        connection.execute(_R.insert(), new_referral(id="r-1"))
    writing, read, committed = threading.Event(), threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        try:
            with sqlite_engine.begin() as connection:
                connection.execute(_R.insert(), new_referral(id="r-2"))
                writing.set()
                assert read.wait(WAIT), "the reader never answered"
            committed.set()
        except BaseException as exc:
            failures.append(exc)
            writing.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert writing.wait(WAIT)
    with read_transaction(sqlite_engine) as connection:
        before = connection.scalars(select(_R.c.id)).all()
        read.set()
        assert committed.wait(WAIT), "the writer could not commit while a reader read"
        still = connection.scalars(select(_R.c.id)).all()  # the same snapshot
    writer.join(WAIT)
    assert failures == []
    assert before == still == ["r-1"]
    with read_transaction(sqlite_engine) as connection:
        assert sorted(connection.scalars(select(_R.c.id))) == ["r-1", "r-2"]


def test_concurrent_sqlite_writers_take_turns_instead_of_failing(
    sqlite_engine: Engine, new_referral: Callable[..., dict[str, Any]]
) -> None:
    """Each writer reads the referral, pauses, then writes it back: the read-then-write
    pattern of ``fire``. With pysqlite's own transactions the read runs outside any
    transaction and half the changes are lost; with a deferred ``BEGIN`` one writer fails
    with "database is locked" when it upgrades to a write. ``BEGIN IMMEDIATE`` makes the
    second writer wait until the first commits, so every change lands."""
    referral_id = "r-1"
    with sqlite_engine.begin() as connection:
        connection.execute(_R.insert(), new_referral(id=referral_id))
    rounds = 15
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def bump_version() -> None:
        try:
            start.wait()
            for _ in range(rounds):
                with sqlite_engine.begin() as connection:
                    version = connection.execute(
                        select(_R.c.version).where(_R.c.id == referral_id)
                    ).scalar_one()
                    time.sleep(0.002)
                    connection.execute(
                        update(_R).where(_R.c.id == referral_id).values(version=version + 1)
                    )
        except BaseException as exc:
            failures.append(exc)

    writers = [threading.Thread(target=bump_version) for _ in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    assert failures == []
    with sqlite_engine.connect() as connection:
        version = connection.execute(select(_R.c.version).where(_R.c.id == referral_id))
        assert version.scalar_one() == 1 + 2 * rounds


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
