"""Bearer tokens: required, checked by their hash, created by ``sop-engine users add``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.app import create_app
from api.users import hash_token
from cli.main import cli
from sop_engine.persistence import tables
from sop_engine.persistence.db import make_engine
from sop_engine.persistence.migrate import upgrade
from sop_engine.runtime.engine import Runtime
from sop_engine.settings import get_settings
from tests.agencies import agency_directory

from .conftest import SOPS, Users

_U = tables.users


def test_no_token_is_401(client: TestClient) -> None:
    r = client.get("/sops")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert r.json()["error"] == "unauthenticated"


@pytest.mark.parametrize(
    "header", ["Bearer not-a-token", "Basic Y29vcmQ6eA==", "Bearer", "bearer "]
)
def test_a_bad_token_is_401(client: TestClient, users: Users, header: str) -> None:
    r = client.get("/sops", headers={"Authorization": header})
    assert r.status_code == 401


def test_a_disabled_user_is_401(client: TestClient, users: Users, runtime: Runtime) -> None:
    assert client.get("/sops", headers=users.auth("coordinator")).status_code == 200
    with runtime.db.begin() as conn:
        conn.execute(
            update(_U).where(_U.c.username == "coord").values(disabled_at=datetime.now(UTC))
        )
    assert client.get("/sops", headers=users.auth("coordinator")).status_code == 401


@pytest.fixture
def cli_env(tmp_path: Path) -> Iterator[dict[str, str | None]]:
    get_settings.cache_clear()
    env: dict[str, str | None] = {
        "SOP_ENGINE_DATA_DIR": str(tmp_path / "data"),
        "SOP_ENGINE_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}",
        "SOP_ENGINE_ENVIRONMENT": None,
    }
    yield env
    get_settings.cache_clear()


def test_users_add_prints_a_working_token_and_stores_only_its_hash(
    cli_env: dict[str, str | None], runtime: Runtime
) -> None:
    url = str(cli_env["SOP_ENGINE_DATABASE_URL"])
    engine = make_engine(url)
    upgrade(engine)
    result = CliRunner().invoke(
        cli,
        ["users", "add", "cw-th-01", "--role", "caseworker", "--agency", "TH-SYN-SHELTER-TAK"],
        env=cli_env,
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert len(token) >= 40
    assert "shown only this once" in result.stderr
    with engine.connect() as conn:
        row = conn.execute(select(_U).where(_U.c.username == "cw-th-01")).one()
    assert row.token_hash == hash_token(token)
    assert row.role == "caseworker"
    assert row.agency_id == "TH-SYN-SHELTER-TAK"
    assert token not in {str(v) for v in row}

    api = Runtime(engine, runtime.library, runtime.services.keyring, directory=agency_directory())
    with TestClient(create_app(api, sop_paths=[SOPS])) as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/referrals/AAAA-BBBB-CCCC", headers=headers).status_code == 404
        assert client.get("/sops", headers=headers).status_code == 403
    engine.dispose()


def test_users_add_refuses_a_taken_name_and_a_caseworker_without_agency(
    cli_env: dict[str, str | None],
) -> None:
    engine = make_engine(str(cli_env["SOP_ENGINE_DATABASE_URL"]))
    upgrade(engine)
    engine.dispose()
    runner = CliRunner()
    ok = runner.invoke(cli, ["users", "add", "lin", "--role", "auditor"], env=cli_env)
    assert ok.exit_code == 0
    again = runner.invoke(cli, ["users", "add", "lin", "--role", "auditor"], env=cli_env)
    assert again.exit_code == 1
    assert "taken" in again.stderr
    no_agency = runner.invoke(cli, ["users", "add", "kim", "--role", "caseworker"], env=cli_env)
    assert no_agency.exit_code == 1
    assert "agency" in no_agency.stderr
    bad_role = runner.invoke(cli, ["users", "add", "x", "--role", "admin"], env=cli_env)
    assert bad_role.exit_code == 2
