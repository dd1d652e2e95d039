"""Migration 0005 (published SOPs, their idempotency keys, managed directory entries) goes up
and down and up again, on SQLite and PostgreSQL, leaving the tables before it untouched."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import Engine, func, inspect, select

from sop_engine.persistence import tables
from sop_engine.persistence.migrate import alembic_config, current_revision, upgrade

NEW_TABLES = {"sop_sources", "publishing_requests", "managed_agencies"}


def downgrade(engine: Engine, revision: str) -> None:
    with engine.connect() as connection:
        command.downgrade(alembic_config(connection), revision)


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_0005_goes_up_down_and_up_again(empty_engine: Engine) -> None:
    now = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
    upgrade(empty_engine, "0004")
    assert not NEW_TABLES & table_names(empty_engine)
    with empty_engine.begin() as conn:
        conn.execute(
            tables.users.insert().values(
                id="u-1", username="coord", role="coordinator", token_hash="0" * 64, created_at=now
            )
        )

    upgrade(empty_engine, "0005")
    assert current_revision(empty_engine) == "0005"
    assert table_names(empty_engine) >= NEW_TABLES
    with empty_engine.begin() as conn:
        conn.execute(
            tables.sop_sources.insert().values(
                key="example.corridor",
                version=2,
                title="t",
                source="key: example.corridor\n",
                sha256="0" * 64,
                status="draft",
                uploaded_by="u-1",
                uploaded_at=now,
            )
        )
    indexes = {i["name"] for i in inspect(empty_engine).get_indexes("sop_sources")}
    assert "ix_sop_sources_status" in indexes

    downgrade(empty_engine, "0004")
    assert current_revision(empty_engine) == "0004"
    assert not NEW_TABLES & table_names(empty_engine)
    with empty_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tables.users)).scalar_one() == 1

    upgrade(empty_engine)
    assert table_names(empty_engine) >= NEW_TABLES
    with empty_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tables.sop_sources)).scalar_one() == 0
