"""Migrations build exactly the tables :mod:`sop_engine.persistence.tables` describes, on
SQLite and on PostgreSQL, and upgrading is safe to repeat, to run from several processes at
once, and to extend."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select

from sop_engine.persistence import tables
from sop_engine.persistence.db import make_engine
from sop_engine.persistence.migrate import (
    MIGRATIONS,
    alembic_config,
    current_revision,
    head_revision,
    upgrade,
)

UPGRADE_IN_A_PROCESS = """
import sys
from sop_engine.persistence.db import make_engine
from sop_engine.persistence.migrate import upgrade

engine = make_engine(sys.argv[1])
upgrade(engine)
engine.dispose()
"""

REBUILD_REFERRALS = """
import sqlalchemy as sa
from alembic import op

revision = "0002_test"
down_revision = "{head}"


def upgrade():
    with op.batch_alter_table("referrals", recreate="always") as batch_op:
        batch_op.add_column(sa.Column("test_only", sa.Integer(), nullable=True))
"""


FAIL_HALFWAY = """
import sqlalchemy as sa
from alembic import op

revision = "0002_test"
down_revision = "{head}"


def upgrade():
    op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))
    raise RuntimeError("this revision fails halfway")
"""


def upgrade_with_extra_revision(engine: Engine, tmp_path: Path, source: str) -> None:
    """Run the shipped revisions plus one more, written from ``source``, to head."""
    scripts = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    revision = scripts / "versions" / "0002_test.py"
    revision.write_text(source.format(head=head_revision()))
    with engine.connect() as connection:
        config = alembic_config(connection)
        config.set_main_option("script_location", str(scripts))
        command.upgrade(config, "head")


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def empty_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty database, SQLite then PostgreSQL."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


def test_the_migrated_schema_is_the_tables_schema(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, tables.metadata)
    assert differences == []


def test_every_table_is_created(engine: Engine) -> None:
    created = set(inspect(engine).get_table_names())
    assert created == {*tables.metadata.tables, "alembic_version"}


def test_upgrade_reaches_head_and_repeating_it_changes_nothing(empty_url: str) -> None:
    engine = make_engine(empty_url)
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        upgrade(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_processes_starting_together_all_find_the_schema_at_head(empty_url: str) -> None:
    """Several API processes may run ``upgrade`` at start-up on one empty database: the
    first migrates, the others wait (advisory lock, or SQLite's write lock) and find the work
    done, instead of failing to create tables that now exist."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", UPGRADE_IN_A_PROCESS, empty_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outcomes = [(process.wait(timeout=60), *process.communicate()) for process in processes]
    assert [code for code, _, _ in outcomes] == [0, 0, 0], outcomes
    engine = make_engine(empty_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_threads_of_one_process_upgrade_one_at_a_time(empty_url: str) -> None:
    engines = [make_engine(empty_url) for _ in range(3)]
    start = threading.Barrier(len(engines))
    failures: list[BaseException] = []

    def start_up(engine: Engine) -> None:
        try:
            start.wait()
            upgrade(engine)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=start_up, args=(engine,)) for engine in engines]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert current_revision(engines[0]) == head_revision()
    finally:
        for engine in engines:
            engine.dispose()


def test_a_revision_rebuilding_referrals_on_sqlite_keeps_every_case_key(
    tmp_path: Path, sqlite_engine: Engine, new_referral: Callable[..., dict[str, Any]]
) -> None:
    """Regression guard: a batch operation on SQLite copies ``referrals`` and drops the
    original. With foreign keys on, that drop cascades into ``case_keys`` and would
    crypto-shred every case; migrations run with foreign keys off, checked before commit."""
    with sqlite_engine.begin() as connection:
        connection.execute(tables.referrals.insert(), new_referral(id="r-1"))
        connection.execute(
            tables.case_keys.insert().values(
                referral_id="r-1",
                master_key_id="k1",
                wrapped_key=b"\1" * 40,
                created_at=datetime.now(UTC),
            )
        )

    upgrade_with_extra_revision(sqlite_engine, tmp_path, REBUILD_REFERRALS)

    with sqlite_engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(tables.case_keys)).scalar() == 1
        assert "test_only" in {c["name"] for c in inspect(connection).get_columns("referrals")}
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_a_failing_revision_leaves_the_schema_as_it_was(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="fails halfway"):
        upgrade_with_extra_revision(engine, tmp_path, FAIL_HALFWAY)
    assert "half_done" not in inspect(engine).get_table_names()
    assert current_revision(engine) == head_revision()


def test_migrating_sqlite_inside_a_begun_transaction_is_refused(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with (
            engine.connect() as connection,
            connection.begin(),
            pytest.raises(RuntimeError, match="foreign keys on"),
        ):
            command.upgrade(alembic_config(connection), "head")
    finally:
        engine.dispose()


def test_prepare_migrates_or_refuses_a_database_behind_this_version(
    empty_engine: Engine,
) -> None:
    from sop_engine.errors import ConfigurationError
    from sop_engine.persistence.migrate import prepare

    message = rf"the database is at migration \(none\), this version needs {head_revision()}"
    with pytest.raises(ConfigurationError, match=message):
        prepare(empty_engine, migrate=False)
    assert current_revision(empty_engine) is None  # refused, not migrated
    upgrade(empty_engine, "0010")
    with pytest.raises(ConfigurationError, match=r"at migration 0010, .*sop-engine db upgrade"):
        prepare(empty_engine, migrate=False)
    prepare(empty_engine, migrate=True)
    assert current_revision(empty_engine) == head_revision()
    prepare(empty_engine, migrate=False)  # at the head: nothing to say
