"""Reopening a closed case for a survivor who comes back (example corridor: ``reopen: {to:
assessment, roles: [caseworker, supervisor], reasons: [...]}``), by the managing agency, with
a reason on the timeline; on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from api.users import create_user
from sop_engine.errors import ConcurrentChange, InvalidInput, RoleNotAllowed, TransitionNotAllowed
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from tests.runtime.conftest import NewReferral

T, TK = tables.timeline_entries, tables.tasks


@pytest.fixture
def closed(runtime: Runtime, caseworker: Actor, referral_in_action_plan: str) -> str:
    code = referral_in_action_plan
    runtime.fire(code, "close", caseworker)
    assert runtime.read_referral(code).closed_at is not None
    return code


def _reopened_entries(runtime: Runtime, code: str) -> list[Any]:
    referral = runtime.read_referral(code)
    with runtime.db.connect() as conn:
        query = select(T).where(T.c.referral_id == referral.id, T.c.kind == "reopened")
        return list(conn.execute(query))


def test_the_managing_agency_reopens_a_closed_case_into_assessment(
    runtime: Runtime, supervisor: Actor, closed: str
) -> None:
    before = runtime.read_referral(closed)
    view = runtime.reopen_case(closed, reason="survivor_returned", actor=supervisor)
    assert (view.state, view.closed_at, view.version) == ("assessment", None, before.version + 1)
    [entry] = _reopened_entries(runtime, closed)
    assert (entry.from_state, entry.to_state, entry.details) == (
        "closed",
        "assessment",
        {"reason": "survivor_returned"},
    )
    with runtime.db.connect() as conn:
        tasks = conn.execute(
            select(TK.c.name).where(TK.c.referral_id == view.id, TK.c.status == "open")
        ).scalars()
        assert list(tasks) == ["assess"]  # assessment starts again, with its task
    [check] = runtime.verify_timeline(closed)
    assert check.ok


def _refused(runtime: Runtime, code: str, error: type[Exception], **given: Any) -> Exception:
    before = runtime.read_referral(code)
    with pytest.raises(error) as refused:
        runtime.reopen_case(code, **{"reason": "survivor_returned", **given})
    after = runtime.read_referral(code)
    assert (after.state, after.version) == (before.state, before.version)
    assert _reopened_entries(runtime, code) == []
    return refused.value


def test_only_the_managing_agencys_reopening_roles_reopen(
    runtime: Runtime, focal_point: Actor, closed: str
) -> None:
    _refused(runtime, closed, RoleNotAllowed, actor=Actor("x", "caseworker", "TH-NGO-9", ()))
    _refused(runtime, closed, RoleNotAllowed, actor=focal_point)
    _refused(runtime, closed, RoleNotAllowed, actor=Actor("c", "coordinator", None, ()))


def test_an_open_case_a_bad_reason_or_a_stale_version_is_refused(
    runtime: Runtime, caseworker: Actor, corridor_referral: NewReferral, closed: str
) -> None:
    _refused(runtime, corridor_referral().case_code, TransitionNotAllowed, actor=caseworker)
    error = _refused(runtime, closed, InvalidInput, actor=caseworker, reason="she asked")
    assert isinstance(error, InvalidInput)
    assert error.field == "reason"
    version = runtime.read_referral(closed).version
    runtime.reopen_case(closed, reason="new_incident", actor=caseworker, expected_version=version)
    with pytest.raises((ConcurrentChange, TransitionNotAllowed)):  # the same request again
        runtime.reopen_case(closed, reason="new_incident", actor=caseworker,
                            expected_version=version)  # fmt: skip
    assert len(_reopened_entries(runtime, closed)) == 1


def test_an_erased_case_stays_closed(runtime: Runtime, caseworker: Actor, closed: str) -> None:
    runtime.erase(closed, caseworker)
    _refused(runtime, closed, TransitionNotAllowed, actor=caseworker)


def test_the_api_reopens_for_the_managing_agency(runtime: Runtime, closed: str) -> None:
    now = runtime.clock.now()
    cw = create_user(runtime.db, "cw-re", "caseworker", "TH-NGO-1", now=now).token
    outsider = create_user(runtime.db, "cw-out", "caseworker", "TH-NGO-9", now=now).token
    url = f"/referrals/{closed}/reopen"
    with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
        refused = client.post(url, json={"reason": "survivor_returned"},
                              headers={"Authorization": f"Bearer {outsider}"})  # fmt: skip
        done = client.post(url, json={"reason": "survivor_returned"},
                           headers={"Authorization": f"Bearer {cw}"})  # fmt: skip
        again = client.post(url, json={"reason": "survivor_returned"},
                            headers={"Authorization": f"Bearer {cw}"})  # fmt: skip
    assert refused.status_code == 404
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "assessment"
    assert done.headers["ETag"] == f'"{done.json()["version"]}"'
    assert again.status_code == 409  # it is open now
