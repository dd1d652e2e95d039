"""Alembic's environment: runs the revisions on the connection it is given.

:mod:`sop_engine.persistence.migrate` passes a connection in
``config.attributes["connection"]``; without one, an engine is made from the
``sqlalchemy.url`` option. Unless the caller already holds a transaction, every revision to
apply runs in one transaction, so that a failed upgrade leaves the schema as it was:

- on PostgreSQL, under an advisory lock, so that processes starting together upgrade one
  after the other instead of racing to create the same tables;
- on SQLite (whose DDL is transactional with :func:`~sop_engine.persistence.db.make_engine`'s
  ``BEGIN IMMEDIATE``), with foreign keys switched off while batch operations copy and drop
  tables, and checked before the commit. With foreign keys on, dropping ``referrals`` to
  rebuild it would cascade into ``case_keys`` and erase every case.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import JSON, Connection
from sqlalchemy.dialects.postgresql import JSONB

from sop_engine.persistence import tables
from sop_engine.persistence.db import make_engine
from sop_engine.persistence.tables import UtcDateTime

config = context.config
target_metadata = tables.metadata

MIGRATION_LOCK = 0x50E0_0001
"""PostgreSQL advisory lock key held while migrating."""


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Write our column types as the types the database holds, so that a revision never
    imports the tables module it will outlive, and JSON as JSONB on PostgreSQL without the
    unimportable ``astext_type=Text()`` Alembic writes by default."""
    if type_ != "type":
        return False
    if isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    if isinstance(obj, JSON) and isinstance(obj._variant_mapping.get("postgresql"), JSONB):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return "sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')"
    return False


def run_migrations(connection: Connection) -> None:
    if connection.in_transaction():
        if _sqlite_foreign_keys_on(connection):
            raise RuntimeError(
                "migrating SQLite inside the caller's transaction would run batch operations "
                "with foreign keys on; pass a connection that has not begun"
            )
        _configure_and_run(connection)
        return
    with _sqlite_foreign_keys_off(connection), connection.begin():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        _configure_and_run(connection)
        if connection.dialect.name == "sqlite":
            _check_foreign_keys(connection)


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


@contextmanager
def _sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    """SQLite ignores this pragma inside a transaction: set it on the driver's connection,
    before SQLAlchemy begins, and set it back after the commit or rollback."""
    if connection.dialect.name != "sqlite":
        yield
        return
    cursor = connection.connection.cursor()
    cursor.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def _sqlite_foreign_keys_on(connection: Connection) -> bool:
    if connection.dialect.name != "sqlite":
        return False
    return bool(connection.exec_driver_sql("PRAGMA foreign_keys").scalar())


def _check_foreign_keys(connection: Connection) -> None:
    broken = sorted({row[0] for row in connection.exec_driver_sql("PRAGMA foreign_key_check")})
    if broken:
        raise RuntimeError(
            "the migration left rows whose foreign keys point nowhere, in: " + ", ".join(broken)
        )


def run_migrations_offline() -> None:
    """Write the SQL to a file instead of running it (``alembic upgrade --sql``)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection in config.attributes and no sqlalchemy.url option")
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
