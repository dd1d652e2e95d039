"""Database engines: SQLite in WAL mode on a laptop, PostgreSQL in production.

:func:`make_engine` is the one place that turns a URL into an engine, so that every engine
of the process behaves the same way:

- **SQLite.** A missing folder for the file is made private to its owner (0700): the
  database holds case data. Each new connection turns on WAL (file databases),
  ``synchronous=NORMAL``, foreign keys and a 10 s busy timeout. Every transaction starts
  with ``BEGIN IMMEDIATE`` (SQLAlchemy's documented recipe for pysqlite: the driver's own
  ``BEGIN`` is switched off and a ``begin`` listener emits ours). A transaction therefore
  takes the write lock when it starts, waiting up to the busy timeout for it, instead of
  reading first and failing with "database is locked" (or losing an update) when it comes
  to write; concurrent writers serialize. Read-only transactions take the lock too, so
  transactions must stay short. The same recipe makes DDL transactional, which
  migrations rely on.
- **PostgreSQL** through psycopg 3, with ``pool_pre_ping`` so that connections dropped by the
  server or a proxy are replaced instead of failing the next request. ``postgresql://``
  URLs are read as ``postgresql+psycopg://``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import ConnectionPoolEntry

from sop_engine.errors import ConfigurationError

__all__ = ["default_database_url", "is_postgres", "is_sqlite", "make_engine"]

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

    :raises ConfigurationError: for any other kind of database. The message names the URL's
        scheme only, so that a password in it is never shown.
    """
    parsed = make_url(url)
    backend, _, driver = parsed.drivername.partition("+")
    if backend in _POSTGRES_ALIASES:
        parsed = parsed.set(drivername=f"postgresql+{driver or 'psycopg'}")
        return create_engine(parsed, echo=echo, pool_pre_ping=True)
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return _sqlite_engine(parsed, echo=echo)
    raise ConfigurationError(
        f"unsupported database '{parsed.drivername}': use sqlite:///PATH or "
        "postgresql://USER@HOST/DATABASE"
    )


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def _sqlite_engine(url: URL, *, echo: bool) -> Engine:
    in_memory = _is_memory(url)
    if url.database and not in_memory and not _is_uri(url):
        Path(url.database).expanduser().parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Switch off pysqlite's own transaction handling, which begins only before DML and
        # so cannot begin IMMEDIATE transactions; the "begin" listener below takes over.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _is_uri(url: URL) -> bool:
    return str(url.query.get("uri", "")).lower() in ("true", "1")


def _is_memory(url: URL) -> bool:
    if url.database in _MEMORY_DATABASES:
        return True
    return _is_uri(url) and url.query.get("mode") == "memory"
