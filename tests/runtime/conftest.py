"""Fixtures for the runtime tests: the SOP library, a manual clock, keys, a runtime on each
database, the actors of the example corridor and a referral ready for its action plan.

Every name, agency and fact here is synthetic.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.language.compiler import SopLibrary
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.referrals import ReferralView
from tests.agencies import agency_directory

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
"""08:30 in Bangkok and Vientiane on a Monday."""

CORRIDOR = "example.corridor"
ASSESSMENT = {
    "risk_level": "medium",
    "service_needed": "safety_and_shelter",
    "safety_plan_agreed": True,
}

_survivor_numbers = itertools.count(1)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture(scope="session")
def keyring() -> MasterKeyring:
    return MasterKeyring(MasterKey.generate("test"))


@pytest.fixture
def runtime(
    engine: Engine, library: SopLibrary, keyring: MasterKeyring, clock: ManualClock
) -> Runtime:
    """A runtime on SQLite, then on PostgreSQL: a test using it runs once on each."""
    return Runtime(engine, library, keyring, clock, directory=agency_directory())


@pytest.fixture
def sqlite_runtime(
    sqlite_engine: Engine, library: SopLibrary, keyring: MasterKeyring, clock: ManualClock
) -> Runtime:
    return Runtime(sqlite_engine, library, keyring, clock, directory=agency_directory())


@pytest.fixture
def caseworker() -> Actor:
    return Actor("u-cw", "caseworker", "TH-NGO-1", ("ngo",))


@pytest.fixture
def supervisor() -> Actor:
    return Actor("u-sup", "supervisor", "TH-NGO-1", ("ngo",))


@pytest.fixture
def focal_point() -> Actor:
    return Actor("u-fp", "agency_focal_point", "LA-SW-1", ("government_social_welfare",))


NewReferral = Callable[..., ReferralView]


@pytest.fixture
def corridor_referral(runtime: Runtime, caseworker: Actor) -> NewReferral:
    """Makes a fresh corridor referral (Thailand to Lao PDR) in ``intake``, created by the
    caseworker: ``corridor_referral(incident_at=..., survivor_age=22)``; facts by keyword."""

    def make(*, incident_at: datetime | None = None, **facts: Any) -> ReferralView:
        return runtime.create_referral(
            sop_key=CORRIDOR,
            sop_version=1,
            actor=caseworker,
            origin_country="TH",
            destination_country="LA",
            incident_at=incident_at,
            facts=facts,
        )

    return make


@pytest.fixture
def referral_in_action_plan(runtime: Runtime, caseworker: Actor) -> str:
    """The case code of a corridor referral (Thailand to Lao PDR) in ``action_plan``: created
    30 h after the incident, case management consent recorded, assessed as medium risk."""
    view = runtime.create_referral(
        sop_key=CORRIDOR,
        sop_version=None,
        actor=caseworker,
        origin_country="TH",
        destination_country="LA",
        incident_at=runtime.clock.now() - timedelta(hours=30),
        facts={
            "survivor_age": 24,
            "survivor_name": f"Synthetic Survivor {next(_survivor_numbers):03d}",
        },
    )
    code = view.case_code
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    runtime.fire(
        code, "record_consent", caseworker, {"facts": {"safe_contact_method": "text_message"}}
    )
    runtime.fire(code, "complete_assessment", caseworker, {"facts": ASSESSMENT})
    return code
