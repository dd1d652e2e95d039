"""The database of the commands: the settings' engine, and one line for a database that cannot
be used. SQLAlchemy is imported when a command asks, never with the command line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["database", "settings_engine"]


def settings_engine() -> Engine:
    """The engine of the settings' database; a setting that is unusable ends the command with
    a line naming it."""
    from pydantic import ValidationError

    from sop_engine.errors import ConfigurationError
    from sop_engine.persistence.db import make_engine
    from sop_engine.settings import get_settings

    try:
        return make_engine(get_settings().resolved_database_url())
    except ConfigurationError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    except ValidationError as exc:
        for error in exc.errors():
            name = "SOP_ENGINE_" + "_".join(str(part) for part in error["loc"]).upper()
            click.echo(f"{name}: {error['msg']}", err=True)
        sys.exit(2)


@contextmanager
def database(engine: Engine) -> Iterator[None]:
    """Report a database that cannot be reached in one line, and always close the pool."""
    from sqlalchemy.exc import OperationalError

    try:
        yield
    except OperationalError as exc:
        shown = engine.url.render_as_string(hide_password=True)
        click.echo(f"cannot use the database at {shown}: {exc.orig}", err=True)
        sys.exit(1)
    finally:
        engine.dispose()
