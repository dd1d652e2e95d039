"""Every server error is logged with its cause, and never with a value: on SQLite and on
PostgreSQL, whose messages echo parameters (``Key (name)=(...) already exists``)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from api.causes import cause_of
from api.errors import install

from .conftest import SURVIVOR, Users


def _duplicate(db: Engine) -> DBAPIError:
    """The error of a statement inserting ``SURVIVOR`` as a key that is already there."""
    with db.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS survivors (name VARCHAR(100) PRIMARY KEY)"))
        conn.execute(text("DELETE FROM survivors"))
        conn.execute(text("INSERT INTO survivors (name) VALUES (:name)"), {"name": SURVIVOR})
    with db.connect() as conn, pytest.raises(DBAPIError) as caught:
        conn.execute(text("INSERT INTO survivors (name) VALUES (:name)"), {"name": SURVIVOR})
    assert SURVIVOR in str(caught.value)  # SQLAlchemy's own message holds the parameters
    return caught.value


def test_a_database_error_says_its_driver_code_and_statement_but_no_value(
    engine: Engine,
) -> None:
    cause = cause_of(_duplicate(engine))
    assert SURVIVOR not in cause
    assert "Nalinee" not in cause
    assert cause.startswith("sqlalchemy.exc.IntegrityError (")
    if engine.dialect.name == "postgresql":
        assert "psycopg.errors.UniqueViolation, code 23505, constraint survivors_pkey" in cause
        assert "in SQL: INSERT INTO survivors (name) VALUES (%(name)s)" in cause
    else:
        assert "sqlite3.IntegrityError, code SQLITE_CONSTRAINT_PRIMARYKEY" in cause
        assert "in SQL: INSERT INTO survivors (name) VALUES (?)" in cause
    assert "tests/api/test_causes.py:" in cause


def test_a_data_error_that_quotes_the_value_is_logged_without_it(
    postgres_engine: Engine,
) -> None:
    with postgres_engine.connect() as conn, pytest.raises(DBAPIError) as caught:
        conn.execute(text("SELECT CAST(:age AS INTEGER)"), {"age": SURVIVOR})
    assert SURVIVOR in str(caught.value.orig)  # invalid input syntax for type integer: "..."
    cause = cause_of(caught.value)
    assert SURVIVOR not in cause
    assert "psycopg.errors.InvalidTextRepresentation, code 22P02" in cause
    assert "in SQL: SELECT CAST(%(age)s AS INTEGER)" in cause


def _raised(action: Callable[[], object]) -> BaseException:
    with pytest.raises(Exception) as caught:  # noqa: PT011 (any error, to describe it)
        action()
    return caught.value


def test_other_errors_keep_their_shape_and_lose_what_may_be_values() -> None:
    cause = cause_of(_raised(lambda: int(SURVIVOR)))
    assert cause.startswith("ValueError: invalid literal for int() with base … '…' at ")
    empty: dict[str, str] = {}
    cause = cause_of(_raised(lambda: empty[SURVIVOR]))
    assert cause.startswith("KeyError: '…' at tests/api/test_causes.py:")

    def boom() -> None:
        raise RuntimeError(f"secret detail about {SURVIVOR}")

    cause = cause_of(_raised(boom))
    assert cause.startswith("RuntimeError: secret detail about … … … … at ")
    assert "in boom" in cause


def test_what_an_error_was_raised_from_is_logged_too() -> None:
    facts: dict[str, str] = {}

    def lookup() -> None:
        try:
            facts["survivor_name"]
        except KeyError as inner:
            raise LookupError("no such fact") from inner

    cause = cause_of(_raised(lookup))
    assert cause.startswith("LookupError: no such fact at ")
    assert "; from KeyError: '…' at " in cause


def test_a_server_error_is_logged_with_its_cause(
    engine: Engine, users: Users, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: the log said only "unhandled OperationalError"."""
    app = FastAPI()
    install(app)

    @app.get("/boom")
    def boom() -> None:
        _duplicate(engine)
        with engine.connect() as conn:
            conn.execute(text("INSERT INTO survivors (name) VALUES (:name)"), {"name": SURVIVOR})

    with caplog.at_level(logging.ERROR, logger="api.errors"):
        r = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert r.status_code == 500
    (record,) = [r for r in caplog.records if r.name == "api.errors"]
    line = record.getMessage()
    assert line.startswith("unhandled IntegrityError while serving a request: ")
    assert "in SQL: INSERT INTO survivors" in line
    assert "tests/api/test_causes.py:" in line
    assert "in boom" in line
    assert SURVIVOR not in line
    assert SURVIVOR not in caplog.text
