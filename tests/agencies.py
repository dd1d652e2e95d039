"""The agencies the tests send referrals to: the shipped service directory, with synthetic
agencies of the tests' own laid over it. A disclosure goes only to an agency the directory
lists, so every recipient a test names is here, with the country and types its SOP slot
needs. Every entry is invented."""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import Path

from sop_engine.directory.loader import load_directory
from sop_engine.directory.model import Agency, ServiceDirectory

__all__ = ["TEST_AGENCIES", "agency_directory", "synthetic_agency"]

ROOT = Path(__file__).resolve().parents[1]

_NGO, _HEALTH, _WELFARE = ("ngo",), ("health",), ("government_social_welfare",)

TEST_AGENCIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "TH-NGO-A": ("TH", _NGO),
    "TH-NGO-Z": ("TH", _NGO),
    "TH-HOSP-2": ("TH", _HEALTH),
    "TH-HOSP-H": ("TH", _HEALTH),
    "LA-SW-1": ("LA", _WELFARE),
    "LA-SW-2": ("LA", _WELFARE),
    "LA-SW-B": ("LA", _WELFARE),
    "KH-NGO-3": ("KH", _NGO),
    "KH-NGO-9": ("KH", _NGO),
    "KH-NGO-C": ("KH", _NGO),
    "KH-CLINIC-1": ("KH", _HEALTH),
    "KH-CLINIC-2": ("KH", _HEALTH),
    "KH-LEGAL-1": ("KH", ("legal_aid",)),
    "KH-SHELTER-1": ("KH", ("shelter",)),
    **{f"{c}-NGO-1": (c, _NGO) for c in ("TH", "KH", "LA", "MM", "VN")},
    **{f"{c}-HOSP-1": (c, _HEALTH) for c in ("TH", "KH", "LA", "MM", "VN")},
    **{f"{c}-SYN-NGO-1": (c, _NGO) for c in ("TH", "KH", "VN")},
    **{f"{c}-SYN-OSCC-1": (c, _HEALTH) for c in ("TH", "KH", "VN")},
    **{f"{c}-SYN-NGO-REINT": (c, _NGO) for c in ("KH", "LA", "MM", "VN")},
    "KH-SYN-MOSVY-FP": ("KH", _WELFARE),
    "LA-SYN-MLSW-FP": ("LA", _WELFARE),
    "MM-SYN-DSW-FP": ("MM", _WELFARE),
    "VN-SYN-MOLISA-FP": ("VN", _WELFARE),
}
"""id -> (country, agency types) of the tests' synthetic agencies."""


def synthetic_agency(agency_id: str, country: str, types: tuple[str, ...]) -> Agency:
    return Agency(
        id=agency_id,
        name=f"Synthetic test agency {agency_id}",
        country=country,
        province="synthetic",
        agency_types=types,
        services=("case_management",),
        languages=("en",),
        corridors=(),
        contact_channel="phone",
        accepts_new_cases=True,
        source="synthetic test data",
        last_verified=date(2026, 11, 1),
        synthetic=True,
    )


@cache
def agency_directory() -> ServiceDirectory:
    """The shipped directory and :data:`TEST_AGENCIES`, read once per test process."""
    shipped = load_directory(ROOT / "sop_definitions" / "directory")
    extra = tuple(synthetic_agency(i, c, t) for i, (c, t) in TEST_AGENCIES.items())
    return ServiceDirectory(
        shipped.agencies + extra,
        shipped.corridors,
        shipped.all_hotlines,
        shipped.all_border_points,
    )
