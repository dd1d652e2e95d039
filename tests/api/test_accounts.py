"""Accounts, attacked: a disabled user's old token, a rotated token, an expired token, on every
route and on SQLite and PostgreSQL. The user keeps her id, role and agency through rotation,
and nothing anywhere holds the token itself."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from api.app import create_app
from api.auth_limits import FailedAuthLimit
from api.permissions import PERMISSIONS
from api.users import create_user, list_users, rotate_token, set_disabled
from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.errors import InvalidInput, NotFound
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.runtime.engine import Runtime
from tests.agencies import agency_directory

from .conftest import SOPS, referral_body
from .test_permissions import PARAMETERS

START = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
LIFETIME = timedelta(days=90)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def runtime(engine: Engine, library: SopLibrary, clock: ManualClock) -> Runtime:
    """On SQLite, then on PostgreSQL."""
    keys = MasterKeyring(MasterKey.generate("test"))
    return Runtime(engine, library, keys, clock, directory=agency_directory())


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    # A limit no test here reaches: these tests are about each token, not the limit.
    app = create_app(runtime, sop_paths=[SOPS], auth_limit=FailedAuthLimit(limit=10_000))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def every_route(case_code: str) -> list[tuple[str, str]]:
    return [
        (method, template.format(case_code=case_code, **PARAMETERS))
        for method, template in sorted(PERMISSIONS)
    ]


def refused(r: object, why: str) -> None:
    assert getattr(r, "status_code", None) == 401, getattr(r, "text", r)
    body = r.json()  # type: ignore[attr-defined]
    assert body["error"] == "unauthenticated"
    assert why in body["message"]
    assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'  # type: ignore[attr-defined]


def test_a_disabled_users_old_token_is_refused_on_every_route_at_once(
    client: TestClient, runtime: Runtime, clock: ManualClock
) -> None:
    users = {
        role: create_user(runtime.db, f"u-{role}", role, "TH-NGO-A", now=clock.now())
        for role in ("caseworker", "supervisor", "agency_focal_point", "coordinator", "auditor")
    }
    cw = bearer(users["caseworker"].token)
    made = client.post("/referrals", json=referral_body(), headers=cw)
    assert made.status_code == 201, made.text
    code = made.json()["case_code"]
    assert client.get(f"/referrals/{code}", headers=cw).status_code == 200

    for role in users:
        set_disabled(runtime.db, f"u-{role}", True, now=clock.now())
    for role, created in users.items():
        for method, path in every_route(code):
            r = client.request(method, path, json={}, headers=bearer(created.token))
            assert r.status_code == 401, f"{role} {method} {path}: {r.status_code}"
            assert r.json()["message"] == "the bearer token's user is disabled"

    set_disabled(runtime.db, "u-caseworker", False)
    assert client.get(f"/referrals/{code}", headers=cw).status_code == 200


def test_a_rotated_token_stops_at_once_and_the_user_keeps_her_id_role_and_agency(
    client: TestClient, runtime: Runtime, clock: ManualClock
) -> None:
    old = create_user(runtime.db, "cw", "caseworker", "TH-NGO-A", now=clock.now())
    code = client.post("/referrals", json=referral_body(), headers=bearer(old.token)).json()[
        "case_code"
    ]
    [before] = list_users(runtime.db)
    clock.advance(timedelta(days=80))
    account, new = rotate_token(runtime.db, "cw", lifetime=LIFETIME, now=clock.now())
    assert new != old.token
    assert (account.id, account.role, account.agency_id) == (
        before.id,
        before.role,
        before.agency_id,
    )
    assert account.token_expires_at == clock.now() + LIFETIME
    refused(client.get(f"/referrals/{code}", headers=bearer(old.token)), "unknown")
    # Her referral is still hers: same agency, and the timeline names the same user id.
    assert client.get(f"/referrals/{code}", headers=bearer(new)).status_code == 200
    grant = {"scope": "case_management", "given_by": "survivor"}
    assert client.post(f"/referrals/{code}/consents", json=grant, headers=bearer(new)).is_success
    clock.advance(timedelta(days=80))  # 160 days after her first token: rotation renewed it
    assert client.get(f"/referrals/{code}", headers=bearer(new)).status_code == 200
    with runtime.db.connect() as conn:
        actors = conn.execute(
            select(tables.access_log.c.actor_id).where(tables.access_log.c.outcome == "granted")
        ).scalars()
        assert set(actors) == {before.id}


def test_an_expired_token_is_401_with_a_clear_message_and_logged_as_its_users(
    client: TestClient, runtime: Runtime, clock: ManualClock
) -> None:
    made = create_user(runtime.db, "aud", "auditor", lifetime=LIFETIME, now=clock.now())
    clock.advance(LIFETIME - timedelta(seconds=1))
    assert client.get("/audit/referrals", headers=bearer(made.token)).status_code == 200
    clock.advance(timedelta(seconds=1))
    r = client.get("/audit/referrals", headers=bearer(made.token))
    refused(r, "expired at 2026-05-31 01:30 UTC")
    assert "rotate-token" in r.json()["message"]
    with runtime.db.connect() as conn:
        rows = conn.execute(select(tables.access_log)).all()
        users = conn.execute(select(tables.users)).all()
    failed = [row for row in rows if row.action == "auth.expired_token"]
    assert [(f.actor_id, f.actor_role, f.outcome) for f in failed] == [
        (made.principal.id, "auditor", "refused")
    ]
    assert failed[0].client == "testclient"
    for row in [*rows, *users]:
        assert made.token not in str(tuple(row))


def test_a_made_up_token_is_unknown_and_an_expired_disabled_users_token_says_disabled(
    client: TestClient, runtime: Runtime, clock: ManualClock
) -> None:
    made = create_user(runtime.db, "aud", "auditor", lifetime=LIFETIME, now=clock.now())
    refused(client.get("/audit/referrals", headers=bearer(made.token + "x")), "unknown")
    set_disabled(runtime.db, "aud", True)
    clock.advance(2 * LIFETIME)
    refused(client.get("/audit/referrals", headers=bearer(made.token)), "disabled")


def test_changing_a_user_that_does_not_exist_is_not_found_with_a_near_name(
    runtime: Runtime,
) -> None:
    create_user(runtime.db, "cw-th-01", "caseworker", "TH-NGO-A")
    with pytest.raises(NotFound, match="did you mean 'cw-th-01'"):
        set_disabled(runtime.db, "cw-th-1", True)
    with pytest.raises(NotFound, match="no user 'nobody'"):
        rotate_token(runtime.db, "nobody")


@pytest.mark.parametrize("name", ["", "x" * 101, "cw\x00th", " cw", "cw th", "cw\t1", "cw\n"])
def test_a_username_is_one_printable_word(runtime: Runtime, name: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        create_user(runtime.db, name, "auditor")
    assert refused.value.field == "username"
    assert list_users(runtime.db) == []


# -- contact for notifications ---------------------------------------------------------------


def test_a_contact_is_checked_stored_and_changed(engine: Engine) -> None:
    from api.contacts import Contact
    from api.users import set_contact

    create_user(
        engine,
        "coord-kh",
        "coordinator",
        email="coord@lead.kh-syn.example",
        language="km",
        timezone="Asia/Phnom_Penh",
        now=START,
    )
    [account] = list_users(engine)
    assert account.contact == Contact("coord@lead.kh-syn.example", "km", "Asia/Phnom_Penh")

    changed = set_contact(engine, "coord-kh", language="vi", timezone="")
    assert changed.contact == Contact("coord@lead.kh-syn.example", "vi", None)

    bad: list[tuple[dict[str, str], str]] = [
        ({"email": "coord@@lead.kh-syn.example"}, "email"),
        ({"email": "coord@lead.kh-syn.example, other@lead.kh-syn.example"}, "email"),
        ({"language": "fr"}, "language"),
        ({"timezone": "Asia/Phnom Penh"}, "timezone"),
        ({"timezone": "\x00"}, "timezone"),
    ]
    for values, field in bad:
        with pytest.raises(InvalidInput) as refused:
            set_contact(engine, "coord-kh", **values)
        assert refused.value.field == field
        assert "\n" not in str(refused.value)
        assert "lead.kh-syn" not in str(refused.value)
        email, language, zone = (values.get(k) for k in ("email", "language", "timezone"))
        with pytest.raises(InvalidInput):
            create_user(
                engine,
                f"coord-{field}",
                "coordinator",
                email=email,
                language=language,
                timezone=zone,
            )
    assert [a.username for a in list_users(engine)] == ["coord-kh"]
    assert list_users(engine)[0].contact == changed.contact
    with pytest.raises(NotFound):
        set_contact(engine, "coord-kx", language="km")
