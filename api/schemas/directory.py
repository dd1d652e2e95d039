"""Requests and answers of the directory routes. An agency travels as a directory file
writes it (``docs/service-directory.md``); the request refuses unknown fields."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from sop_engine.directory import Agency
from sop_engine.directory.managed import ManagedEntry

__all__ = ["AgencyEntry", "AgencyPublic", "AgencyRecord"]


class AgencyEntry(BaseModel):
    """An agency to store, with the keys and words of a directory file's entry. Types are
    strict (``"yes"`` is not a boolean); words, forms and the rules for real and synthetic
    entries are the directory loader's, which answers each problem with its field."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "Synthetic Help Desk N (Nan)",
                    "country": "TH",
                    "province": "Nan",
                    "agency_types": ["ngo"],
                    "services": ["psychosocial_support", "case_management"],
                    "languages": ["th", "lo"],
                    "corridors": ["TH-LA"],
                    "contact_channel": "email",
                    "contact_address": "intake@helpdesk-n.th-syn.example",
                    "accepts_new_cases": True,
                    "source": "synthetic",
                    "last_verified": "2026-01-15",
                    "synthetic": True,
                }
            ]
        },
    )

    id: str | None = Field(default=None, description="Optional: equal to the path's id.")
    name: str
    country: str
    province: str
    agency_types: list[str]
    services: list[str]
    languages: list[str]
    corridors: list[str]
    corridor_roles: list[str] | None = None
    contact_channel: str
    contact_address: str | None = Field(
        default=None, description="Synthetic entries only, at a reserved domain."
    )
    accepts_new_cases: bool
    source: str
    last_verified: str = Field(description="YYYY-MM-DD; never in the future.")
    synthetic: bool
    verify: bool | None = None
    note: str | None = None

    def entry(self) -> dict[str, object]:
        """The entry as a directory file would hold it: keys left out rather than null."""
        return self.model_dump(exclude_none=True)


class AgencyPublic(BaseModel):
    """An agency as the directory holds it."""

    id: str
    name: str
    country: str
    province: str
    agency_types: list[str]
    services: list[str]
    languages: list[str]
    corridors: list[str]
    corridor_roles: list[str]
    contact_channel: str
    contact_address: str | None
    accepts_new_cases: bool
    source: str
    last_verified: date
    synthetic: bool
    verify: bool
    note: str

    @classmethod
    def of(cls, a: Agency) -> AgencyPublic:
        return cls(
            id=a.id,
            name=a.name,
            country=a.country,
            province=a.province,
            agency_types=list(a.agency_types),
            services=list(a.services),
            languages=list(a.languages),
            corridors=list(a.corridors),
            corridor_roles=list(a.corridor_roles),
            contact_channel=a.contact_channel,
            contact_address=a.contact_address,
            accepts_new_cases=a.accepts_new_cases,
            source=a.source,
            last_verified=a.last_verified,
            synthetic=a.synthetic,
            verify=a.verify,
            note=a.note,
        )


class AgencyRecord(BaseModel):
    """An agency, and whether it is kept through the API (``managed``) or only in the
    directory's files. ``agency`` is what ``PUT`` takes back."""

    agency: AgencyPublic
    managed: bool
    revision: int = Field(description="The managed entry's revision; 0 for a file's entry.")
    updated_at: datetime | None
    updated_by: str | None = Field(description="The user id of the last change.")

    @classmethod
    def of(cls, agency: Agency, managed: ManagedEntry | None) -> AgencyRecord:
        return cls(
            agency=AgencyPublic.of(agency),
            managed=managed is not None,
            revision=managed.revision if managed is not None else 0,
            updated_at=managed.updated_at if managed is not None else None,
            updated_by=managed.updated_by if managed is not None else None,
        )
