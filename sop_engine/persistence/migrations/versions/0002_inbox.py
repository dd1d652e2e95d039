"""The in-app inbox: notifications rendered for an agency, listed by the API.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 19:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbox_messages",
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("referral_id", sa.String(length=36), nullable=False),
        sa.Column("case_code", sa.String(length=32), nullable=False),
        sa.Column("recipient_role", sa.String(length=64), nullable=False),
        sa.Column("recipient_agency_id", sa.String(length=100), nullable=True),
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["referral_id"], ["referrals.id"], name=op.f("fk_inbox_messages_referral_id_referrals")
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_inbox_messages")),
    )
    op.create_index(
        "ix_inbox_agency", "inbox_messages", ["recipient_agency_id", "recipient_role", "read_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_inbox_agency", table_name="inbox_messages")
    op.drop_table("inbox_messages")
