"""Who receives a disclosure: an agency of the service directory, fit for the SOP's slot.

A referral's data goes only to an agency the directory lists (its YAML files, with the
entries coordinators keep through the API laid over them, read in the caller's
transaction), whose types and country fit the agency slot the SOP sends it to. An id the
directory does not list is refused with a "did you mean", before anything is disclosed: a
mistyped id must never count as a recipient.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from sop_engine.directory.model import ServiceDirectory
from sop_engine.errors import InvalidInput, NotFound
from sop_engine.language.schema import did_you_mean
from sop_engine.language.spec import SopSpec
from sop_engine.persistence import tables

__all__ = ["Recipient", "UnknownAgency", "check_slot", "find_recipient", "recipient"]

_M = tables.managed_agencies


@dataclass(frozen=True, slots=True)
class Recipient:
    """What consent and the SOP's slots are checked against: the agency's id, country, types."""

    id: str
    country: str
    types: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.id} ({', '.join(self.types) or 'no type'}, {self.country})"


class UnknownAgency(InvalidInput):
    """The directory lists no agency of that id."""


def _of_entry(agency_id: str, entry: Mapping[str, Any]) -> Recipient:
    types = tuple(str(t) for t in entry.get("agency_types") or ())
    return Recipient(agency_id, str(entry.get("country", "")), types)


def find_recipient(
    conn: Connection, directory: ServiceDirectory, agency_id: str
) -> Recipient | None:
    """The agency ``agency_id`` as the directory lists it now, or None."""
    entry = conn.execute(select(_M.c.entry).where(_M.c.id == agency_id)).scalar()
    if entry is not None:
        return _of_entry(agency_id, entry)
    try:
        agency = directory.agency(agency_id)
    except NotFound:
        return None
    return Recipient(agency.id, agency.country, agency.agency_types)


def recipient(
    conn: Connection, directory: ServiceDirectory, agency_id: str, *, field: str
) -> Recipient:
    """:func:`find_recipient`, refusing an id the directory does not list.

    :raises UnknownAgency: with a "did you mean" among the listed ids.
    """
    found = find_recipient(conn, directory, agency_id)
    if found is not None:
        return found
    known = {a.id for a in directory.agencies} | set(conn.scalars(select(_M.c.id)))
    hint = did_you_mean(agency_id, known)
    raise UnknownAgency(
        f"no agency {agency_id!r} in the service directory" + (f" ({hint})" if hint else ""),
        field=field,
    )


def slot_country(spec: SopSpec, slot: str, origin: str, destination: str) -> str:
    """The country the SOP places a slot in, for this referral; ``any`` when it does not."""
    country = spec.agencies[slot].country if slot in spec.agencies else "any"
    return {"origin": origin, "destination": destination}.get(country, country)


def check_slot(
    spec: SopSpec, slot: str, agency: Recipient, origin: str, destination: str, *, field: str
) -> None:
    """Refuse an agency whose types or country do not fit the SOP's agency slot."""
    declared = spec.agencies.get(slot)
    if declared is None:
        return
    if declared.types and not set(agency.types) & set(declared.types):
        raise InvalidInput(
            f"{agency.describe()} cannot be {slot!r}: the SOP gives that part to agencies of "
            f"type {', '.join(declared.types)}",
            field=field,
        )
    country = slot_country(spec, slot, origin, destination)
    if country not in ("any", agency.country):
        raise InvalidInput(
            f"{agency.describe()} cannot be {slot!r}: the SOP places that part in {country}",
            field=field,
        )
