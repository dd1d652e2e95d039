"""Idempotency keys for consent operations: a retry gets the first result, a request still
running blocks its key until its lease runs out, a failed one frees it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import pytest

from sop_engine.clock import ManualClock
from sop_engine.errors import ConcurrentChange, IdempotencyKeyReused, InvalidInput, NotFound
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.idempotency import LEASE, run_once

from .conftest import NewReferral

Run = Callable[[], Mapping[str, Any]]


@pytest.fixture
def code(corridor_referral: NewReferral) -> str:
    return corridor_referral(survivor_age=30).case_code


@pytest.fixture
def once(
    runtime: Runtime, caseworker: Actor, code: str
) -> Callable[..., tuple[dict[str, Any], bool]]:
    """``once(key, run, request={}, actor=caseworker)``: a consent grant's ``run_once``."""

    def call(
        key: str, run: Run, request: Mapping[str, Any] | None = None, actor: Actor = caseworker
    ) -> tuple[dict[str, Any], bool]:
        return run_once(
            runtime.services,
            actor,
            key,
            operation="consent.grant",
            case_code=code,
            request=request or {},
            run=run,
        )

    return call


def test_a_retry_gets_the_first_result_and_runs_nothing(
    runtime: Runtime, caseworker: Actor, code: str, once: Callable[..., Any]
) -> None:
    def grant() -> Mapping[str, Any]:
        g = runtime.grant_consent(
            code, scope="case_management", actor=caseworker, given_by="survivor"
        )
        return {"id": g.id}

    request = {"scope": "case_management"}
    result, replayed = once("k", grant, request)
    assert replayed is False
    assert once("k", grant, request) == (result, True)
    assert [g.id for g in runtime.list_grants(code)] == [result["id"]]
    with pytest.raises(IdempotencyKeyReused):
        once("k", grant, {"scope": "health_referral"})
    someone_else = Actor("u-cw-2", "caseworker", "TH-NGO-1")
    assert once("k", grant, request, someone_else)[1] is False  # keys are each actor's own
    assert len(runtime.list_grants(code)) == 2


def test_a_request_still_running_blocks_its_key(once: Callable[..., Any]) -> None:
    refused: list[Exception] = []

    def retried_meanwhile() -> Mapping[str, Any]:
        with pytest.raises(ConcurrentChange) as raised:
            once("k", dict)
        refused.append(raised.value)
        return {"done": 1}

    assert once("k", retried_meanwhile) == ({"done": 1}, False)
    assert len(refused) == 1
    assert once("k", dict) == ({"done": 1}, True)


def test_a_reservation_older_than_its_lease_is_taken_over(
    once: Callable[..., Any], clock: ManualClock
) -> None:
    stalled: list[int] = []

    def dies_after_the_operation() -> Mapping[str, Any]:
        stalled.append(1)
        clock.advance(LEASE + timedelta(seconds=1))
        assert once("k", lambda: {"second": 1}) == ({"second": 1}, False)
        return {"first": 1}

    once("k", dies_after_the_operation)
    assert stalled == [1]


def test_a_failed_operation_frees_its_key(once: Callable[..., Any]) -> None:
    def refused() -> Mapping[str, Any]:
        raise InvalidInput("no", field="scope")

    with pytest.raises(InvalidInput):
        once("k", refused, {"scope": "nope"})
    assert once("k", lambda: {"ok": 1}, {"scope": "case_management"}) == ({"ok": 1}, False)


def test_an_unknown_referral_is_not_found(runtime: Runtime, caseworker: Actor) -> None:
    with pytest.raises(NotFound):
        run_once(
            runtime.services,
            caseworker,
            "k",
            operation="consent.grant",
            case_code="AAAA-BBBB-CCCC",
            request={},
            run=dict,
        )
