"""The service directory as immutable objects, and the questions a coordinator asks of it.

A :class:`ServiceDirectory` is built once by :func:`~sop_engine.directory.load_directory`
and only read afterwards. Its queries refuse a word the directory does not know (a typo in
a service name would otherwise find nothing and look like a gap in services).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date

from sop_engine.directory.vocabulary import AGENCY_TYPES, COUNTRIES, LANGUAGES, SERVICES
from sop_engine.errors import InvalidInput, NotFound
from sop_engine.language.schema import did_you_mean
from sop_engine.language.spec import AgencySlot, Where, frozen_map

__all__ = ["Agency", "BorderPoint", "Corridor", "Hotline", "ServiceDirectory"]

_NOWHERE = Where("<directory>", 0)


@dataclass(frozen=True, slots=True)
class Corridor:
    """A cross-border route between two countries, named by their codes as the field names
    the pair (``TH-LA``, ``VN-KH``). ``origin`` and ``destination`` give the direction of its
    referrals as an SOP's ``jurisdiction`` has them: from the country where a survivor was
    found to the one she returns to."""

    code: str
    origin: str
    destination: str
    framework: str
    source: str
    last_verified: date
    verify: bool = False
    note: str = ""
    where: Where = _NOWHERE


@dataclass(frozen=True, slots=True)
class Agency:
    """A body that can receive a referral. ``synthetic`` ones are invented for development
    and training; real ones carry only the kind of channel, never a person's contact."""

    id: str
    name: str
    country: str
    province: str
    agency_types: tuple[str, ...]
    services: tuple[str, ...]
    languages: tuple[str, ...]
    corridors: tuple[str, ...]
    contact_channel: str
    accepts_new_cases: bool
    source: str
    last_verified: date
    synthetic: bool
    corridor_roles: tuple[str, ...] = ()
    contact_address: str | None = None
    verify: bool = False
    note: str = ""
    where: Where = _NOWHERE


@dataclass(frozen=True, slots=True)
class Hotline:
    """A public number, exactly as its source states it."""

    id: str
    country: str
    number: str
    name: str
    operator: str
    purpose: str
    source: str
    last_verified: date
    verify: bool
    hours: str = ""
    languages: tuple[str, ...] = ()
    note: str = ""
    where: Where = _NOWHERE


@dataclass(frozen=True, slots=True)
class BorderPoint:
    """A place where returnees are handed over, on ``country``'s side of ``corridor``."""

    id: str
    name: str
    country: str
    corridor: str
    source: str
    last_verified: date
    verify: bool
    synthetic: bool
    note: str = ""
    where: Where = _NOWHERE


def _known(value: str, allowed: Collection[str], what: str, name: str) -> str:
    if value not in allowed:
        hint = did_you_mean(value, allowed)
        raise InvalidInput(f"unknown {what} {value!r}" + (f" ({hint})" if hint else ""), field=name)
    return value


@dataclass(frozen=True, slots=True)
class ServiceDirectory:
    """Agencies, hotlines, border points and corridors, in the order they were written."""

    agencies: tuple[Agency, ...] = ()
    corridors: Mapping[str, Corridor] = field(default_factory=frozen_map)
    all_hotlines: tuple[Hotline, ...] = ()
    all_border_points: tuple[BorderPoint, ...] = ()
    _by_id: Mapping[str, Agency] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", frozen_map({a.id: a for a in self.agencies}))

    def agency(self, agency_id: str) -> Agency:
        """The agency with this id.

        :raises NotFound: with a "did you mean" when the id is close to a known one.
        """
        found = self._by_id.get(agency_id)
        if found is None:
            hint = did_you_mean(agency_id, self._by_id)
            raise NotFound(
                f"no agency {agency_id!r} in the directory" + (f" ({hint})" if hint else "")
            )
        return found

    def find(
        self,
        *,
        country: str | None = None,
        service: str | None = None,
        agency_type: str | None = None,
        corridor: str | None = None,
        language: str | None = None,
        accepting_only: bool = True,
    ) -> list[Agency]:
        """Agencies that match every filter given; by default only those taking new cases.

        :raises InvalidInput: a filter names a country, service, type, corridor or language
            the directory does not know (``field`` says which).
        """
        if country is not None:
            _known(country, COUNTRIES, "country", "country")
        if service is not None:
            _known(service, SERVICES, "service", "service")
        if agency_type is not None:
            _known(agency_type, AGENCY_TYPES, "agency type", "agency_type")
        if corridor is not None:
            _known(corridor, self.corridors, "corridor", "corridor")
        if language is not None:
            _known(language, LANGUAGES, "language", "language")
        return [
            a
            for a in self.agencies
            if (country is None or a.country == country)
            and (service is None or service in a.services)
            and (agency_type is None or agency_type in a.agency_types)
            and (corridor is None or corridor in a.corridors)
            and (language is None or language in a.languages)
            and (a.accepts_new_cases or not accepting_only)
        ]

    def hotlines(self, country: str) -> list[Hotline]:
        """The country's hotlines (none for a country where no source names one)."""
        _known(country, COUNTRIES, "country", "country")
        return [h for h in self.all_hotlines if h.country == country]

    def border_points(self, corridor: str) -> list[BorderPoint]:
        """The handover points of a corridor, on either side."""
        _known(corridor, self.corridors, "corridor", "corridor")
        return [b for b in self.all_border_points if b.corridor == corridor]

    def candidates_for(
        self,
        spec_agency_slot: AgencySlot,
        country: str,
        *,
        corridor: str | None = None,
        service: str | None = None,
        accepting_only: bool = True,
    ) -> list[Agency]:
        """Agencies that could fill an SOP's agency slot for one referral.

        ``country`` is where the slot is filled: for a slot whose country is ``origin``,
        ``destination`` or ``any``, the caller resolves it from the referral's jurisdiction.
        An agency qualifies when it is in that country and has at least one of the slot's
        types; ``corridor`` and ``service`` narrow the list further.

        :raises InvalidInput: the slot is pinned to another country, or names an agency type
            the directory does not know (the SOP and the directory disagree on words).
        """
        _known(country, COUNTRIES, "country", "country")
        pinned = spec_agency_slot.country
        if pinned not in ("origin", "destination", "any") and pinned != country:
            raise InvalidInput(
                f"agency slot {spec_agency_slot.name!r} is filled in {pinned}, not {country}",
                field="country",
            )
        for kind in spec_agency_slot.types:
            _known(kind, AGENCY_TYPES, f"agency type (slot {spec_agency_slot.name!r})", "types")
        wanted = set(spec_agency_slot.types)
        return [
            a
            for a in self.find(
                country=country,
                service=service,
                corridor=corridor,
                accepting_only=accepting_only,
            )
            if wanted.intersection(a.agency_types)
        ]
