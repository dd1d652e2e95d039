"""``sop-engine users``: add, list, set-contact, disable, enable and rotate-token. Tokens
are printed once, on stdout; everything else goes to stderr, so that
``TOKEN=$(sop-engine users add ...)`` keeps only the token. The work is :mod:`api.users`'s."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NoReturn

import click

from api.roles import ROLES as USER_ROLES
from cli.database import database, settings_engine

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from api.users import Account
    from sop_engine.directory import ServiceDirectory

__all__ = ["users"]


@click.group()
def users() -> None:
    """Users of the API and their bearer tokens (which expire: SOP_ENGINE_TOKEN_LIFETIME_DAYS,
    by default 90; 'rotate-token' gives a new one)."""


def _token_lifetime() -> timedelta:
    from sop_engine.settings import get_settings

    return timedelta(days=get_settings().token_lifetime_days)


def _agency_directory(engine: Engine) -> ServiceDirectory:
    """The service directory's files with the agencies kept through the API over them."""
    from sop_engine.directory.managed import load_managed_directory
    from sop_engine.errors import DefinitionError
    from sop_engine.settings import get_settings

    folder = get_settings().resolved_directory_dir()
    try:
        return load_managed_directory(engine, folder)
    except DefinitionError as exc:
        click.echo(exc.report(), err=True)
        click.echo(f"the service directory in {folder} is broken; --agency needs it", err=True)
        sys.exit(1)


def _expiry(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC"


_CONTACT_FIELDS = ("agency", "email", "language", "timezone")
"""Fields named by the option that gave them, in an error."""


def _contact_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--email``, ``--language`` and ``--timezone``: how notifications reach the user."""
    for option in reversed(
        (
            click.option(
                "--email",
                metavar="ADDRESS",
                help="Where her role's notifications reach her by e-mail.",
            ),
            click.option(
                "--language",
                metavar="LANG",
                help="The language she reads them in: en, th, km, lo, my or vi.",
            ),
            click.option(
                "--timezone",
                metavar="ZONE",
                help="The IANA time zone she reads due times in, such as Asia/Bangkok.",
            ),
        )
    ):
        command = option(command)
    return command


def _refuse(exc: Exception) -> NoReturn:
    field = getattr(exc, "field", None)
    click.echo(f"--{field}: {exc}" if field in _CONTACT_FIELDS else str(exc), err=True)
    sys.exit(1)


@users.command("add")
@click.argument("username")
@click.option(
    "--role",
    required=True,
    type=click.Choice(USER_ROLES),
    help="What the user may do through the API.",
)
@click.option(
    "--agency",
    "agency_id",
    metavar="AGENCY",
    help="The agency the user acts for: an id of the service directory.",
)
@_contact_options
def users_add(
    username: str,
    role: str,
    *,
    agency_id: str | None,
    email: str | None,
    language: str | None,
    timezone: str | None,
) -> None:
    """Create a user and print its bearer token, once: only its hash is stored."""
    from api.users import create_user
    from sop_engine.errors import InvalidInput

    engine = settings_engine()
    with database(engine):
        directory = _agency_directory(engine) if agency_id else None
        try:
            created = create_user(
                engine,
                username,
                role,
                agency_id,
                directory=directory,
                lifetime=_token_lifetime(),
                email=email,
                language=language,
                timezone=timezone,
            )
        except InvalidInput as exc:
            _refuse(exc)
    click.echo(created.token)
    click.echo(
        f"user {username} ({role}) created; the token above is shown only this once and "
        f"expires {_expiry(created.expires_at)}",
        err=True,
    )


@users.command("list")
def users_list() -> None:
    """One line per user: USERNAME, ROLE, AGENCY, STATUS (active, disabled, expired), when
    the token expires, the user id that timelines and the access log name, then her EMAIL,
    LANGUAGE and TIMEZONE ('-' for none). No token."""
    from api.users import list_users

    engine = settings_engine()
    with database(engine):
        accounts = list_users(engine)
    now = datetime.now(UTC)
    for a in accounts:
        click.echo(
            f"{a.username}\t{a.role}\t{a.agency_id or '-'}\t{a.status(now)}\t"
            f"expires {_expiry(a.token_expires_at)}\t{a.id}\t"
            f"{a.contact.email or '-'}\t{a.contact.language or '-'}\t{a.contact.timezone or '-'}"
        )
    click.echo(f"{len(accounts)} users.", err=True)


def _change_user(change: Callable[[Engine], Account]) -> Account:
    from sop_engine.errors import InvalidInput, NotFound

    engine = settings_engine()
    with database(engine):
        try:
            return change(engine)
        except NotFound as exc:
            click.echo(str(exc), err=True)
            sys.exit(1)
        except InvalidInput as exc:
            _refuse(exc)


@users.command("set-contact")
@click.argument("username")
@_contact_options
def users_set_contact(
    username: str, email: str | None, language: str | None, timezone: str | None
) -> None:
    """Change how notifications reach the user: each option given replaces hers, an empty
    one ('--email ""') removes it, the others stay."""
    from api.users import set_contact

    account = _change_user(
        lambda engine: set_contact(
            engine, username, email=email, language=language, timezone=timezone
        )
    )
    c = account.contact
    zone = c.timezone or "none (the SOP's, else UTC)"
    click.echo(
        f"user {username}: email {'set' if c.email else 'none'}, language "
        f"{c.language or 'none (English)'}, time zone {zone}",
        err=True,
    )


@users.command("disable")
@click.argument("username")
def users_disable(username: str) -> None:
    """Refuse the user's token from the next request on, on every API process."""
    from api.users import set_disabled

    _change_user(lambda engine: set_disabled(engine, username, True))
    click.echo(f"user {username} disabled; the token is refused from now on", err=True)


@users.command("enable")
@click.argument("username")
def users_enable(username: str) -> None:
    """Accept the user's token again (while it has not expired)."""
    from api.users import set_disabled

    account = _change_user(lambda engine: set_disabled(engine, username, False))
    click.echo(f"user {username} enabled", err=True)
    if account.status(datetime.now(UTC)) == "expired":
        click.echo(
            f"the token expired {_expiry(account.token_expires_at)}: make a new one with "
            f"'sop-engine users rotate-token {username}'",
            err=True,
        )


@users.command("rotate-token")
@click.argument("username")
def users_rotate_token(username: str) -> None:
    """Print a new bearer token for the user, once, with a fresh lifetime; the old token
    stops working at once. Her id, role and agency stay."""
    from api.users import rotate_token

    token = ""

    def rotate(engine: Engine) -> Account:
        nonlocal token
        account, token = rotate_token(engine, username, lifetime=_token_lifetime())
        return account

    account = _change_user(rotate)
    click.echo(token)
    click.echo(
        f"new token for {username}, shown only this once, expires "
        f"{_expiry(account.token_expires_at)}; the old one no longer works",
        err=True,
    )
    if account.disabled_at is not None:
        click.echo(
            f"{username} is disabled: 'sop-engine users enable {username}' before the token "
            "can be used",
            err=True,
        )
