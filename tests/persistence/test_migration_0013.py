"""Migration 0013 (user contact) on a database in use, on SQLite and PostgreSQL: existing users
keep their token and get no contact, a contact can be stored after it, and the revision goes
down (dropping the contact, keeping the users) and up again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import Engine, inspect, select

from api.users import create_user, list_users, lookup_token, set_contact
from sop_engine.persistence import tables
from sop_engine.persistence.migrate import alembic_config, current_revision, upgrade

CREATED = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
_U = tables.users


def columns(engine: Engine) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns("users")}


def test_0013_adds_the_users_contact_and_goes_down_and_up_again(empty_engine: Engine) -> None:
    upgrade(empty_engine, "0012")
    with empty_engine.begin() as conn:
        conn.execute(
            _U.insert().values(
                id="u-1",
                username="coord-old",
                role="coordinator",
                token_hash="a" * 64,
                created_at=CREATED,
                token_issued_at=CREATED,
                token_expires_at=CREATED + timedelta(days=90),
            )
        )

    upgrade(empty_engine, "0013")
    assert current_revision(empty_engine) == "0013"
    nullable = {c["name"]: c["nullable"] for c in inspect(empty_engine).get_columns("users")}
    assert (nullable["email"], nullable["language"], nullable["timezone"]) == (True, True, True)
    [old] = list_users(empty_engine)
    assert (old.username, old.contact.email, old.contact.language) == ("coord-old", None, None)
    set_contact(empty_engine, "coord-old", email="old@lead.th-syn.example", language="th")
    made = create_user(empty_engine, "coord-new", "coordinator", timezone="Asia/Yangon")
    with empty_engine.connect() as conn:
        assert lookup_token(conn, made.token, CREATED).username == "coord-new"

    with empty_engine.connect() as conn:
        command.downgrade(alembic_config(conn), "0012")
    assert current_revision(empty_engine) == "0012"
    assert not {"email", "language", "timezone"} & columns(empty_engine)
    with empty_engine.connect() as conn:
        names = conn.execute(select(_U.c.username).order_by(_U.c.username)).scalars().all()
    assert names == ["coord-new", "coord-old"]

    upgrade(empty_engine)
    assert {"email", "language", "timezone"} <= columns(empty_engine)
    assert [a.contact.email for a in list_users(empty_engine)] == [None, None]
