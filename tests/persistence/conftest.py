"""Fixtures for the persistence tests: a way to make a valid referral row, and an empty
database of each kind for the migration tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine

from sop_engine.persistence.db import make_engine

NewReferral = Callable[..., dict[str, Any]]


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def empty_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A database with no tables, SQLite or PostgreSQL, for a migration to go up and down."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def new_referral() -> NewReferral:
    """Make a row of ``referrals`` with every required column filled (the others take their
    defaults when it is inserted); keyword arguments override."""

    def make(**changes: Any) -> dict[str, Any]:
        now = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
        values: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "case_code": f"TH-{uuid.uuid4().hex[:8].upper()}",
            "sop_key": "th-mm.trafficking",
            "sop_version": 1,
            "state": "referred",
            "origin_country": "TH",
            "destination_country": "MM",
            "owner_agency_id": "th-osc-chiangrai",
            "created_at": now,
            "updated_at": now,
            "head_hash": "0" * 64,
        }
        values.update(changes)
        return values

    return make
