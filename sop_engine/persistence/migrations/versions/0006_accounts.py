"""Accounts: tokens that expire, a shared count of failed authentications, the client of a
refused authentication in the access log, and idempotency records without plain hashes.

- ``users.token_issued_at`` and ``users.token_expires_at``: tokens issued before this
  revision count as issued when their user was created, and expire
  :data:`LEGACY_TOKEN_LIFETIME` after the upgrade (the default lifetime; the upgrade cannot
  read the deployment's setting), so that no user is locked out by upgrading.
- ``auth_failures``: failed authentications per client address and window.
- ``access_log.client``: the client address of a refused authentication.
- ``idempotency_keys.request_hash`` held a plain SHA-256 of the request, which for a referral
  created with identifying facts can be confirmed by guessing them. From now on it holds an
  HMAC under a key derived from the master key (:mod:`sop_engine.runtime.fingerprints`);
  the migration cannot compute one (it has neither the request nor the key), so it replaces
  every old hash with :data:`RETIRED`. A record so marked still answers its retries with its
  first result, without comparing the request.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEGACY_TOKEN_LIFETIME = timedelta(days=90)
RETIRED = "retired:sha256"
"""Kept in step with :data:`sop_engine.runtime.fingerprints.RETIRED` (a test checks it)."""

_STAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("token_issued_at", _STAMP, nullable=True))
        batch.add_column(sa.Column("token_expires_at", _STAMP, nullable=True))
    users = sa.table(
        "users",
        sa.column("created_at", _STAMP),
        sa.column("token_issued_at", _STAMP),
        sa.column("token_expires_at", _STAMP),
    )
    expires = datetime.now(UTC) + LEGACY_TOKEN_LIFETIME
    op.execute(users.update().values(token_issued_at=users.c.created_at, token_expires_at=expires))
    with op.batch_alter_table("users") as batch:
        batch.alter_column("token_issued_at", existing_type=_STAMP, nullable=False)
        batch.alter_column("token_expires_at", existing_type=_STAMP, nullable=False)

    op.create_table(
        "auth_failures",
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("window_started_at", _STAMP, nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("client", name=op.f("pk_auth_failures")),
    )
    op.create_index("ix_auth_failures_window", "auth_failures", ["window_started_at"])
    op.add_column("access_log", sa.Column("client", sa.String(length=64), nullable=True))

    keys = sa.table("idempotency_keys", sa.column("request_hash", sa.String(64)))
    op.execute(keys.update().values(request_hash=RETIRED))


def downgrade() -> None:
    """The old hashes are gone for good: after a downgrade, a retry of a key used before it
    is refused as another request (422), which never runs anything twice."""
    # Not a batch: rebuilding the table on SQLite would lose its AUTOINCREMENT.
    op.drop_column("access_log", "client")
    op.drop_index("ix_auth_failures_window", table_name="auth_failures")
    op.drop_table("auth_failures")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("token_expires_at")
        batch.drop_column("token_issued_at")
