"""Timestamps are instants: stored as UTC and read back timezone-aware, on both databases,
whatever offset they were written in and whatever the database session's time zone."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import StatementError

from sop_engine.persistence import tables
from sop_engine.persistence.db import is_postgres

MYANMAR = timezone(timedelta(hours=6, minutes=30))
THAILAND = timezone(timedelta(hours=7))

_R = tables.referrals


def test_an_aware_timestamp_comes_back_as_the_same_instant_in_utc(
    engine: Engine, new_referral: Callable[..., dict[str, Any]]
) -> None:
    disclosed = datetime(2025, 3, 1, 9, 30, 15, 123456, tzinfo=MYANMAR)
    with engine.begin() as connection:
        connection.execute(_R.insert(), new_referral(id="r-1", disclosed_at=disclosed))

    with engine.connect() as connection:
        if is_postgres(engine):
            connection.exec_driver_sql("SET TIME ZONE 'Asia/Bangkok'")
        read = connection.execute(select(_R.c.disclosed_at).where(_R.c.id == "r-1")).scalar_one()

    assert read == disclosed
    assert read is not None
    assert read.tzinfo is UTC
    assert (read.hour, read.minute, read.microsecond) == (3, 0, 123456)


def test_timestamps_written_in_different_offsets_sort_as_instants(
    engine: Engine, new_referral: Callable[..., dict[str, Any]]
) -> None:
    # 10:00 in Bangkok is 03:00 UTC, two hours before 05:00 UTC, although "10" > "05".
    with engine.begin() as connection:
        connection.execute(
            _R.insert(), new_referral(id="later", created_at=datetime(2025, 3, 1, 5, 0, tzinfo=UTC))
        )
        connection.execute(
            _R.insert(),
            new_referral(id="earlier", created_at=datetime(2025, 3, 1, 10, 0, tzinfo=THAILAND)),
        )

    cutoff = datetime(2025, 3, 1, 11, 0, tzinfo=MYANMAR)  # 04:30 UTC
    with engine.connect() as connection:
        in_order = connection.scalars(select(_R.c.id).order_by(_R.c.created_at)).all()
        before_cutoff = connection.scalars(select(_R.c.id).where(_R.c.created_at < cutoff)).all()
    assert in_order == ["earlier", "later"]
    assert before_cutoff == ["earlier"]


def test_a_naive_timestamp_is_refused(
    engine: Engine, new_referral: Callable[..., dict[str, Any]]
) -> None:
    with (
        engine.connect() as connection,
        pytest.raises(StatementError, match="timestamps must be timezone-aware") as info,
    ):
        connection.execute(_R.insert(), new_referral(created_at=datetime(2025, 3, 1, 9, 30)))
    assert isinstance(info.value.orig, ValueError)
