"""Fixtures shared by every test package.

Databases: ``sqlite_engine`` and ``postgres_engine`` are migrated engines on a fresh database
for each test; ``engine`` runs a test once on each. SQLite databases are copies of one file
migrated once per test process (copying it takes a millisecond, migrating a quarter of a
second); migrations themselves are tested on empty databases (``tests/persistence``).
PostgreSQL tests use the server at ``SOP_ENGINE_TEST_POSTGRES_URL`` (default: the local one,
database ``test``): ``postgres_url`` is an empty schema of the test's own, ``postgres_engine``
a database with no rows, copied once per test process from one migrated once per test
process and emptied after each test. They are skipped when the server cannot be reached,
except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from filelock import FileLock
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence.db import make_engine
from sop_engine.persistence.migrate import upgrade
from sop_engine.persistence.tables import metadata
from tests.shipped import shipped_library
from workflows.server import LocalPrefectServer

ROOT = Path(__file__).resolve().parents[1]

if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
    # Set on some machines (CI's among them): every process the suite starts (the parallel
    # workers, the servers, the children of the concurrency tests) would compile every module
    # it imports anew, seconds each. Here they compile each once, as Python does by default.
    sys.dont_write_bytecode = False

_T = TypeVar("_T")

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """One parallel worker more than there are cores (``-n auto``): the slow tests spend most
    of their time waiting on the servers and workers they started (a Prefect server's start,
    a sweep interval, a lease running out), and the extra worker runs short tests meanwhile.
    Measured on 2 cores with the whole suite: 3 workers 5 min 9 s, 2 workers 5 min 45 s."""
    return (os.cpu_count() or 1) + 1


LONGEST = (
    "tests/workflows/test_topology.py",
    "tests/workflows/test_recovery.py",
    "tests/workflows/test_worker.py",
    "tests/bench/test_bench.py",
    "tests/test_stopping.py",
)
"""The modules of the slow tests that take longest (measured: 60 to 105 s each, mostly spent
waiting on the servers and workers they start), longest first."""


def _length_rank(item: pytest.Item) -> int:
    path = item.path.relative_to(ROOT).as_posix()
    return LONGEST.index(path) if path in LONGEST else len(LONGEST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first, the longest first, each followed by two short ones. The parallel
    workers (pytest-xdist) take tests in this order, one at a time (``--maxschedchunk 1`` in
    pyproject.toml), each holding one test in hand beside the one it runs: so the long waits
    start at once side by side while the short tests fill the cores around them, and a slow
    test is rarely the one held behind another slow one. Slow tests started last ran alone at
    the end (in xdist's default chunks of consecutive tests, one worker received every slow
    test and ran them one after another for 5 minutes while the other had long finished)."""
    slow = sorted((i for i in items if i.get_closest_marker("slow")), key=_length_rank)
    short = [i for i in items if not i.get_closest_marker("slow")]
    order: list[pytest.Item] = []
    for item in slow:
        order += [item, *short[:2]]
        del short[:2]
    items[:] = [*order, *short]


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def library() -> SopLibrary:
    """The shipped SOP library (:func:`tests.shipped.shipped_library`)."""
    return shipped_library()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'db' / 'sop_engine.sqlite3'}"


@pytest.fixture(scope="session")
def migrated_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database at the migrations' head. Closing its last connection checkpoints the
    write-ahead log into the file and removes it, so that the file alone holds the schema."""
    path = tmp_path_factory.mktemp("migrated") / "sop_engine.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    leftovers = [p.name for p in path.parent.iterdir() if p != path]
    assert not leftovers, f"the migrated database left {leftovers} beside it"
    return path


@pytest.fixture(scope="session")
def prefect_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Prefect server's SQLite database at Prefect's migrations' head, made once per test
    run and shared by the parallel workers (under a file lock). A test that starts a Prefect
    server and is not about its first start copies it into the server's home with
    :func:`seed_prefect_home`: a server on it answers after 5 s of CPU, against 10 s on an
    empty one, which spends half of it migrating."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the controller's folder, which every worker's folder is in
    path = base / "prefect-template" / "prefect.db"
    with FileLock(base / "prefect-template.lock"):
        if not path.is_file():
            path.parent.mkdir(exist_ok=True)
            partial = path.with_suffix(".partial")
            env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
            env["PREFECT_HOME"] = str(path.parent)
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{partial}"
            command = [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            assert done.returncode == 0, f"{command} failed:\n{done.stdout}{done.stderr}"
            partial.rename(path)
    return path


def seed_prefect_home(home: Path, database: Path) -> Path:
    """Put a copy of ``database`` (:func:`prefect_database`) where a local Prefect server
    whose home is ``home`` keeps its own (``LocalPrefectServer.database_path``)."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copyfile(database, LocalPrefectServer(home).database_path)
    return home


@pytest.fixture
def sqlite_engine(sqlite_url: str, migrated_sqlite_file: Path) -> Iterator[Engine]:
    """A migrated engine on a fresh SQLite file: a copy of :func:`migrated_sqlite_file`."""
    target = Path(str(make_url(sqlite_url).database))
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copyfile(migrated_sqlite_file, target)
    target.chmod(0o600)  # as the engine makes its files (copyfile leaves the umask's mode)
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Engine]:
    """An engine on the test server's database, for creating and dropping schemas."""
    url = make_url(os.environ.get("SOP_ENGINE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    admin = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except SQLAlchemyError as exc:
        admin.dispose()
        shown = url.render_as_string(hide_password=True)
        message = f"PostgreSQL not reachable at {shown}: {getattr(exc, 'orig', exc)}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    yield admin
    admin.dispose()


@pytest.fixture
def postgres_url(postgres_server: Engine) -> Iterator[str]:
    """A URL whose connections work in a fresh schema, dropped after the test."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    with postgres_server.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url: URL = postgres_server.url.update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with postgres_server.begin() as connection:
        connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


def _autocommit(admin: Engine, statement: str) -> None:
    """``CREATE DATABASE`` and ``DROP DATABASE`` cannot run inside a transaction."""
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql(statement)


@pytest.fixture(scope="session")
def postgres_template(postgres_server: Engine) -> Iterator[str]:
    """The name of a database at the migrations' head, migrated once per test process, from
    which each test's database is copied (``CREATE DATABASE ... TEMPLATE``: a tenth of a
    second, against half a second to migrate)."""
    name = f"sop_template_{uuid.uuid4().hex[:12]}"
    _autocommit(postgres_server, f'CREATE DATABASE "{name}"')
    try:
        engine = make_engine(postgres_server.url.set(database=name).render_as_string(False))
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        yield name
    finally:
        _autocommit(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_SHAPE = """
SELECT md5(coalesce(string_agg(
           n.nspname || '.' || c.relname || ':' || c.relkind::text || ':' || coalesce(a.attname, '')
           || ':' || coalesce(a.atttypid::text, ''), ',' ORDER BY n.nspname, c.relname, a.attnum
       ), '')) || ':' || (SELECT coalesce(string_agg(version_num, ','), '') FROM alembic_version)
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
"""
"""A digest of a database's schema (every relation of every schema, with its columns) and of
its migration revision: whether a test changed more than rows."""

_OTHERS = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid()
"""

_RESTART_SEQUENCES = """
SELECT setval(c.oid::regclass, 1, false) FROM pg_class c
 WHERE c.relkind = 'S' AND c.relnamespace = 'public'::regnamespace
"""


class _ReusedDatabase:
    """One database per test process, copied from the template once and emptied after each
    test: its other connections ended, every row deleted (children before parents), its
    sequences restarted. Copying a database and dropping it cost PostgreSQL about 0.1 s of
    CPU and a flush of the whole copy to disk each, for each of some 500 tests: a fifth of
    the CPU of the suite. A test that changed more than rows (a downgrade, a table of its
    own) leaves a schema of another shape, and the database is dropped and copied anew."""

    def __init__(self, admin: Engine, template: str) -> None:
        self.admin, self.template = admin, template
        self.name: str | None = None
        self.shape = ""

    def url(self) -> str:
        if self.name is None:
            self.name = f"sop_test_{uuid.uuid4().hex[:12]}"
            _autocommit(self.admin, f'CREATE DATABASE "{self.name}" TEMPLATE "{self.template}"')
            self.shape = self._with(lambda c: str(c.exec_driver_sql(_SHAPE).scalar_one()))
        return self.admin.url.set(database=self.name).render_as_string(hide_password=False)

    def empty(self) -> None:
        """Ready the database for the next test, or drop it when its shape changed."""
        if self.name is None:
            return
        try:
            if self._with(self._emptied):
                return
        except SQLAlchemyError:  # a test left it unreadable (no alembic_version, say)
            pass
        self.drop()

    def drop(self) -> None:
        if self.name is not None:
            _autocommit(self.admin, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self.name = None

    def _emptied(self, connection: Connection) -> bool:
        connection.exec_driver_sql(_OTHERS)
        if connection.exec_driver_sql(_SHAPE).scalar_one() != self.shape:
            connection.rollback()
            return False
        for table in reversed(metadata.sorted_tables):
            connection.execute(table.delete())
        connection.exec_driver_sql(_RESTART_SEQUENCES)
        connection.commit()
        return True

    def _with(self, work: Callable[[Connection], _T]) -> _T:
        assert self.name is not None
        url = self.admin.url.set(database=self.name)
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                return work(connection)
        finally:
            engine.dispose()


@pytest.fixture(scope="session")
def _postgres_database(
    postgres_server: Engine, postgres_template: str
) -> Iterator[_ReusedDatabase]:
    database = _ReusedDatabase(postgres_server, postgres_template)
    yield database
    database.drop()


@pytest.fixture
def postgres_engine(_postgres_database: _ReusedDatabase) -> Iterator[Engine]:
    """A migrated engine on a database with no rows, of this test process's own: a copy of
    :func:`postgres_template`, emptied after each test (:class:`_ReusedDatabase`)."""
    engine = make_engine(_postgres_database.url())
    yield engine
    engine.dispose()
    _postgres_database.empty()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def engine(request: pytest.FixtureRequest) -> Engine:
    """A migrated engine on SQLite, then on PostgreSQL: the test runs once on each."""
    fixture = "sqlite_engine" if request.param == "sqlite" else "postgres_engine"
    engine: Engine = request.getfixturevalue(fixture)
    return engine
