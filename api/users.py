"""API users and their bearer tokens. Only the SHA-256 of a token is stored.

A token is 32 random bytes (URL-safe base64), so a hash lookup is as strong as a compare:
nobody can guess a token whose hash is in the table, and the lookup needs no constant-time
comparison since the secret itself is never compared.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine, bindparam, select
from sqlalchemy.exc import IntegrityError

from api.roles import AGENCY_ROLES, ROLES
from sop_engine.errors import InvalidInput
from sop_engine.persistence.db import read_transaction
from sop_engine.persistence.models import ManagedAgency, User, table

if TYPE_CHECKING:
    from sop_engine.directory import ServiceDirectory

__all__ = [
    "ROLES",
    "NewUser",
    "Principal",
    "create_user",
    "find_by_id",
    "find_by_token",
    "hash_token",
]

_U = table(User)
_M = table(ManagedAgency)


@dataclass(frozen=True, slots=True)
class Principal:
    """The user a request is made by, as the routes see it: never the token or its hash."""

    id: str
    username: str
    role: str
    agency_id: str | None
    agency_types: tuple[str, ...] = ()
    """Her agency's types, as the service directory lists them (set per request by
    :func:`api.deps.authorize`; empty for an agency the directory does not list)."""


@dataclass(frozen=True, slots=True)
class NewUser:
    principal: Principal
    token: str
    """Shown once; only its hash is stored."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_user(
    db: Engine,
    username: str,
    role: str,
    agency_id: str | None = None,
    *,
    now: datetime | None = None,
) -> NewUser:
    """Create a user with a fresh token; refuse an unknown role or a taken username."""
    if not username or len(username) > 100:
        raise InvalidInput("a username has 1 to 100 characters", field="username")
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r} (roles: {', '.join(ROLES)})", field="role")
    if role in AGENCY_ROLES and not agency_id:
        raise InvalidInput(f"a {role} acts for an agency; give one", field="agency")
    token = secrets.token_urlsafe(32)
    principal = Principal(str(uuid.uuid4()), username, role, agency_id or None)
    try:
        with db.begin() as conn:
            conn.execute(
                _U.insert().values(
                    id=principal.id,
                    username=username,
                    role=role,
                    agency_id=principal.agency_id,
                    token_hash=hash_token(token),
                    created_at=now or datetime.now(UTC),
                    disabled_at=None,
                )
            )
    except IntegrityError:
        raise InvalidInput(f"the username {username!r} is taken", field="username") from None
    return NewUser(principal, token)


def find_by_id(db: Engine, user_id: str) -> Principal | None:
    """The enabled user with this id, or None."""
    with read_transaction(db) as conn:
        row = conn.execute(
            select(_U.c.id, _U.c.username, _U.c.role, _U.c.agency_id).where(
                _U.c.id == user_id, _U.c.disabled_at.is_(None)
            )
        ).first()
    return Principal(row.id, row.username, row.role, row.agency_id) if row else None


_BY_TOKEN = (
    select(_U.c.id, _U.c.username, _U.c.role, _U.c.agency_id, _M.c.entry)
    .select_from(_U.outerjoin(_M, _M.c.id == _U.c.agency_id))
    .where(_U.c.token_hash == bindparam("p_hash"), _U.c.disabled_at.is_(None))
)
"""Built once: every request runs it. The agency's managed directory entry comes along, for
its types (one query, not two)."""


def find_by_token(
    db: Engine, token: str, directory: ServiceDirectory | None = None
) -> Principal | None:
    """The enabled user holding ``token``, or None; with her agency's types, from its
    managed directory entry, else from ``directory`` (the files), else none."""
    with read_transaction(db) as conn:
        row = conn.execute(_BY_TOKEN, {"p_hash": hash_token(token)}).first()
    if row is None:
        return None
    # Imported here: the directory's loader is no cost of ``sop-engine users add``.
    from sop_engine.directory.managed import types_of  # noqa: PLC0415

    types = types_of(row.agency_id, row.entry, directory) if row.agency_id is not None else ()
    return Principal(row.id, row.username, row.role, row.agency_id, types)
