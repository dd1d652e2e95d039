"""An API over a Runtime on a fresh SQLite database, with one user per role.

Agencies: ``TH-NGO-A`` (the caseworker's, who creates referrals), ``LA-SW-B`` (a focal point
of another agency, who takes no part in them unless sent one).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.app import create_app
from api.users import create_user
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.language.compiler import SopLibrary
from sop_engine.language.published import PublishedSources
from sop_engine.runtime.engine import Runtime
from tests.agencies import agency_directory
from tests.shipped import shipped_documents

ROOT = Path(__file__).resolve().parents[2]
SOPS = ROOT / "sop_definitions"

SURVIVOR = "Synthetic Survivor Nalinee 7731"
"""A synthetic name, looked for in every response body: it must never appear."""


@pytest.fixture
def runtime(sqlite_engine: Engine, library: SopLibrary) -> Runtime:
    return Runtime(
        sqlite_engine,
        library,
        MasterKeyring(MasterKey.generate("test")),
        directory=agency_directory(),
    )


@dataclass
class Users:
    tokens: dict[str, str]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@pytest.fixture
def users(runtime: Runtime) -> Users:
    made = {
        "coordinator": create_user(runtime.db, "coord", "coordinator"),
        "coordinator_2": create_user(runtime.db, "coord2", "coordinator"),
        "auditor": create_user(runtime.db, "audit", "auditor"),
        "caseworker": create_user(runtime.db, "cw", "caseworker", "TH-NGO-A"),
        "supervisor": create_user(runtime.db, "sup", "supervisor", "TH-NGO-A"),
        "other_caseworker": create_user(runtime.db, "cw2", "caseworker", "TH-NGO-Z"),
        "focal_point": create_user(runtime.db, "fp", "agency_focal_point", "LA-SW-B"),
    }
    return Users({who: u.token for who, u in made.items()})


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    app = create_app(runtime, sop_paths=[SOPS])
    # What the app would read from SOPS on its first upload, read once per test process.
    app.state.sop_sources = PublishedSources(runtime.db, [SOPS], files=shipped_documents())
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def referral_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "sop_key": "example.corridor",
        "sop_version": 1,
        "origin_country": "TH",
        "destination_country": "LA",
        "incident_at": "2026-03-01T01:00:00Z",
        "disclosed_at": "2026-03-02T01:00:00Z",
        "facts": {"survivor_name": SURVIVOR, "survivor_age": 24},
    }
    body.update(overrides)
    return body


@pytest.fixture
def case_code(client: TestClient, users: Users) -> str:
    """A referral created through the API by the caseworker of TH-NGO-A."""
    r = client.post("/referrals", json=referral_body(), headers=users.auth("caseworker"))
    assert r.status_code == 201, r.text
    code: str = r.json()["case_code"]
    return code
