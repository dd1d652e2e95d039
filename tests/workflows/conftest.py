"""Fixtures for the workflow tests: a runtime on a fresh SQLite database with a manual clock,
a caseworker, and referrals whose first deadline passes an hour after they are made; Prefect
kept in a temporary home. Every name, agency and fact here is synthetic.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.directory import ServiceDirectory, load_directory
from sop_engine.language.compiler import SopLibrary
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from tests.agencies import agency_directory

# Prefect reads its settings, and makes its home folder, when first imported: point the home
# at a temporary folder before any test module imports it, never at ``~/.prefect``.
_PREFECT_HOME = tempfile.mkdtemp(prefix="sop-engine-prefect-home-")
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)
os.environ["PREFECT_HOME"] = _PREFECT_HOME

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
"""08:30 in Bangkok and Vientiane on a Monday."""
CORRIDOR = "example.corridor"
AGENCY = "TH-SYN-LEGAL-BANGKOK"
"""A synthetic agency of the shipped directory, reached in its in-app inbox, reading Thai."""


@pytest.fixture(scope="session")
def keyring() -> MasterKeyring:
    return MasterKeyring(MasterKey.generate("test"))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def runtime(
    sqlite_engine: Engine, library: SopLibrary, keyring: MasterKeyring, clock: ManualClock
) -> Runtime:
    return Runtime(sqlite_engine, library, keyring, clock, directory=agency_directory())


@pytest.fixture
def caseworker() -> Actor:
    return Actor("u-cw", "caseworker", AGENCY, ("ngo",))


@pytest.fixture(scope="session")
def directory() -> ServiceDirectory:
    return load_directory(ROOT / "sop_definitions" / "directory")


NewReferral = Callable[[], str]


@pytest.fixture
def new_referral(runtime: Runtime, caseworker: Actor) -> NewReferral:
    """Make a corridor referral (Thailand to Lao PDR) in ``intake``, whose ``assign``
    deadline escalates to the caseworker an hour later; return its id."""
    numbers = itertools.count(1)

    def make() -> str:
        return create_referral(runtime, caseworker, next(numbers))

    return make


def create_referral(runtime: Runtime, caseworker: Actor, number: int) -> str:
    view = runtime.create_referral(
        sop_key=CORRIDOR,
        sop_version=1,
        actor=caseworker,
        origin_country="TH",
        destination_country="LA",
        facts={"survivor_age": 22, "survivor_name": f"Synthetic Survivor {number:03d}"},
    )
    return view.id
