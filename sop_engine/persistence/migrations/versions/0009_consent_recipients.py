"""Consent names its recipient; disclosures keep the values as disclosed; facts keep who
wrote them.

- ``consent_grants.recipient_types``: the agency types a grant covers when it names no one
  agency (None for older grants: any type of the scope's slot, as before);
- ``disclosures.field_values`` and ``disclosures.sealed_values``: the disclosed fields' values at
  the time of disclosure (identifying ones sealed with the case key);
- ``referrals.fact_writers``: which agency wrote each fact that the managing agency did not.

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-02 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("consent_grants") as batch:
        batch.add_column(sa.Column("recipient_types", _JSON, nullable=True))
    with op.batch_alter_table("disclosures") as batch:
        batch.add_column(sa.Column("field_values", _JSON, nullable=True))
        batch.add_column(sa.Column("sealed_values", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("referrals") as batch:
        batch.add_column(
            sa.Column("fact_writers", _JSON, nullable=False, server_default=sa.text("'{}'"))
        )


def downgrade() -> None:
    with op.batch_alter_table("referrals") as batch:
        batch.drop_column("fact_writers")
    with op.batch_alter_table("disclosures") as batch:
        batch.drop_column("sealed_values")
        batch.drop_column("field_values")
    with op.batch_alter_table("consent_grants") as batch:
        batch.drop_column("recipient_types")
