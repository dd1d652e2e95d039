"""The incident time, recorded after the referral was opened or corrected: the clinical
deadlines of the state run from it (example corridor, ``assessment``: HIV prophylaxis 72 h,
emergency contraception 120 h), escalated levels stay escalated, and the timeline keeps the
old time and the reason. Only the managing agency records it. On SQLite and PostgreSQL, times
moved by the injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from api.users import create_user
from sop_engine.clock import ManualClock
from sop_engine.errors import (
    ConcurrentChange,
    InvalidInput,
    NotFound,
    RoleNotAllowed,
    TransitionNotAllowed,
)
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from tests.runtime.conftest import NewReferral

T, TM, TK = tables.timeline_entries, tables.timers, tables.tasks
PEP, EC = timedelta(hours=72), timedelta(hours=120)


@pytest.fixture
def assessing(runtime: Runtime, caseworker: Actor, corridor_referral: NewReferral) -> str:
    """A corridor referral in ``assessment``, opened without an incident time."""
    code = corridor_referral(survivor_age=27).case_code
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    fired = runtime.fire(
        code, "record_consent", caseworker, {"facts": {"safe_contact_method": "text_message"}}
    )
    assert fired.state == "assessment"
    assert set(fired.warnings) == {
        "deadline 'pep_window' not started: its timestamp is unknown",
        "deadline 'emergency_contraception' not started: its timestamp is unknown",
    }
    return code


def _timers(runtime: Runtime, code: str) -> dict[tuple[str, bool], list[datetime]]:
    """(deadline, fired) -> due times, for the referral's timers."""
    referral = runtime.read_referral(code)
    found: dict[tuple[str, bool], list[datetime]] = {}
    with runtime.db.connect() as conn:
        for row in conn.execute(select(TM).where(TM.c.referral_id == referral.id)):
            due = row.due_at if row.due_at.tzinfo else row.due_at.replace(tzinfo=UTC)
            found.setdefault((row.deadline, row.fired_at is not None), []).append(due)
    return found


def _entries(runtime: Runtime, code: str, kind: str) -> list[Any]:
    referral = runtime.read_referral(code)
    with runtime.db.connect() as conn:
        query = select(T).where(T.c.referral_id == referral.id, T.c.kind == kind)
        return list(conn.execute(query.order_by(T.c.seq)))


def _task_due(runtime: Runtime, code: str) -> datetime:
    referral = runtime.read_referral(code)
    with runtime.db.connect() as conn:
        due: datetime | None = conn.scalar(
            select(TK.c.due_at).where(TK.c.referral_id == referral.id, TK.c.status == "open")
        )
    assert due is not None
    return due if due.tzinfo else due.replace(tzinfo=UTC)


def test_recording_it_starts_the_clinical_deadlines_from_the_incident(
    runtime: Runtime, clock: ManualClock, caseworker: Actor, assessing: str
) -> None:
    assert _timers(runtime, assessing) == {}
    incident = clock.now() - timedelta(hours=70)  # she arrives 70 h after
    before = runtime.read_referral(assessing).version
    view = runtime.record_incident_time(
        assessing, incident_at=incident, reason="first_established", actor=caseworker
    )
    assert view.incident_at == incident
    assert view.version == before + 1
    timers = _timers(runtime, assessing)
    assert timers[("pep_window", False)] == [incident + PEP]  # in 2 h: she is told now
    assert timers[("emergency_contraception", False)] == [incident + EC]
    assert _task_due(runtime, assessing) == incident + PEP
    [entry] = _entries(runtime, assessing, "incident_time")
    assert entry.details == {
        "reason": "first_established",
        "incident_at": incident.isoformat(),
        "previous": None,
    }
    clock.advance(timedelta(hours=2, minutes=1))  # before 72 h have passed... now after
    escalated = [o.fired_event or o.outcome for o in runtime.sweep() if o.case_code == assessing]
    assert escalated == ["escalated"]


def test_a_correction_moves_what_has_not_fired_and_leaves_what_has(
    runtime: Runtime, clock: ManualClock, caseworker: Actor, assessing: str
) -> None:
    first = clock.now() - timedelta(hours=70)
    runtime.record_incident_time(assessing, incident_at=first, reason="first_established",
                                 actor=caseworker)  # fmt: skip
    clock.advance(timedelta(hours=3))
    assert [o.outcome for o in runtime.sweep()] == ["escalated"]  # the PEP window passed
    later = first + timedelta(hours=10)  # she remembers better: later than first said
    runtime.record_incident_time(assessing, incident_at=later, reason="survivor_recalled",
                                 actor=caseworker)  # fmt: skip
    timers = _timers(runtime, assessing)
    assert timers[("pep_window", True)] == [first + PEP]  # escalated once, and stays so
    assert ("pep_window", False) not in timers  # not escalated again for the new time
    assert timers[("emergency_contraception", False)] == [later + EC]
    [_, corrected] = _entries(runtime, assessing, "incident_time")
    assert corrected.details["previous"] == first.isoformat()
    assert corrected.details["reason"] == "survivor_recalled"
    clock.advance(EC)
    assert [o.outcome for o in runtime.sweep()] == ["escalated"]  # contraception, once


def test_a_correction_to_an_earlier_time_escalates_at_the_next_sweep(
    runtime: Runtime, clock: ManualClock, caseworker: Actor, assessing: str
) -> None:
    runtime.record_incident_time(assessing, incident_at=clock.now() - timedelta(hours=10),
                                 reason="first_established", actor=caseworker)  # fmt: skip
    assert runtime.sweep() == []
    earlier = clock.now() - timedelta(hours=73)
    runtime.record_incident_time(assessing, incident_at=earlier, reason="medical_record",
                                 actor=caseworker)  # fmt: skip
    assert [o.outcome for o in runtime.sweep()] == ["escalated"]


def _refused(runtime: Runtime, code: str, error: type[Exception], **change: Any) -> Exception:
    before = runtime.read_referral(code)
    arguments = {
        "incident_at": runtime.clock.now() - timedelta(hours=5),
        "reason": "first_established",
        **change,
    }
    with pytest.raises(error) as refused:
        runtime.record_incident_time(code, **arguments)
    after = runtime.read_referral(code)
    assert (after.version, after.incident_at) == (before.version, before.incident_at)
    assert _entries(runtime, code, "incident_time") == []
    return refused.value


def test_only_the_managing_agency_records_it(
    runtime: Runtime, caseworker: Actor, focal_point: Actor, assessing: str
) -> None:
    other = Actor("u-other", "caseworker", "TH-NGO-9", ("ngo",))
    _refused(runtime, assessing, RoleNotAllowed, actor=other)
    _refused(runtime, assessing, RoleNotAllowed, actor=focal_point)
    coordinator = Actor("u-coord", "coordinator", None, ())
    _refused(runtime, assessing, RoleNotAllowed, actor=coordinator)
    with pytest.raises(NotFound):
        runtime.record_incident_time("NONE-NONE-NONE", incident_at=runtime.clock.now(),
                                     reason="other", actor=caseworker)  # fmt: skip


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"reason": "she said so"}, "reason"),
        ({"incident_at": datetime(2026, 3, 1, 12, 0)}, "incident_at"),  # no time zone
        ({"incident_at": "future"}, "incident_at"),
    ],
    ids=["free-text reason", "naive time", "in the future"],
)
def test_a_bad_time_or_reason_is_refused_and_changes_nothing(
    runtime: Runtime, caseworker: Actor, assessing: str, change: dict[str, Any], field: str
) -> None:
    if change.get("incident_at") == "future":
        change = {"incident_at": runtime.clock.now() + timedelta(hours=1)}
    error = _refused(runtime, assessing, InvalidInput, actor=caseworker, **change)
    assert isinstance(error, InvalidInput)
    assert error.field == field


def test_the_same_time_twice_or_a_stale_version_is_refused(
    runtime: Runtime, clock: ManualClock, caseworker: Actor, assessing: str
) -> None:
    at = clock.now() - timedelta(hours=5)
    version = runtime.read_referral(assessing).version
    runtime.record_incident_time(assessing, incident_at=at, reason="first_established",
                                 actor=caseworker, expected_version=version)  # fmt: skip
    with pytest.raises(ConcurrentChange):  # the same request again, on the version it read
        runtime.record_incident_time(assessing, incident_at=at - timedelta(hours=1),
                                     reason="other", actor=caseworker,
                                     expected_version=version)  # fmt: skip
    with pytest.raises(InvalidInput, match="already recorded"):
        runtime.record_incident_time(assessing, incident_at=at, reason="other", actor=caseworker)
    assert len(_entries(runtime, assessing, "incident_time")) == 1


def test_a_closed_referral_keeps_its_incident_time(
    runtime: Runtime, caseworker: Actor, assessing: str
) -> None:
    runtime.fire(assessing, "consent_withdrawn", caseworker)
    assert runtime.read_referral(assessing).closed_at is not None
    _refused(runtime, assessing, TransitionNotAllowed, actor=caseworker)


def test_the_api_records_it_for_the_managing_agency_only(
    runtime: Runtime, clock: ManualClock, assessing: str
) -> None:
    cw = create_user(runtime.db, "cw-it", "caseworker", "TH-NGO-1", now=clock.now()).token
    outsider = create_user(runtime.db, "cw-out", "caseworker", "TH-NGO-9", now=clock.now()).token
    incident = (clock.now() - timedelta(hours=30)).isoformat()
    body = {"incident_at": incident, "reason": "first_established"}
    url = f"/referrals/{assessing}/incident-time"
    with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
        refused = client.put(url, json=body, headers={"Authorization": f"Bearer {outsider}"})
        bad = client.put(
            url, json={**body, "reason": "x"}, headers={"Authorization": f"Bearer {cw}"}
        )
        done = client.put(url, json=body, headers={"Authorization": f"Bearer {cw}"})
        stale = client.put(
            url,
            json={**body, "reason": "other", "incident_at": clock.now().isoformat()},
            headers={"Authorization": f"Bearer {cw}", "If-Match": '"1"'},
        )
    assert refused.status_code == 404
    assert (bad.status_code, bad.json()["field"]) == (422, "reason")
    assert done.status_code == 200, done.text
    assert done.headers["ETag"] == f'"{done.json()["version"]}"'
    assert datetime.fromisoformat(done.json()["incident_at"]) == clock.now() - timedelta(hours=30)
    assert stale.status_code == 409
