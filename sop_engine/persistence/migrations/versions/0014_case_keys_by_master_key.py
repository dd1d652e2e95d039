"""An index on ``case_keys.master_key_id``: ``GET /ready`` asks, on every probe, whether
stored case keys use a master key id this process's ring lacks (another process rotated
onto a key this one does not have), and ``keys status`` counts case keys per key id. Both
read the index instead of the whole table.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_case_keys_master_key", "case_keys", ["master_key_id"])


def downgrade() -> None:
    op.drop_index("ix_case_keys_master_key", table_name="case_keys")
