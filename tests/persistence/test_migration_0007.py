"""Migration 0007 (timeline checkpoints and full verifications) goes up, down and up again on
SQLite and PostgreSQL, and gives the timelines that exist already their checkpoints, copied
from their entries, so that a page of an old timeline verifies from its checkpoint too."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import command
from sqlalchemy import Engine, inspect, select

from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction
from sop_engine.persistence.migrate import alembic_config, current_revision, upgrade
from sop_engine.timeline.chain import GENESIS, entry_hash
from sop_engine.timeline.entries import entry_content
from sop_engine.timeline.verify import verify_range, verify_referral_timeline

NEW_TABLES = {"timeline_checkpoints", "timeline_verifications"}
NOW = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
LENGTH = 230


def _old_timeline(engine: Engine, referral_id: str) -> list[dict[str, Any]]:
    """A referral and a chained timeline of ``LENGTH`` entries, as 0005 stored them."""
    entries, prev = [], GENESIS
    for seq in range(1, LENGTH + 1):
        entry: dict[str, Any] = {
            "referral_id": referral_id,
            "seq": seq,
            "at": NOW,
            "kind": "transition",
            "actor_id": "u-synthetic",
            "actor_role": "caseworker",
            "actor_agency_id": "TH-NGO-1",
            "event": "volley",
            "from_state": "ping",
            "to_state": "pong",
            "consent_grant_id": None,
            "disclosed_to": None,
            "disclosed_fields": [],
            "override": False,
            "details": {},
        }
        entry["prev_hash"], entry["hash"] = prev, entry_hash(prev, entry_content(entry))
        prev = entry["hash"]
        entries.append(entry)
    with engine.begin() as conn:
        # The table as 0005 made it (``tables.referrals`` has columns of later revisions).
        referrals = sa.Table("referrals", sa.MetaData(), autoload_with=conn)
        conn.execute(
            referrals.insert(),
            {
                "id": referral_id,
                "case_code": f"CODE-{referral_id}",
                "sop_key": "bench.pingpong",
                "sop_version": 1,
                "state": "pong",
                "version": LENGTH,
                "origin_country": "TH",
                "destination_country": "LA",
                "owner_agency_id": "TH-NGO-1",
                "agencies": {},
                "facts": {},
                "sealed_fields": [],
                "created_at": NOW,
                "updated_at": NOW,
                "timeline_seq": LENGTH,
                "head_hash": prev,
            },
        )
        conn.execute(tables.timeline_entries.insert(), entries)
    return entries


def test_0007_copies_the_checkpoints_of_existing_timelines_and_goes_down_and_up(
    empty_engine: Engine,
) -> None:
    upgrade(empty_engine, "0005")
    assert not NEW_TABLES & set(inspect(empty_engine).get_table_names())
    entries = _old_timeline(empty_engine, "r-old")

    upgrade(empty_engine, "0007")
    assert current_revision(empty_engine) == "0007"
    checkpoints = tables.timeline_checkpoints
    with read_transaction(empty_engine) as conn:
        copied = conn.execute(
            select(checkpoints.c.referral_id, checkpoints.c.seq, checkpoints.c.hash)
        ).all()
        assert sorted(copied) == [
            ("r-old", 100, entries[99]["hash"]),
            ("r-old", 200, entries[199]["hash"]),
        ]
        stretch = verify_range(conn, "r-old", 201, 230)
        assert (stretch.anchor, stretch.ok) == (200, True)
        assert verify_referral_timeline(conn, "r-old").ok

    with empty_engine.connect() as connection:
        command.downgrade(alembic_config(connection), "0005")
    assert not NEW_TABLES & set(inspect(empty_engine).get_table_names())
    upgrade(empty_engine)
    assert set(inspect(empty_engine).get_table_names()) >= NEW_TABLES
