"""Four eyes on SOPs: an upload is ``pending`` until a second coordinator approves it (then
``published``) or refuses it (``refused``); every decision is kept in ``sop_reviews``.

Uploads that were drafts become pending: a draft could be published by anyone, a pending
upload only after another coordinator's approval.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 19:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SOURCES = sa.table("sop_sources", sa.column("status", sa.String(16)))


def upgrade() -> None:
    op.create_table(
        "sop_reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("reviewer_id", sa.String(length=100), nullable=False),
        sa.Column("uploaded_by", sa.String(length=100), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sop_reviews")),
    )
    op.create_index("ix_sop_reviews_key", "sop_reviews", ["key", "version", "id"])
    op.execute(_SOURCES.update().where(_SOURCES.c.status == "draft").values(status="pending"))


def downgrade() -> None:
    # Refused uploads were drafts that nobody published: drafts again, as pending ones are.
    op.execute(
        _SOURCES.update()
        .where(_SOURCES.c.status.in_(("pending", "refused")))
        .values(status="draft")
    )
    op.drop_index("ix_sop_reviews_key", table_name="sop_reviews")
    op.drop_table("sop_reviews")
