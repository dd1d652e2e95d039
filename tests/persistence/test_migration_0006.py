"""Migration 0006 (accounts) on a database in use, on SQLite and PostgreSQL: existing users keep
working with a token that now expires, old idempotency records lose their plain hashes but
still replay, and the revision goes down and up again."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import Engine, inspect, select, text

from sop_engine.persistence import tables
from sop_engine.persistence.migrate import alembic_config, current_revision, upgrade
from sop_engine.runtime.fingerprints import RETIRED

CREATED = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
_U = tables.users
_I = tables.idempotency_keys


def columns(engine: Engine, name: str) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns(name)}


def test_0006_on_a_database_in_use_goes_up_down_and_up_again(empty_engine: Engine) -> None:
    upgrade(empty_engine, "0005")
    plain = hashlib.sha256(b'{"facts":{"survivor_name":"Synthetic Survivor"}}').hexdigest()
    with empty_engine.begin() as conn:
        conn.execute(
            _U.insert().values(
                id="u-1", username="cw", role="caseworker", token_hash="a" * 64, created_at=CREATED
            )
        )
        conn.execute(
            _I.insert().values(
                actor_id="u-1",
                key="referral.create:k",
                referral_id="r-1",
                request_hash=plain,
                result={"case_code": "AAAA-BBBB-CCCC"},
                created_at=CREATED,
            )
        )

    before = datetime.now(UTC)
    upgrade(empty_engine, "0006")
    after = datetime.now(UTC)
    assert current_revision(empty_engine) == "0006"
    with empty_engine.connect() as conn:
        user = conn.execute(select(_U.c.token_issued_at, _U.c.token_expires_at)).one()
        record = conn.execute(select(_I)).one()
    assert user.token_issued_at == CREATED
    assert before + timedelta(days=90) <= user.token_expires_at <= after + timedelta(days=90)
    assert record.request_hash == RETIRED
    assert record.result == {"case_code": "AAAA-BBBB-CCCC"}
    assert "auth_failures" in inspect(empty_engine).get_table_names()
    assert "client" in columns(empty_engine, "access_log")
    nullable = {c["name"]: c["nullable"] for c in inspect(empty_engine).get_columns("users")}
    assert nullable["token_expires_at"] is False
    assert nullable["token_issued_at"] is False

    with empty_engine.connect() as conn:
        command.downgrade(alembic_config(conn), "0005")
    assert "auth_failures" not in inspect(empty_engine).get_table_names()
    assert "token_expires_at" not in columns(empty_engine, "users")
    assert "client" not in columns(empty_engine, "access_log")
    with empty_engine.connect() as conn:
        assert conn.execute(select(_U.c.username)).scalars().all() == ["cw"]
        if empty_engine.dialect.name == "sqlite":
            sql = conn.execute(
                text("SELECT sql FROM sqlite_master WHERE name = 'access_log'")
            ).scalar_one()
            assert "AUTOINCREMENT" in sql  # ids are never reused, even after a downgrade

    upgrade(empty_engine)
    assert "token_expires_at" in columns(empty_engine, "users")
