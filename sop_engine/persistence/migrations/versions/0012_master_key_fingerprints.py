"""Master key fingerprints: a one-way fingerprint of each master key the database is used
with, checked at every start, so that a wrong key under a known id refuses to start.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 00:15:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "master_key_fingerprints",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_master_key_fingerprints")),
    )


def downgrade() -> None:
    op.drop_table("master_key_fingerprints")
