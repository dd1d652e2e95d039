"""Timeline checkpoints and full verifications: an audit page verifies from the checkpoint
before it instead of from the first entry. And the indexes the read routes page and count
by: referrals by creation, an agency's tasks and notices by creation, timeline entries by
kind (the escalations compliance counts).

The checkpoints of timelines that already exist are copied from their entries' stored
hashes (every 100th entry, ``CHECKPOINT_EVERY``): they then vouch for the chain as it stood
when this migration ran, as the writer's checkpoints vouch for it as it stood when each was
appended. A full verification compares them with the recomputed chain.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECKPOINT_EVERY = 100
"""As :data:`sop_engine.timeline.checkpoints.CHECKPOINT_EVERY` was when this ran."""


def upgrade() -> None:
    op.create_table(
        "timeline_checkpoints",
        sa.Column("referral_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["referral_id"],
            ["referrals.id"],
            name=op.f("fk_timeline_checkpoints_referral_id_referrals"),
        ),
        sa.PrimaryKeyConstraint("referral_id", "seq", name=op.f("pk_timeline_checkpoints")),
    )
    op.create_table(
        "timeline_verifications",
        sa.Column("referral_id", sa.String(length=36), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("broken_seq", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["referral_id"],
            ["referrals.id"],
            name=op.f("fk_timeline_verifications_referral_id_referrals"),
        ),
        sa.PrimaryKeyConstraint("referral_id", name=op.f("pk_timeline_verifications")),
    )
    columns = ("referral_id", "seq", "hash")
    entries = sa.table("timeline_entries", *(sa.column(c) for c in columns))
    checkpoints = sa.table("timeline_checkpoints", *(sa.column(c) for c in columns))
    op.execute(
        checkpoints.insert().from_select(
            columns,
            sa.select(*(entries.c[c] for c in columns)).where(
                entries.c.seq % CHECKPOINT_EVERY == 0
            ),
        )
    )

    op.create_index("ix_referrals_created", "referrals", ["created_at", "case_code"])
    op.drop_index("ix_tasks_agency", table_name="tasks")
    op.create_index("ix_tasks_agency", "tasks", ["agency_id", "status", "created_at", "id"])
    op.create_index(
        "ix_inbox_created",
        "inbox_messages",
        ["recipient_agency_id", "recipient_role", "created_at", "message_id"],
    )
    op.create_index("ix_timeline_entries_kind", "timeline_entries", ["kind", "at"])


def downgrade() -> None:
    op.drop_index("ix_timeline_entries_kind", table_name="timeline_entries")
    op.drop_index("ix_inbox_created", table_name="inbox_messages")
    op.drop_index("ix_tasks_agency", table_name="tasks")
    op.create_index("ix_tasks_agency", "tasks", ["agency_id", "status"])
    op.drop_index("ix_referrals_created", table_name="referrals")
    op.drop_table("timeline_verifications")
    op.drop_table("timeline_checkpoints")
