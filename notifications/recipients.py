"""Who reads a message, in which language and time zone, and by which channel.

- A message for an **agency** goes to the agency as its service directory entry describes
  it (:func:`find_recipient`): the first of its languages the template is written in, its
  country's time zone, its channel and address.
- A message for a **role without an agency** (an SOP's coordinators, say) has no directory
  entry: the role's in-app inbox reads it in English in the SOP's declared time zone (else
  UTC), and each active user of the role with an e-mail address also gets her own copy
  (:func:`role_members`, :func:`member_recipient`) in her language and time zone.

A member's copy carries its own message id, :func:`copy_id`: the same for one message and
one user on every attempt, so that her mail client drops a repeat, and different for each
user, so that no copy is taken for another's duplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType

from sqlalchemy import Engine, select

from notifications.catalogue import FALLBACK_LANGUAGE, TEMPLATES_DIR, languages_of
from sop_engine.directory import ServiceDirectory
from sop_engine.errors import NotFound
from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction

__all__ = [
    "COUNTRY_TIMEZONES",
    "DEFAULT_TIMEZONE",
    "EMAIL",
    "IN_APP",
    "Member",
    "Recipient",
    "copy_id",
    "find_recipient",
    "member_recipient",
    "role_members",
]

log = logging.getLogger(__name__)

_U = tables.users
IN_APP = "in_app"
EMAIL = "email"
DEFAULT_TIMEZONE = "UTC"
COUNTRY_TIMEZONES: Mapping[str, str] = MappingProxyType(
    {
        "TH": "Asia/Bangkok",
        "KH": "Asia/Phnom_Penh",
        "LA": "Asia/Vientiane",
        "VN": "Asia/Ho_Chi_Minh",
        "MM": "Asia/Yangon",
    }
)
"""The time zone a country's agencies read due times in (Myanmar is UTC+06:30)."""


@dataclass(frozen=True, slots=True)
class Recipient:
    """How a message is read: ``language`` (one the template is written in) and
    ``timezone``; and ``channel`` and ``address`` when it also leaves by email or webhook."""

    language: str
    timezone: str
    channel: str | None = None
    address: str | None = None


@dataclass(frozen=True, slots=True)
class Member:
    """An active user holding a role, with the e-mail address her copies go to."""

    id: str
    email: str
    language: str | None
    timezone: str | None


def find_recipient(
    directory: ServiceDirectory,
    agency_id: str | None,
    template: str,
    templates: Path = TEMPLATES_DIR,
    *,
    sop_timezone: str | None = None,
) -> Recipient:
    """The recipient of ``template`` at ``agency_id`` (None: a role without an agency).

    The language is the first of the agency's languages that the template is written in
    (under ``templates``), else English; the time zone is its country's. An agency the
    directory does not list, or none, reads English in the SOP's time zone
    (``sop_timezone``), else UTC, in the in-app inbox.
    """
    fallback = Recipient(FALLBACK_LANGUAGE, sop_timezone or DEFAULT_TIMEZONE)
    if agency_id is None:
        return fallback
    try:
        agency = directory.agency(agency_id)
    except NotFound:
        log.warning("agency %s is not in the service directory: in-app inbox only", agency_id)
        return fallback
    written = languages_of(template, templates)
    language = next((lang for lang in agency.languages if lang in written), FALLBACK_LANGUAGE)
    timezone = COUNTRY_TIMEZONES.get(agency.country, DEFAULT_TIMEZONE)
    if agency.contact_channel == IN_APP or not agency.contact_address:
        return Recipient(language, timezone)
    return Recipient(language, timezone, agency.contact_channel, agency.contact_address)


def role_members(db: Engine, role: str, now: datetime) -> list[Member]:
    """The users holding ``role`` who have an e-mail address and are active at ``now``
    (not disabled, their token not expired), by id, whatever their agency."""
    query = (
        select(_U.c.id, _U.c.email, _U.c.language, _U.c.timezone)
        .where(
            _U.c.role == role,
            _U.c.email.is_not(None),
            _U.c.disabled_at.is_(None),
            _U.c.token_expires_at > now,
        )
        .order_by(_U.c.id)
    )
    with read_transaction(db) as conn:
        return [Member(r.id, r.email, r.language, r.timezone) for r in conn.execute(query)]


def member_recipient(
    member: Member, template: str, templates: Path = TEMPLATES_DIR, *, sop_timezone: str | None
) -> Recipient:
    """``member`` reads ``template`` in her language when it is written in it, else English,
    and in her time zone, else the SOP's, else UTC; by e-mail."""
    written = languages_of(template, templates)
    language = member.language if member.language in written else FALLBACK_LANGUAGE
    timezone = member.timezone or sop_timezone or DEFAULT_TIMEZONE
    return Recipient(language, timezone, EMAIL, member.email)


def copy_id(message_id: str, user_id: str) -> str:
    """The id of ``user_id``'s copy of message ``message_id``: the same on every attempt."""
    return f"{message_id}.{user_id}"
