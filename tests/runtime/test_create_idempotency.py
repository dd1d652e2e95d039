"""Creating a referral under an idempotency key: one referral, however often and however
concurrently the same request is retried; on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from sop_engine.errors import IdempotencyKeyReused
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime


def create(runtime: Runtime, actor: Actor, key: str | None, **changes: Any) -> str:
    request: dict[str, Any] = {
        "sop_key": "example.corridor",
        "sop_version": 1,
        "origin_country": "TH",
        "destination_country": "LA",
        "facts": {"survivor_age": 30},
    }
    request.update(changes)
    return runtime.create_referral(actor=actor, idempotency_key=key, **request).case_code


def referrals(runtime: Runtime) -> int:
    with runtime.db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(tables.referrals)).scalar_one())


def test_concurrent_retries_make_one_referral(runtime: Runtime, caseworker: Actor) -> None:
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda _: create(runtime, caseworker, "k-1"), range(8)))
    assert len(set(codes)) == 1
    assert referrals(runtime) == 1


def test_the_key_is_the_actors_own_and_bound_to_its_request(
    runtime: Runtime, caseworker: Actor
) -> None:
    first = create(runtime, caseworker, "k-2")
    colleague = Actor("u-cw9", "caseworker", caseworker.agency_id, ("ngo",))
    assert create(runtime, colleague, "k-2") != first
    with pytest.raises(IdempotencyKeyReused):
        create(runtime, caseworker, "k-2", facts={"survivor_age": 31})
    assert create(runtime, caseworker, None) != first
    assert referrals(runtime) == 3
