"""Schema migrations, applied from code: ``upgrade(engine)`` is what ``sop-engine db upgrade``
and the service's start-up run. The Alembic scripts ship in the package
(:mod:`sop_engine.persistence.migrations`); no ``alembic.ini`` is needed.
"""

from __future__ import annotations

import threading
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

__all__ = [
    "MIGRATIONS",
    "alembic_config",
    "current_revision",
    "head_revision",
    "prepare",
    "upgrade",
]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
"""The Alembic script folder: ``env.py``, ``script.py.mako`` and ``versions/``."""

_ALEMBIC = threading.Lock()
"""Alembic keeps the running migration's context in a module global: one at a time."""


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for the shipped scripts, running on ``connection`` if given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database's schema to ``revision``, in one transaction; a no-op when it is
    there already. Safe to run from several processes, and threads, at once."""
    with _ALEMBIC, engine.connect() as connection:
        command.upgrade(alembic_config(connection), revision)


def prepare(engine: Engine, *, migrate: bool) -> None:
    """Make ready the database a process starts on: migrate it (``migrate``: a laptop's
    embedded default, where one process does everything), or check that ``sop-engine db
    upgrade`` has brought it to this version's migrations (production, where migrating is
    one step of an upgrade, run once, never a side effect of a process starting).

    :raises ConfigurationError: not ``migrate`` and the database is not at the head.
    """
    if migrate:
        upgrade(engine)
        return
    from sop_engine.errors import ConfigurationError  # noqa: PLC0415

    found, head = current_revision(engine), head_revision()
    if found != head:
        raise ConfigurationError(
            f"the database is at migration {found or '(none)'}, this version needs {head}: "
            "run sop-engine db upgrade first (in production no other process migrates)"
        )


def current_revision(bind: Engine | Connection) -> str | None:
    """The revision the database is at, or ``None`` before the first upgrade; read on
    ``bind``'s connection when it is one (a read transaction, say)."""
    if isinstance(bind, Connection):
        return MigrationContext.configure(bind).get_current_revision()
    with bind.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@cache
def head_revision() -> str:
    """The newest revision shipped with this version of the engine."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migration scripts in {MIGRATIONS / 'versions'}")
    return head
