"""Timestamps are instants: stored as UTC and read back timezone-aware, on both databases,
whatever offset they were written in and whatever the database session's time zone."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session

from sop_engine.persistence.db import is_postgres
from sop_engine.persistence.models import Referral

MYANMAR = timezone(timedelta(hours=6, minutes=30))
THAILAND = timezone(timedelta(hours=7))


def test_an_aware_timestamp_comes_back_as_the_same_instant_in_utc(
    engine: Engine, new_referral: Callable[..., Referral]
) -> None:
    disclosed = datetime(2025, 3, 1, 9, 30, 15, 123456, tzinfo=MYANMAR)
    with Session(engine) as session, session.begin():
        session.add(new_referral(id="r-1", disclosed_at=disclosed))

    with engine.connect() as connection:
        if is_postgres(engine):
            connection.exec_driver_sql("SET TIME ZONE 'Asia/Bangkok'")
        with Session(bind=connection) as session:
            read = session.get_one(Referral, "r-1").disclosed_at

    assert read == disclosed
    assert read is not None
    assert read.tzinfo is UTC
    assert (read.hour, read.minute, read.microsecond) == (3, 0, 123456)


def test_timestamps_written_in_different_offsets_sort_as_instants(
    engine: Engine, new_referral: Callable[..., Referral]
) -> None:
    # 10:00 in Bangkok is 03:00 UTC, two hours before 05:00 UTC, although "10" > "05".
    with Session(engine) as session, session.begin():
        session.add(new_referral(id="later", created_at=datetime(2025, 3, 1, 5, 0, tzinfo=UTC)))
        session.add(
            new_referral(id="earlier", created_at=datetime(2025, 3, 1, 10, 0, tzinfo=THAILAND))
        )

    cutoff = datetime(2025, 3, 1, 11, 0, tzinfo=MYANMAR)  # 04:30 UTC
    with Session(engine) as session:
        in_order = session.scalars(select(Referral.id).order_by(Referral.created_at)).all()
        before_cutoff = session.scalars(
            select(Referral.id).where(Referral.created_at < cutoff)
        ).all()
    assert in_order == ["earlier", "later"]
    assert before_cutoff == ["earlier"]


def test_a_naive_timestamp_is_refused(
    engine: Engine, new_referral: Callable[..., Referral]
) -> None:
    with Session(engine) as session:
        session.add(new_referral(created_at=datetime(2025, 3, 1, 9, 30)))
        with pytest.raises(StatementError, match="timestamps must be timezone-aware") as info:
            session.flush()
    assert isinstance(info.value.orig, ValueError)
