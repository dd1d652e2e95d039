"""Migration 0010 (four eyes on SOPs) goes up, down and up again on SQLite and PostgreSQL:
the drafts stored before it become pending uploads, which only a second coordinator can
publish, and the published rows stay published."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import Engine, inspect, select

from sop_engine.persistence import tables
from sop_engine.persistence.migrate import alembic_config, current_revision, upgrade

NOW = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
_S = tables.sop_sources


def statuses(engine: Engine) -> dict[int, str]:
    with engine.connect() as conn:
        return {r.version: r.status for r in conn.execute(select(_S.c.version, _S.c.status))}


def test_0010_makes_drafts_pending_and_goes_down_and_up_again(empty_engine: Engine) -> None:
    upgrade(empty_engine, "0009")
    with empty_engine.begin() as conn:
        for version, status in ((2, "draft"), (3, "published")):
            conn.execute(
                _S.insert().values(
                    key="example.corridor",
                    version=version,
                    title="t",
                    source="key: example.corridor\n",
                    sha256="0" * 64,
                    status=status,
                    uploaded_by="u-1",
                    uploaded_at=NOW,
                )
            )

    upgrade(empty_engine, "0010")
    assert current_revision(empty_engine) == "0010"
    assert statuses(empty_engine) == {2: "pending", 3: "published"}
    with empty_engine.begin() as conn:
        conn.execute(
            tables.sop_reviews.insert().values(
                key="example.corridor",
                version=3,
                sha256="0" * 64,
                decision="approved",
                reviewer_id="u-2",
                uploaded_by="u-1",
                comment=None,
                decided_at=NOW,
            )
        )
        conn.execute(_S.update().where(_S.c.version == 2).values(status="refused"))
    indexes = {i["name"] for i in inspect(empty_engine).get_indexes("sop_reviews")}
    assert "ix_sop_reviews_key" in indexes

    with empty_engine.connect() as conn:
        command.downgrade(alembic_config(conn), "0009")
    assert current_revision(empty_engine) == "0009"
    assert "sop_reviews" not in inspect(empty_engine).get_table_names()
    assert statuses(empty_engine) == {2: "draft", 3: "published"}

    upgrade(empty_engine)
    assert statuses(empty_engine) == {2: "pending", 3: "published"}
