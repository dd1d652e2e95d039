"""The access log: every read of protected data, and every refused attempt.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "access_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_id", sa.String(length=100), nullable=False),
        sa.Column("actor_role", sa.String(length=64), nullable=False),
        sa.Column("actor_agency_id", sa.String(length=100), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("referral_id", sa.String(length=36), nullable=True),
        sa.Column("fields", _JSON, nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_log")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_access_log_referral", "access_log", ["referral_id", "id"])
    op.create_index("ix_access_log_actor", "access_log", ["actor_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_access_log_actor", table_name="access_log")
    op.drop_index("ix_access_log_referral", table_name="access_log")
    op.drop_table("access_log")
