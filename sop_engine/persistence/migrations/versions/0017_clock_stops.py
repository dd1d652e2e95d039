"""Case clocks: ``clock_stops`` keeps, per referral, the clinical clocks that ended for good
(their ``stops_when`` held, or they were waived with a reason). Their timers live in
``timers`` with the reserved state ``@clock``.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 19:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clock_stops",
        sa.Column("referral_id", sa.String(length=36), nullable=False),
        sa.Column("clock", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("by_user_id", sa.String(length=100), nullable=False),
        sa.Column("timeline_seq", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["referral_id"],
            ["referrals.id"],
            name=op.f("fk_clock_stops_referral_id_referrals"),
        ),
        sa.PrimaryKeyConstraint("referral_id", "clock", name=op.f("pk_clock_stops")),
    )


def downgrade() -> None:
    op.drop_table("clock_stops")
