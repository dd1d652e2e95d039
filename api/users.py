"""API users and their bearer tokens: creating, listing, disabling and enabling users, rotating
their tokens, and finding the user a request's token belongs to. Only the SHA-256 of a
token is stored.

A token is 32 random bytes (URL-safe base64), so a hash lookup is as strong as a compare:
nobody can guess a token whose hash is in the table, and the lookup needs no constant-time
comparison since the secret itself is never compared.

Every token expires (``token_expires_at``, by default :data:`DEFAULT_TOKEN_LIFETIME` after
it was made); rotating a token replaces its hash, so the old token stops working with the
next request, and gives the new one a fresh lifetime. The user keeps her id, role and
agency, so timelines and access logs still name her. A disabled user's tokens are refused
at once: every request looks the token up again; nothing is cached.

A user may carry a contact for notifications (:mod:`api.contacts`): an e-mail address, a
language and a time zone, given when she is created or changed later (:func:`set_contact`).
The dispatcher e-mails a role's messages to its active users who have an address.
"""

from __future__ import annotations

import difflib
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Connection, Engine, bindparam, select, update
from sqlalchemy.exc import IntegrityError

from api.contacts import Contact, check_email, check_language, check_timezone
from api.roles import AGENCY_ROLES, ROLES
from sop_engine.errors import InvalidInput, NotFound
from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction

if TYPE_CHECKING:
    from sop_engine.directory import ServiceDirectory

__all__ = [
    "DEFAULT_TOKEN_LIFETIME",
    "ROLES",
    "Account",
    "NewUser",
    "Principal",
    "TokenRefused",
    "create_user",
    "find_by_id",
    "hash_token",
    "list_users",
    "lookup_token",
    "rotate_token",
    "set_contact",
    "set_disabled",
]

_U = tables.users
_M = tables.managed_agencies

DEFAULT_TOKEN_LIFETIME = timedelta(days=90)
"""The settings' default (``SOP_ENGINE_TOKEN_LIFETIME_DAYS``)."""


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
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Account:
    """A user as ``sop-engine users list`` shows her: never her token nor its hash."""

    id: str
    username: str
    role: str
    agency_id: str | None
    created_at: datetime
    disabled_at: datetime | None
    token_issued_at: datetime
    token_expires_at: datetime
    contact: Contact = Contact()  # noqa: RUF009 (frozen: one shared value is safe)

    def status(self, now: datetime) -> Literal["active", "disabled", "expired"]:
        if self.disabled_at is not None:
            return "disabled"
        return "expired" if now >= self.token_expires_at else "active"


Reason = Literal["unknown", "disabled", "expired"]


class TokenRefused(Exception):
    """A local token that is no user's, a disabled user's, or expired. ``user`` is the
    token's holder when it is known (to log whose token it was), never shown to the caller."""

    def __init__(self, reason: Reason, message: str, user: Principal | None = None) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.user = user


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_agency(agency_id: str, directory: ServiceDirectory) -> None:
    try:
        directory.agency(agency_id)
    except NotFound as exc:
        raise InvalidInput(str(exc), field="agency") from None


def _checked_contact(email: str | None, language: str | None, timezone: str | None) -> Contact:
    """The contact as stored; "" or None for a field means none."""
    return Contact(
        email=check_email(email) if email else None,
        language=check_language(language) if language else None,
        timezone=check_timezone(timezone) if timezone else None,
    )


def create_user(
    db: Engine,
    username: str,
    role: str,
    agency_id: str | None = None,
    *,
    directory: ServiceDirectory | None = None,
    lifetime: timedelta = DEFAULT_TOKEN_LIFETIME,
    now: datetime | None = None,
    email: str | None = None,
    language: str | None = None,
    timezone: str | None = None,
) -> NewUser:
    """Create a user with a fresh token valid for ``lifetime``; refuse an unknown role, a
    taken username, and, given the ``directory`` (the files with the managed entries over
    them), an agency it does not list (with a "did you mean"). ``email``, ``language`` and
    ``timezone`` are her contact for notifications, each checked (:mod:`api.contacts`)."""
    if not username or len(username) > 100:
        raise InvalidInput("a username has 1 to 100 characters", field="username")
    if not username.isprintable() or username.split() != [username]:
        raise InvalidInput("a username has no spaces, tabs or control characters", field="username")
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r} (roles: {', '.join(ROLES)})", field="role")
    if role in AGENCY_ROLES and not agency_id:
        raise InvalidInput(f"a {role} acts for an agency; give one", field="agency")
    if agency_id and directory is not None:
        _check_agency(agency_id, directory)
    contact = _checked_contact(email, language, timezone)
    token = secrets.token_urlsafe(32)
    principal = Principal(str(uuid.uuid4()), username, role, agency_id or None)
    now = now or datetime.now(UTC)
    try:
        with db.begin() as conn:
            conn.execute(
                _U.insert().values(
                    id=principal.id,
                    username=username,
                    role=role,
                    agency_id=principal.agency_id,
                    token_hash=hash_token(token),
                    created_at=now,
                    disabled_at=None,
                    token_issued_at=now,
                    token_expires_at=now + lifetime,
                    email=contact.email,
                    language=contact.language,
                    timezone=contact.timezone,
                )
            )
    except IntegrityError:
        raise InvalidInput(f"the username {username!r} is taken", field="username") from None
    return NewUser(principal, token, now + lifetime)


def _account(row: Any) -> Account:
    return Account(
        id=row.id,
        username=row.username,
        role=row.role,
        agency_id=row.agency_id,
        created_at=row.created_at,
        disabled_at=row.disabled_at,
        token_issued_at=row.token_issued_at,
        token_expires_at=row.token_expires_at,
        contact=Contact(row.email, row.language, row.timezone),
    )


_ACCOUNT_COLUMNS = (
    _U.c.id,
    _U.c.username,
    _U.c.role,
    _U.c.agency_id,
    _U.c.created_at,
    _U.c.disabled_at,
    _U.c.token_issued_at,
    _U.c.token_expires_at,
    _U.c.email,
    _U.c.language,
    _U.c.timezone,
)


def list_users(db: Engine) -> list[Account]:
    """Every user, by username."""
    with db.connect() as conn:
        rows = conn.execute(select(*_ACCOUNT_COLUMNS).order_by(_U.c.username)).all()
    return [_account(r) for r in rows]


def _change(conn: Connection, username: str, **values: Any) -> Account:
    changed = conn.execute(update(_U).where(_U.c.username == username).values(**values)).rowcount
    if not changed:
        names = conn.execute(select(_U.c.username)).scalars().all()
        close = difflib.get_close_matches(username, names, n=1, cutoff=0.6)
        raise NotFound(
            f"no user {username!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        )
    return _account(conn.execute(select(*_ACCOUNT_COLUMNS).where(_U.c.username == username)).one())


def set_disabled(
    db: Engine, username: str, disabled: bool, *, now: datetime | None = None
) -> Account:
    """Disable the user (her tokens are refused from the next request on) or enable her
    again (her token is accepted again if it has not expired meanwhile).

    :raises NotFound: no user has this username.
    """
    stamp = (now or datetime.now(UTC)) if disabled else None
    with db.begin() as conn:
        return _change(conn, username, disabled_at=stamp)


def set_contact(
    db: Engine,
    username: str,
    *,
    email: str | None = None,
    language: str | None = None,
    timezone: str | None = None,
) -> Account:
    """Change the user's contact for notifications: each field given replaces hers, ``""``
    removes it, None leaves it as it is. Every field given is checked before anything is
    stored (:mod:`api.contacts`).

    :raises InvalidInput: a field is not an address, a template language or a time zone, or
        no field is given.
    :raises NotFound: no user has this username.
    """
    given = {"email": email, "language": language, "timezone": timezone}
    checked = _checked_contact(email, language, timezone)
    values = {name: getattr(checked, name) for name, value in given.items() if value is not None}
    if not values:
        raise InvalidInput("nothing to change: give an email, a language or a time zone")
    with db.begin() as conn:
        return _change(conn, username, **values)


def rotate_token(
    db: Engine,
    username: str,
    *,
    lifetime: timedelta = DEFAULT_TOKEN_LIFETIME,
    now: datetime | None = None,
) -> tuple[Account, str]:
    """Give the user a new token valid for ``lifetime``; her old token stops working at
    once. Id, role, agency and whether she is disabled stay as they are.

    :raises NotFound: no user has this username.
    """
    token = secrets.token_urlsafe(32)
    now = now or datetime.now(UTC)
    with db.begin() as conn:
        account = _change(
            conn,
            username,
            token_hash=hash_token(token),
            token_issued_at=now,
            token_expires_at=now + lifetime,
        )
    return account, token


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
    select(
        _U.c.id,
        _U.c.username,
        _U.c.role,
        _U.c.agency_id,
        _U.c.disabled_at,
        _U.c.token_expires_at,
        _M.c.entry,
    )
    .select_from(_U.outerjoin(_M, _M.c.id == _U.c.agency_id))
    .where(_U.c.token_hash == bindparam("p_hash"))
)
"""Built once: every request runs it. The agency's managed directory entry comes along, for
its types (one query, not two)."""


def lookup_token(
    conn: Connection, token: str, now: datetime, directory: ServiceDirectory | None = None
) -> Principal:
    """The enabled user holding ``token`` while it has not expired, with her agency's types
    (from its managed directory entry, else from ``directory``, the files, else none).

    :raises TokenRefused: the token is no user's, her user is disabled, or it expired.
    """
    row = conn.execute(_BY_TOKEN, {"p_hash": hash_token(token)}).first()
    if row is None:
        raise TokenRefused("unknown", "the bearer token is unknown")
    holder = Principal(row.id, row.username, row.role, row.agency_id)
    if row.disabled_at is not None:
        raise TokenRefused("disabled", "the bearer token's user is disabled", holder)
    if now >= row.token_expires_at:
        raise TokenRefused(
            "expired",
            f"the bearer token expired at {row.token_expires_at:%Y-%m-%d %H:%M} UTC; "
            "ask an operator for a new one (sop-engine users rotate-token)",
            holder,
        )
    # Imported here: the directory's loader is no cost of ``sop-engine users add``.
    from sop_engine.directory.managed import types_of  # noqa: PLC0415

    types = types_of(row.agency_id, row.entry, directory) if row.agency_id is not None else ()
    return Principal(row.id, row.username, row.role, row.agency_id, types)
