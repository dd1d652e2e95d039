"""A user's contact for notifications: an e-mail address, a language and a time zone, each
optional, each checked before it is stored, so that the dispatcher never meets a value it
cannot use.

- ``email``: one plain ASCII address ``local@host.domain`` (what the SMTP channel sends to
  without SMTPUTF8), at most 254 characters; no display name, no list, no spaces or line
  breaks (nothing that could add a header).
- ``language``: one of the languages every template is written in
  (:data:`notifications.catalogue.LANGUAGES`: en, th, km, lo, my, vi).
- ``timezone``: an IANA time zone name that :mod:`zoneinfo` knows, such as ``Asia/Bangkok``.

A refusal is an :class:`~sop_engine.errors.InvalidInput` whose ``field`` names the field; its
message never repeats an address (a person's contact stays out of errors and logs).
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass

from notifications.catalogue import LANGUAGES
from sop_engine.errors import InvalidInput

__all__ = ["Contact", "check_email", "check_language", "check_timezone"]

_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TLD = re.compile(r"[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59}")
_EMAIL_FORM = "one address of the form name@host.example (ASCII, no spaces)"


@dataclass(frozen=True, slots=True)
class Contact:
    """How notifications reach a user; None where she gave none."""

    email: str | None = None
    language: str | None = None
    timezone: str | None = None


def check_email(address: str) -> str:
    """``address`` as stored (its domain in lower case), or :class:`InvalidInput`."""
    local, at, domain = address.rpartition("@")
    labels = domain.split(".")
    fits = (
        bool(at)
        and len(address) <= 254
        and len(local) <= 64
        and _LOCAL.fullmatch(local) is not None
        and len(labels) >= 2
        and all(_LABEL.fullmatch(label) for label in labels)
        and _TLD.fullmatch(labels[-1]) is not None
    )
    if not fits:
        raise InvalidInput(f"not an e-mail address: give {_EMAIL_FORM}", field="email")
    return f"{local}@{domain.lower()}"


def check_language(language: str) -> str:
    """``language`` in lower case when the templates are written in it, else
    :class:`InvalidInput` listing the languages."""
    if language.lower() not in LANGUAGES:
        raise InvalidInput(
            f"unknown language {language[:40]!r} (languages: {', '.join(LANGUAGES)})",
            field="language",
        )
    return language.lower()


def check_timezone(name: str) -> str:
    """``name`` when it is an IANA time zone, else :class:`InvalidInput`."""
    try:
        if not name or len(name) > 64 or not name.isprintable():
            raise ValueError(name)
        zoneinfo.ZoneInfo(name)
    except (ValueError, OSError, zoneinfo.ZoneInfoNotFoundError):  # OSError: 'Asia', a folder
        raise InvalidInput(
            f"unknown time zone {name[:64]!r} (an IANA name such as Asia/Bangkok)",
            field="timezone",
        ) from None
    return name
