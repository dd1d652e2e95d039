"""The directory's closed vocabularies: the words an entry may use, and what each means.

Each tuple here is also an ``enum`` in ``sop_definitions/directory.schema.json``; a test
keeps the two equal, so that an editor's completion and the loader accept the same words.
A word missing here is added here and in the schema together, never in data alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "AGENCY_TYPES",
    "CONTACT_CHANNELS",
    "CORRIDOR_ROLES",
    "COUNTRIES",
    "LANGUAGES",
    "RESERVED_DOMAINS",
    "SERVICES",
    "SYNTHETIC_SOURCE",
]

COUNTRIES: Mapping[str, str] = MappingProxyType(
    {
        "KH": "Cambodia",
        "LA": "Lao PDR",
        "MM": "Myanmar",
        "TH": "Thailand",
        "VN": "Viet Nam",
    }
)
"""ISO 3166-1 alpha-2 codes of the countries the directory covers."""

AGENCY_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "government_social_welfare": "a ministry or department of social welfare or protection",
        "government_coordination": "a national committee or ministry that leads policy and "
        "coordinates others, without running services itself",
        "health": "a hospital, clinic or hospital-based one-stop crisis centre",
        "shelter": "safe accommodation, including reception and transit centres",
        "ngo": "a non-governmental organisation",
        "community_based": "a community-based organisation or self-help group",
        "mass_organisation": "a women's or youth union: neither ministry nor NGO (Lao PDR, "
        "Viet Nam)",
        "police": "police, including anti-trafficking units",
        "legal_aid": "legal aid and legal counselling",
        "immigration": "immigration and border authorities",
        "un_agency": "a United Nations agency or IOM",
    }
)
"""Kinds of agency. SOP agency slots and roles name these in their ``types``."""

SERVICES: Mapping[str, str] = MappingProxyType(
    {
        "clinical_care": "clinical management of rape and other medical care",
        "psychosocial_support": "counselling and psychosocial support",
        "safety_and_shelter": "safety planning and safe accommodation",
        "legal_aid_and_justice": "legal advice, representation and access to justice",
        "repatriation": "return across a border, family tracing, reception and transit",
        "economic_reintegration": "vocational training, livelihoods and reintegration",
        "case_management": "GBV case management (the six steps of the 2017 guidelines)",
    }
)
"""What an agency does for a survivor."""

LANGUAGES: Mapping[str, str] = MappingProxyType(
    {
        "en": "English (the working language between agencies)",
        "th": "Thai",
        "km": "Khmer",
        "lo": "Lao",
        "my": "Burmese",
        "vi": "Vietnamese",
        "zh": "Chinese",
        "hmn": "Hmong (ISO 639-2: no two-letter code exists)",
        "kar": "Karen languages (ISO 639-2)",
        "shn": "Shan (ISO 639-3)",
        "mnw": "Mon (ISO 639-3)",
    }
)
"""ISO 639-1 codes, or ISO 639-2/3 codes for languages that have no two-letter code."""

CONTACT_CHANNELS: Mapping[str, str] = MappingProxyType(
    {
        "email": "referrals arrive by email",
        "webhook": "referrals are posted to the agency's system",
        "in_app": "the agency works in this engine's own inbox",
        "phone": "a coordinator telephones; the engine sends nothing",
    }
)
"""How a referral reaches an agency."""

CORRIDOR_ROLES: Mapping[str, str] = MappingProxyType(
    {
        "focal_point": "the government focal point that receives referrals on its side of a "
        "corridor",
        "reception_transit": "receives returnees at or after the border: reception or transit",
    }
)
"""What an agency does for the corridors it serves."""

SYNTHETIC_SOURCE = "synthetic"
"""The ``source`` of every invented entry."""

RESERVED_DOMAINS = (".example", ".test", ".invalid")
"""Domains that can never receive mail or requests (RFC 2606), the only ones a synthetic
entry's address may use: a test referral must never reach a real inbox."""
