"""Build one schema-valid directory entry into its object, checking what the schema cannot.

The schema has already checked shapes and words. Here each entry is checked on its own:
``last_verified`` is a real date and not in the future; a synthetic entry says so in its
id, name, source and flag alike; a real body carries no contact address, and a synthetic
one only an address that cannot reach anyone; an entry belongs to its file's country.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sop_engine.directory.model import Agency, BorderPoint, Corridor, Hotline
from sop_engine.directory.schema import KEYS
from sop_engine.directory.vocabulary import RESERVED_DOMAINS, SYNTHETIC_SOURCE
from sop_engine.errors import Problem
from sop_engine.language.source import DataPath, SourceDocument
from sop_engine.language.spec import Where

__all__ = ["EntryReader", "build_agency", "build_border_point", "build_corridor", "build_hotline"]

SYNTHETIC_MARK = "-SYN-"
"""What every synthetic id contains, after its country: ``TH-SYN-SHELTER-A``."""
SYNTHETIC_NAME = "Synthetic "
"""How every synthetic name begins, so that nobody mistakes it for a real body."""

_EMAIL = re.compile(r"^[A-Za-z0-9._+-]+@(?P<host>[A-Za-z0-9.-]+)$")
_WEBHOOK = re.compile(r"^https://(?P<host>[A-Za-z0-9.-]+)(?:/\S*)?$")
_LOOPBACK_WEBHOOK = re.compile(r"^http://(?:127\.0\.0\.1|localhost)(?::\d{1,5})?(?:/\S*)?$")
"""A receiver on this machine: it cannot reach anyone else, so synthetic entries (and the
tests' webhook receivers) may use one."""


@dataclass
class EntryReader:
    """One entry of a file, with where each of its keys was written."""

    doc: SourceDocument
    path: DataPath
    data: dict[str, Any]
    kind: str
    """The entry's kind as :data:`~sop_engine.directory.schema.SECTIONS` names it."""
    label: str
    today: date
    problems: list[Problem] = field(default_factory=list)

    def __call__(self, key: str, default: Any = None) -> Any:
        if key not in KEYS[self.kind]:
            raise KeyError(f"{self.kind} has no key {key!r} in the schema")
        return self.data.get(key, default)

    def problem(self, key: str | None, message: str, hint: str | None = None) -> None:
        at = self.doc.where((*self.path, key) if key else self.path)
        self.problems.append(Problem(*at, f"{self.label}: {message}", hint=hint))

    def where(self) -> Where:
        file, line = self.doc.where(self.path)
        keys = tuple((k, *self.doc.where((*self.path, k))) for k in self.data)
        return Where(file, line, keys)

    def names(self, key: str) -> tuple[str, ...]:
        return tuple(self(key, ()))

    def last_verified(self) -> date | None:
        text = self("last_verified")
        try:
            when = date.fromisoformat(text)
        except ValueError:
            self.problem("last_verified", f"{text!r} is not a calendar date")
            return None
        if when > self.today:
            self.problem(
                "last_verified",
                f"last_verified {when} is in the future (today is {self.today}): say when the "
                "entry was last checked against its source",
            )
        return when

    def belongs_to(self, country: str | None, file_country: str | None) -> None:
        """The entry's id starts with its country, and its country is its file's."""
        if country is None:
            return
        ident = self("id", "")
        if not ident.startswith(f"{country}-"):
            self.problem("id", f"the id must start with the entry's country: {country}-...")
        if file_country is not None and country != file_country:
            self.problem(
                "country",
                f"country {country} does not match the file's country {file_country}; "
                "move the entry to the file of its country",
            )

    def synthetic(self, flag: bool) -> None:
        """Id, name, source and flag agree on whether the entry was invented."""
        ident, name, source = self("id"), self("name"), self("source")
        if flag:
            if source != SYNTHETIC_SOURCE:
                self.problem("source", f"a synthetic entry's source is {SYNTHETIC_SOURCE!r}")
            if SYNTHETIC_MARK not in ident:
                self.problem("id", f"a synthetic id contains {SYNTHETIC_MARK!r}, e.g. TH-SYN-A")
            if not name.startswith(SYNTHETIC_NAME):
                self.problem("name", f"a synthetic name begins with {SYNTHETIC_NAME!r}")
            return
        mark = "synthetic: true, or cite the public source that names this body"
        if source == SYNTHETIC_SOURCE:
            self.problem("synthetic", f"source is {SYNTHETIC_SOURCE!r}: set {mark}")
        if SYNTHETIC_MARK in ident or name.startswith(SYNTHETIC_NAME):
            self.problem("synthetic", f"the id or name says synthetic: set {mark}")


def build_corridor(r: EntryReader) -> Corridor | None:
    code, origin, destination = r("code"), r("origin"), r("destination")
    if origin == destination:
        r.problem("destination", "a corridor crosses a border: origin and destination differ")
    elif sorted(code.split("-")) != sorted((origin, destination)):
        r.problem(
            "code",
            f"the code of a corridor between {origin} and {destination} names those two "
            f"countries: {origin}-{destination} or {destination}-{origin}",
        )
    when = r.last_verified()
    if when is None:
        return None
    return Corridor(
        code,
        origin,
        destination,
        r("framework"),
        r("source"),
        when,
        r("verify", False),
        r("note", ""),
        r.where(),
    )


def _check_contact(r: EntryReader, synthetic: bool) -> None:
    channel, address = r("contact_channel"), r("contact_address")
    if address is None:
        return
    if not synthetic:
        r.problem(
            "contact_address",
            "a real body carries only its contact_channel, never an address: contact data "
            "of real bodies is kept outside this directory",
        )
        return
    if channel in ("phone", "in_app"):
        why = "any number could be someone's" if channel == "phone" else "the inbox is the id"
        r.problem("contact_address", f"channel {channel} takes no address ({why})")
        return
    if channel == "webhook" and _LOOPBACK_WEBHOOK.match(address):
        return
    match = (_EMAIL if channel == "email" else _WEBHOOK).match(address)
    if match is None:
        form = "name@host.example" if channel == "email" else "https://host.example/path"
        r.problem("contact_address", f"{address!r} is not an address of the form {form}")
    elif not match.group("host").lower().endswith(RESERVED_DOMAINS):
        r.problem(
            "contact_address",
            f"a synthetic address must use a reserved domain ({', '.join(RESERVED_DOMAINS)}) "
            "so that no test referral reaches a real inbox",
        )


def build_agency(r: EntryReader, file_country: str | None) -> Agency | None:
    synthetic = r("synthetic")
    r.belongs_to(r("country"), file_country)
    r.synthetic(synthetic)
    _check_contact(r, synthetic)
    if r("accepts_new_cases") and not r("services"):
        r.problem("services", "an agency that accepts new cases offers at least one service")
    if r("corridor_roles") and not r("corridors"):
        r.problem("corridor_roles", "corridor roles need the corridors they are played in")
    when = r.last_verified()
    if when is None:
        return None
    return Agency(
        id=r("id"),
        name=r("name"),
        country=r("country"),
        province=r("province"),
        agency_types=r.names("agency_types"),
        services=r.names("services"),
        languages=r.names("languages"),
        corridors=r.names("corridors"),
        contact_channel=r("contact_channel"),
        accepts_new_cases=r("accepts_new_cases"),
        source=r("source"),
        last_verified=when,
        synthetic=synthetic,
        corridor_roles=r.names("corridor_roles"),
        contact_address=r("contact_address"),
        verify=r("verify", False),
        note=r("note", ""),
        where=r.where(),
    )


def build_hotline(r: EntryReader, file_country: str | None) -> Hotline | None:
    r.belongs_to(file_country, None)
    if r("source") == SYNTHETIC_SOURCE:
        r.problem("source", "hotlines are real numbers: cite the source that states this one")
    when = r.last_verified()
    if when is None or file_country is None:
        return None
    return Hotline(
        id=r("id"),
        country=file_country,
        number=r("number"),
        name=r("name"),
        operator=r("operator"),
        purpose=r("purpose"),
        source=r("source"),
        last_verified=when,
        verify=r("verify"),
        hours=r("hours", ""),
        languages=r.names("languages"),
        note=r("note", ""),
        where=r.where(),
    )


def build_border_point(r: EntryReader, file_country: str | None) -> BorderPoint | None:
    r.belongs_to(r("country"), file_country)
    r.synthetic(r("synthetic"))
    when = r.last_verified()
    if when is None:
        return None
    return BorderPoint(
        id=r("id"),
        name=r("name"),
        country=r("country"),
        corridor=r("corridor"),
        source=r("source"),
        last_verified=when,
        verify=r("verify"),
        synthetic=r("synthetic"),
        note=r("note", ""),
        where=r.where(),
    )
