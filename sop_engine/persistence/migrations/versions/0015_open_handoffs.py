"""``referrals.handoffs``: the parallel handoffs open on a referral, each at its stage.

A parallel handoff (``handoff: {parallel: true}``) runs beside the case's own state instead
of occupying it: a case in ``action_plan`` may have a justice referral sent and a health
referral accepted at once. The column maps each open one to its stage's state name
(``{"justice_referral": "justice_referral.sent"}``); an ended one is gone from it.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    json = sa.JSON().with_variant(JSONB(), "postgresql")
    with op.batch_alter_table("referrals") as batch:
        batch.add_column(sa.Column("handoffs", json, nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("referrals") as batch:
        batch.drop_column("handoffs")
