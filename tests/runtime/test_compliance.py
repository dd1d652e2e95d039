"""Deadline compliance: met, missed, pending, cancelled and untimed tasks and the escalations
they drew, per SOP, agency and country, counted as of the runtime's clock.

The scenario (every agency and referral synthetic), at START = t0 on the example corridor
(Thailand to Lao PDR), where the managing agency TH-NGO-1 works at the slot ``case_agency``
(no declared country), the hospital TH-HOSP-1 at ``health_provider`` (declared ``TH``) and
LA-SW-1 at ``receiving_focal_point`` (declared ``destination``):

- A: consent and assessment at t0 (both met); referred to the hospital at t0, acknowledged
  at t0+2h although due at t0+1h (missed); its next task, respond, is due at t0+5h;
- B: nobody takes it: its first task, due t0+1h, stays open (overdue);
- C: consent at t0 (met); no incident time, so its assessment task has no deadline (untimed);
- D: referred to the hospital at t0, revoked at t0+30m (cancelled), besides two met tasks;
- E: referred to LA-SW-1 at t0, acknowledgement due at t0+1d (pending), besides two met;
- a sweep at t0+2h fires two escalation levels on A (hospital) and two on B (TH-NGO-1).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, update

from sop_engine.clock import ManualClock
from sop_engine.errors import InvalidInput
from sop_engine.language.compiler import SopLibrary
from sop_engine.language.published import PublishedLibrary, PublishedSources
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.compliance import GROUPINGS, ComplianceRow
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.referrals import ReferralView
from tests.shipped import shipped_documents

from .conftest import ASSESSMENT, CORRIDOR, ROOT, START

HOSPITAL = Actor("u-hosp", "agency_focal_point", "TH-HOSP-1")


def _in_action_plan(runtime: Runtime, caseworker: Actor) -> str:
    view = runtime.create_referral(
        sop_key=CORRIDOR,
        sop_version=1,
        actor=caseworker,
        origin_country="TH",
        destination_country="LA",
        incident_at=runtime.clock.now() - timedelta(hours=30),
        facts={"survivor_age": 24},
    )
    code = view.case_code
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    runtime.fire(code, "record_consent", caseworker)
    runtime.fire(code, "complete_assessment", caseworker, {"facts": ASSESSMENT})
    return code


@pytest.fixture
def scenario(
    runtime: Runtime,
    clock: ManualClock,
    caseworker: Actor,
    focal_point: Actor,
    corridor_referral: Callable[..., ReferralView],
) -> Runtime:
    """The module docstring's scenario; the clock is left at t0+2h."""
    a = _in_action_plan(runtime, caseworker)
    runtime.grant_consent(a, scope="health_referral", actor=caseworker, given_by="survivor")
    runtime.fire(a, "refer_for_health_care", caseworker, {"recipient_agency_id": "TH-HOSP-1"})

    corridor_referral(survivor_age=22)  # B

    c = corridor_referral(survivor_age=22).case_code
    runtime.grant_consent(c, scope="case_management", actor=caseworker, given_by="survivor")
    runtime.fire(c, "record_consent", caseworker)

    d = _in_action_plan(runtime, caseworker)
    runtime.grant_consent(d, scope="health_referral", actor=caseworker, given_by="survivor")
    runtime.fire(d, "refer_for_health_care", caseworker, {"recipient_agency_id": "TH-HOSP-1"})

    e = _in_action_plan(runtime, caseworker)
    runtime.grant_consent(e, scope="cross_border_return", actor=caseworker, given_by="survivor")
    runtime.fire(e, "refer_for_return", caseworker, {"recipient_agency_id": "LA-SW-1"})

    clock.advance(timedelta(minutes=30))
    runtime.fire(d, "health_referral.revoke", caseworker)
    clock.set(START + timedelta(hours=2))
    outcomes = runtime.sweep()
    assert [o.outcome for o in outcomes] == ["escalated"] * 4
    runtime.fire(a, "health_referral.acknowledge", HOSPITAL)
    return runtime


def rows(runtime: Runtime, group_by: str, **filters: Any) -> dict[str | None, ComplianceRow]:
    report = runtime.compliance(group_by, **filters)
    assert report.as_of == runtime.clock.now()
    return {row.group: row for row in report.rows}


def counts(row: ComplianceRow) -> tuple[int, ...]:
    """(met, missed, overdue, pending, cancelled, untimed, escalations)."""
    return (
        row.met,
        row.missed,
        row.overdue,
        row.pending,
        row.cancelled,
        row.untimed,
        row.escalations,
    )


def test_by_sop_counts_every_task_of_the_version(scenario: Runtime, clock: ManualClock) -> None:
    clock.set(START + timedelta(hours=3))
    found = rows(scenario, "sop")
    assert list(found) == ["example.corridor@1"]
    row = found["example.corridor@1"]
    assert counts(row) == (7, 2, 1, 2, 1, 1, 4)
    assert row.rate == pytest.approx(7 / 9)


def test_by_agency_each_agency_answers_for_its_own_tasks(
    scenario: Runtime, clock: ManualClock
) -> None:
    clock.set(START + timedelta(hours=3))
    found = rows(scenario, "agency")
    assert set(found) == {"TH-NGO-1", "TH-HOSP-1", "LA-SW-1"}
    assert counts(found["TH-NGO-1"]) == (7, 1, 1, 0, 0, 1, 2)
    assert counts(found["TH-HOSP-1"]) == (0, 1, 0, 1, 1, 0, 2)
    assert counts(found["LA-SW-1"]) == (0, 0, 0, 1, 0, 0, 0)
    assert found["TH-NGO-1"].rate == pytest.approx(7 / 8)
    assert found["TH-HOSP-1"].rate == 0.0
    assert found["LA-SW-1"].rate is None


def test_by_country_the_agency_works_where_the_sop_places_its_slot(
    scenario: Runtime, clock: ManualClock
) -> None:
    """The hospital's slot is declared in TH, the focal point's at the destination (LA), the
    managing agency's at the origin (TH)."""
    clock.set(START + timedelta(hours=3))
    found = rows(scenario, "country")
    assert list(found) == ["LA", "TH"]
    assert counts(found["TH"]) == (7, 2, 1, 1, 1, 1, 4)
    assert counts(found["LA"]) == (0, 0, 0, 1, 0, 0, 0)


def test_by_the_referrals_countries(scenario: Runtime, clock: ManualClock) -> None:
    clock.set(START + timedelta(hours=3))
    assert counts(rows(scenario, "origin_country")["TH"]) == (7, 2, 1, 2, 1, 1, 4)
    assert counts(rows(scenario, "destination_country")["LA"]) == (7, 2, 1, 2, 1, 1, 4)


def test_a_task_open_past_its_deadline_turns_from_pending_to_missed_as_time_passes(
    scenario: Runtime, clock: ManualClock
) -> None:
    """A's respond task is due at t0+5h: pending at t0+5h exactly, missed a second later."""
    clock.set(START + timedelta(hours=5))
    assert counts(rows(scenario, "agency")["TH-HOSP-1"]) == (0, 1, 0, 1, 1, 0, 2)
    clock.advance(timedelta(seconds=1))
    assert counts(rows(scenario, "agency")["TH-HOSP-1"]) == (0, 2, 1, 0, 1, 0, 2)


def test_since_and_until_keep_the_tasks_due_and_escalations_fired_in_between(
    scenario: Runtime, clock: ManualClock
) -> None:
    """Until t0+2h: the five first tasks and the two first handoff acknowledgements (all due
    at t0+1h); the escalations fired at t0+2h exactly are outside."""
    clock.set(START + timedelta(hours=3))
    found = rows(scenario, "sop", until=START + timedelta(hours=2))
    assert counts(found["example.corridor@1"]) == (4, 2, 1, 0, 1, 0, 0)
    later = rows(scenario, "sop", since=START + timedelta(hours=2))
    assert counts(later["example.corridor@1"]) == (3, 0, 0, 2, 0, 0, 4)
    assert rows(scenario, "sop", sop="example.baseline") == {}
    assert set(rows(scenario, "sop", sop=CORRIDOR)) == {"example.corridor@1"}


def test_a_task_closed_exactly_at_its_deadline_is_met(
    runtime: Runtime,
    engine: Engine,
    clock: ManualClock,
    caseworker: Actor,
    corridor_referral: Callable[..., ReferralView],
) -> None:
    view = corridor_referral(survivor_age=22)
    due = START + timedelta(hours=1)
    clock.set(due)
    runtime.grant_consent(
        view.case_code, scope="case_management", actor=caseworker, given_by="survivor"
    )
    runtime.fire(view.case_code, "record_consent", caseworker)
    found = rows(runtime, "agency")["TH-NGO-1"]
    assert (found.met, found.missed) == (1, 0)
    tasks = tables.tasks
    with engine.begin() as conn:  # the same task, closed a microsecond late
        conn.execute(
            update(tasks)
            .where(tasks.c.referral_id == view.id, tasks.c.name == "obtain_consent")
            .values(closed_at=due + timedelta(microseconds=1))
        )
    found = rows(runtime, "agency")["TH-NGO-1"]
    assert (found.met, found.missed) == (0, 1)


def test_an_unknown_grouping_is_refused(runtime: Runtime) -> None:
    with pytest.raises(InvalidInput, match="group_by must be one of") as refused:
        runtime.compliance("survivor")
    assert refused.value.field == "group_by"


def test_an_empty_database_has_no_rows(runtime: Runtime) -> None:
    report = runtime.compliance("country", since=datetime(2026, 1, 1, tzinfo=START.tzinfo))
    assert report.rows == []


def test_every_grouping_answers_with_the_library_the_service_runs(
    scenario: Runtime, engine: Engine, library: SopLibrary, clock: ManualClock
) -> None:
    """Regression: the service's library also looks in the database for published versions
    whenever it is listed, which ``group_by="country"`` does. Listing it inside the read on
    SQLite, whose every transaction took the write lock, waited on its own transaction for
    the 10 s busy timeout and failed ("database is locked"). Each grouping now answers what
    a library that never reads the database answers."""
    clock.set(START + timedelta(hours=3))
    sources = PublishedSources(engine, [ROOT / "sop_definitions"], files=shipped_documents())
    served = Runtime(
        engine, PublishedLibrary(list(library), sources=sources), scenario.services.keyring, clock
    )
    for grouping in GROUPINGS:
        assert served.compliance(grouping).rows == scenario.compliance(grouping).rows, grouping
        assert served.compliance(grouping).rows, grouping
