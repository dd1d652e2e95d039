"""The writers of one process queue for SQLite's write lock (``sop_engine.persistence.turns``):
each waits its turn, a writer inside a writer and a writer whose turn does not come within the
busy timeout go on without one, and every way a transaction ends gives the turn back."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction, writer_turns
from sop_engine.persistence.turns import WriterTurns

WAIT = 30.0


def test_a_turn_is_taken_once_and_given_back_by_whichever_thread() -> None:
    turns = WriterTurns(timeout=0.05)
    first: dict[str, object] = {}
    assert turns.take(first)
    assert not turns.free
    assert not turns.take({})  # a writer inside a writer on the same thread: no second turn
    taken: list[bool] = []
    waiter = threading.Thread(target=lambda: taken.append(turns.take({})))
    waiter.start()
    waiter.join(WAIT)
    assert taken == [False]  # another thread waited its timeout, then went on without
    released = threading.Thread(target=turns.give_back, args=(first,))
    released.start()
    released.join(WAIT)
    turns.give_back(first)  # again: nothing more to give back
    assert turns.free
    second: dict[str, object] = {}
    assert turns.take(second)
    turns.give_back(second)
    assert turns.free


def test_writers_wait_for_the_turn_before_them(sqlite_engine: Engine) -> None:
    turns = writer_turns(sqlite_engine)
    assert turns is not None
    order: list[str] = []
    holding, waiting = threading.Event(), threading.Event()

    def second() -> None:
        waiting.set()
        with sqlite_engine.begin() as conn:
            order.append("second")
            conn.execute(select(func.count()).select_from(tables.referrals)).scalar()

    with sqlite_engine.begin() as conn:
        conn.execute(text("SELECT 1"))
        holding.set()
        other = threading.Thread(target=second)
        other.start()
        assert waiting.wait(WAIT)
        other.join(0.3)
        assert other.is_alive()  # queued behind this writer
        with read_transaction(sqlite_engine) as reader:  # readers never queue
            reader.execute(select(func.count()).select_from(tables.referrals)).scalar()
        order.append("first")
    other.join(WAIT)
    assert order == ["first", "second"]
    assert turns.free


@pytest.mark.parametrize(
    "end",
    ["commit", "exception", "rollback", "close", "invalidate", "failed statement"],
)
def test_every_way_a_writer_ends_gives_its_turn_back(
    sqlite_engine: Engine, end: str, new_referral: Callable[..., dict[str, Any]]
) -> None:
    turns = writer_turns(sqlite_engine)
    assert turns is not None
    if end == "commit":
        with sqlite_engine.begin() as conn:
            conn.execute(tables.referrals.insert(), new_referral())
    elif end == "exception":

        def fail_inside() -> None:
            with sqlite_engine.begin() as conn:
                conn.execute(text("SELECT 1"))
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            fail_inside()
    elif end == "rollback":
        conn = sqlite_engine.connect()
        conn.execute(text("SELECT 1"))
        conn.rollback()
        assert turns.free
        conn.close()
    elif end == "close":
        conn = sqlite_engine.connect()
        conn.execute(text("SELECT 1"))
        assert not turns.free
        conn.close()
    elif end == "invalidate":
        conn = sqlite_engine.connect()
        conn.execute(text("SELECT 1"))
        conn.invalidate()  # the connection is discarded, its transaction never ends
        assert turns.free
        conn.close()
    else:
        with pytest.raises(SQLAlchemyError), sqlite_engine.begin() as conn:
            conn.execute(text("SELECT * FROM no_such_table"))
    assert turns.free
    with sqlite_engine.begin() as conn:  # and the next writer gets it at once
        assert not turns.free
        conn.execute(text("SELECT 1"))
    assert turns.free
