"""Database engines: SQLite in WAL mode on a laptop, PostgreSQL in production.

:func:`make_engine` is the one place that turns a URL into an engine, so that every engine
of the process behaves the same way, and :func:`read_transaction` the one way to read:

- **Writers** (``engine.begin()``, ``engine.connect()``). On SQLite every such transaction
  starts with ``BEGIN IMMEDIATE`` (SQLAlchemy's documented recipe for pysqlite: the driver's
  own ``BEGIN`` is switched off and a ``begin`` listener emits ours). A writer therefore
  takes the write lock when it starts, waiting up to the busy timeout for it, instead of
  reading first and failing with "database is locked" (or losing an update) when it comes
  to write; concurrent writers serialize. The writers of one process queue for the lock
  (:mod:`sop_engine.persistence.turns`) rather than poll for it. The same recipe makes DDL
  transactional, which migrations rely on.
- **Readers** (:func:`read_transaction`). On SQLite a plain (deferred) ``BEGIN`` under
  ``PRAGMA query_only``: the transaction takes no lock, reads one snapshot of the
  write-ahead log from its first statement to its end, and neither waits for a writer nor
  makes one wait. A statement that would write fails at once ("attempt to write a readonly
  database") instead of turning the reader into a writer half-way, which in WAL mode fails
  with "database is locked" whenever another writer committed since the snapshot. On
  PostgreSQL a ``REPEATABLE READ READ ONLY`` transaction: one snapshot too, and a write
  fails ("cannot execute ... in a read-only transaction"). Work that must both read and
  write (the access log of a read) reads in one transaction and writes in another, short,
  one afterwards.
- **SQLite files.** A missing folder for the file is made private to its owner (0700); an
  existing one that others may read or enter is left as the operator made it and a warning
  says so. The database file and its ``-wal`` and ``-shm`` siblings are 0600: they hold
  case data (:mod:`sop_engine.persistence.files`). Each new connection turns on WAL (file
  databases), ``synchronous=NORMAL``, foreign keys and a 10 s busy timeout. Two connections
  turning a new file to WAL at once can deadlock inside SQLite, which then fails one of them
  at once ("database is locked") without waiting in its busy handler; that switch alone is
  therefore tried again, after short sleeps, until the busy timeout.
- **PostgreSQL** through psycopg 3, with ``pool_pre_ping`` so that connections dropped by the
  server or a proxy are replaced instead of failing the next request. ``postgresql://``
  URLs are read as ``postgresql+psycopg://``.
"""

from __future__ import annotations

import sqlite3
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import ConnectionPoolEntry

from sop_engine.errors import ConfigurationError
from sop_engine.persistence.files import make_private
from sop_engine.persistence.turns import WriterTurns

__all__ = [
    "READ_ONLY",
    "default_database_url",
    "is_postgres",
    "is_sqlite",
    "make_engine",
    "read_transaction",
    "writer_turns",
]

READ_ONLY = "sop_engine_read_only"
"""The execution option that makes a SQLite connection's next transaction a reader."""

_TURNS: weakref.WeakKeyDictionary[Engine, WriterTurns] = weakref.WeakKeyDictionary()

BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite transaction waits for the write lock before failing."""

_POSTGRES_ALIASES = {"postgresql", "postgres"}
_MEMORY_DATABASES = {None, "", ":memory:"}


def default_database_url(data_dir: Path) -> str:
    """The embedded database: ``sqlite:///<data_dir>/sop_engine.sqlite3``, an absolute path."""
    path = data_dir.expanduser().resolve() / "sop_engine.sqlite3"
    return f"sqlite:///{path.as_posix()}"


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for a SQLite or PostgreSQL URL, set up as the module docstring describes.

    :raises ConfigurationError: for any other kind of database, and for a PostgreSQL URL
        whose driver is not installed. The message names the URL's scheme only, so that a
        password in it is never shown.
    """
    parsed = make_url(url)
    backend, _, driver = parsed.drivername.partition("+")
    if backend in _POSTGRES_ALIASES:
        parsed = parsed.set(drivername=f"postgresql+{driver or 'psycopg'}")
        try:
            return create_engine(parsed, echo=echo, pool_pre_ping=True)
        except ImportError as exc:  # the driver's module is absent: a setup fault, one line
            raise ConfigurationError(
                f"the PostgreSQL driver for '{parsed.drivername}' is not installed "
                f"({exc.name or 'its module'} cannot be imported): install the engine with "
                "its dependencies (pip install -e .), which bring psycopg, or pip install "
                "'psycopg[binary]'"
            ) from None
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return _sqlite_engine(parsed, echo=echo)
    raise ConfigurationError(
        f"unsupported database '{parsed.drivername}': use sqlite:///PATH or "
        "postgresql://USER@HOST/DATABASE"
    )


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """One read-only transaction on a connection of its own (see the module docstring):
    one snapshot, no lock, and any write in it refused.

    >>> with read_transaction(engine) as conn:          # doctest: +SKIP
    ...     conn.execute(select(...)).all()
    """
    with engine.connect() as conn:
        if is_postgres(engine):
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        else:
            conn.execution_options(**{READ_ONLY: True})
        with conn.begin():
            yield conn


def writer_turns(engine: Engine) -> WriterTurns | None:
    """The queue of a SQLite engine's writers (:mod:`sop_engine.persistence.turns`)."""
    return _TURNS.get(engine)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def _turn_on_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode=WAL``, tried again while SQLite refuses it for a deadlock with
    another connection switching the same new file (module docstring), up to the busy
    timeout; any other error, or a refusal past the timeout, is raised."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _sqlite_engine(url: URL, *, echo: bool) -> Engine:
    in_memory = _is_memory(url)
    if url.database and not in_memory and not _is_uri(url):
        make_private(Path(url.database).expanduser())
    engine = create_engine(url, echo=echo)
    turns = WriterTurns(BUSY_TIMEOUT_MS / 1000)
    _TURNS[engine] = turns

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Switch off pysqlite's own transaction handling, which begins only before DML and
        # so cannot begin IMMEDIATE transactions; the "begin" listener below takes over.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if not in_memory:
                _turn_on_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        read_only = bool(connection.get_execution_options().get(READ_ONLY, False))
        # query_only belongs to the SQLite connection, which the pool hands to readers and
        # writers in turn: set it when this transaction needs the other mode than the last.
        info = connection.connection.info
        if info.get(READ_ONLY, False) is not read_only:
            connection.exec_driver_sql(f"PRAGMA query_only={'ON' if read_only else 'OFF'}")
            info[READ_ONLY] = read_only
        if read_only:
            connection.exec_driver_sql("BEGIN")
            return
        turns.take(info)
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            turns.give_back(info)
            raise

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _on_end(connection: Connection) -> None:
        if not connection.invalidated:  # else closing its connection gave it back already
            turns.give_back(connection.connection.info)

    @event.listens_for(engine.pool, "checkin")
    @event.listens_for(engine.pool, "close")  # also when an invalidated connection is closed
    def _on_release(_dbapi_connection: Any, record: Any, *_: Any) -> None:
        if record is not None:
            turns.give_back(record.info)

    return engine


def _is_uri(url: URL) -> bool:
    return str(url.query.get("uri", "")).lower() in ("true", "1")


def _is_memory(url: URL) -> bool:
    if url.database in _MEMORY_DATABASES:
        return True
    return _is_uri(url) and url.query.get("mode") == "memory"
