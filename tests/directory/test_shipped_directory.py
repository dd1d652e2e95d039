"""The directory shipped in sop_definitions/directory/ loads, covers the region, and keeps
real bodies real: sourced, dated, and free of personal contact data."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sop_engine.directory import COUNTRIES, SERVICES, ServiceDirectory, load_directory
from sop_engine.language.source import load_source

ROOT = Path(__file__).resolve().parents[2]
DIRECTORY = ROOT / "sop_definitions" / "directory"
FILES = sorted(DIRECTORY.glob("*.yaml"))


@pytest.fixture(scope="module")
def directory() -> ServiceDirectory:
    return load_directory(DIRECTORY)


def entries() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every entry of every shipped file, as written: (file, section, entry)."""
    for path in FILES:
        data = load_source(path).data
        for section in ("corridors", "agencies", "hotlines", "border_points"):
            for entry in data.get(section, []):
                yield path.name, section, entry


def test_the_shipped_directory_loads(directory: ServiceDirectory) -> None:
    assert {a.country for a in directory.agencies} == set(COUNTRIES)
    assert set(directory.corridors) == {"TH-KH", "TH-LA", "TH-MM", "TH-VN", "VN-KH"}


def test_every_country_has_one_file_named_after_it() -> None:
    assert {p.stem.upper() for p in FILES if len(p.stem) == 2} == set(COUNTRIES)


@pytest.mark.parametrize("code", ["TH-KH", "TH-LA", "TH-MM", "TH-VN", "VN-KH"])
def test_every_corridor_has_a_government_focal_point_on_the_destination_side(
    directory: ServiceDirectory, code: str
) -> None:
    corridor = directory.corridors[code]
    focal = [
        a
        for a in directory.find(
            country=corridor.destination,
            agency_type="government_social_welfare",
            corridor=code,
            accepting_only=False,
        )
        if "focal_point" in a.corridor_roles
    ]
    assert focal, f"{code}: no receiving focal point in {corridor.destination}"


@pytest.mark.parametrize("code", ["TH-KH", "TH-LA", "TH-MM", "TH-VN", "VN-KH"])
def test_every_corridor_has_a_reception_or_transit_entry_taking_cases(
    directory: ServiceDirectory, code: str
) -> None:
    corridor = directory.corridors[code]
    reception = [
        a
        for a in directory.find(country=corridor.destination, corridor=code)
        if "reception_transit" in a.corridor_roles
    ]
    assert reception, f"{code}: nobody receives returnees in {corridor.destination}"


@pytest.mark.parametrize("country", sorted(COUNTRIES))
def test_every_country_has_every_service_from_an_agency_taking_cases(
    directory: ServiceDirectory, country: str
) -> None:
    missing = [s for s in SERVICES if not directory.find(country=country, service=s)]
    assert missing == []


def test_the_lead_bodies_of_the_domain_brief_are_real_entries(
    directory: ServiceDirectory,
) -> None:
    lead = {
        "TH-MSDHS",
        "TH-MOPH-OSCC",
        "KH-NCCT",
        "KH-MOSVY",
        "KH-MOWA",
        "LA-LWU-CPC",
        "LA-MLSW",
        "MM-DSW",
        "VN-MOLISA",
        "VN-VWU",
        "VN-MPS",
    }
    real = {a.id for a in directory.agencies if not a.synthetic}
    assert real == lead, "a new real body is reviewed: add it here with its source"
    for agency_id in lead:
        assert "http" in directory.agency(agency_id).source, agency_id


def test_uncertain_facts_are_flagged_for_verification(directory: ServiceDirectory) -> None:
    myanmar = directory.agency("MM-DSW")
    assert myanmar.verify
    assert not myanmar.accepts_new_cases
    assert "2021" in myanmar.note
    assert directory.agency("VN-MOLISA").verify
    assert directory.corridors["TH-KH"].verify
    assert directory.corridors["TH-MM"].verify
    assert not directory.corridors["TH-LA"].verify


def test_hotlines_are_exactly_those_the_domain_brief_states(
    directory: ServiceDirectory,
) -> None:
    numbers = {c: {h.number for h in directory.hotlines(c)} for c in COUNTRIES}
    assert numbers == {
        "TH": {"1300", "+66-99-130-1300"},
        "KH": {"117"},
        "LA": {"1554"},
        "MM": set(),
        "VN": {"111"},
    }
    assert all(h.source.strip() for h in directory.all_hotlines)
    assert not any("synthetic" in h.source for h in directory.all_hotlines)


def test_border_points_of_the_domain_brief(directory: ServiceDirectory) -> None:
    (bridge,) = directory.border_points("TH-LA")
    assert "Friendship Bridge" in bridge.name
    assert not bridge.synthetic
    liaison = directory.border_points("TH-MM")
    assert {b.id for b in liaison} == {
        "MM-BP-BLO-TACHILEIK",
        "MM-BP-BLO-MYAWADDY",
        "MM-BP-BLO-KAWTHOUNG",
    }
    assert all(b.verify and not b.synthetic for b in liaison)


def test_no_synthetic_entry_lacks_synthetic_true() -> None:
    for file, section, entry in entries():
        looks_invented = (
            entry.get("source") == "synthetic"
            or "-SYN-" in str(entry.get("id", ""))
            or str(entry.get("name", "")).startswith("Synthetic")
        )
        if looks_invented:
            assert entry.get("synthetic") is True, f"{file}: {section} {entry.get('id')}"
        if entry.get("synthetic") is True:
            assert entry["source"] == "synthetic", f"{file}: {entry['id']}"


EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
PHONE = re.compile(r"(?<![\w/])\+?\(?\d[\d ()-]{5,}\d(?![\w/])")
URL = re.compile(r"https?://\S+")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def person_like_contacts(text: str) -> list[str]:
    """Email addresses and telephone numbers (seven digits or more) in free text."""
    text = URL.sub(" ", text)
    found = [m.group(0) for m in EMAIL.finditer(text)]
    for match in PHONE.finditer(text):
        digits = re.sub(r"\D", "", match.group(0))
        if len(digits) >= 7 and not ISO_DATE.match(match.group(0)):
            found.append(match.group(0))
    return found


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node


def test_the_contact_detector_finds_what_it_looks_for() -> None:
    assert person_like_contacts("call +66 2 123 4567 or write to a.person@mail.example.org")
    assert person_like_contacts("mobile 012-345-678")
    assert not person_like_contacts("Hotline 1300, since 2017-12-06, see https://x.example/1234567")


def test_no_entry_has_a_person_like_contact_outside_synthetic_entries_and_hotlines() -> None:
    for file, section, entry in entries():
        if section == "hotlines" or entry.get("synthetic") is True:
            continue
        found = [c for s in strings(entry) for c in person_like_contacts(s)]
        assert found == [], f"{file}: {section} {entry.get('id', entry.get('code'))}"


def test_synthetic_addresses_cannot_reach_anyone(directory: ServiceDirectory) -> None:
    for agency in directory.agencies:
        if agency.contact_address is None:
            continue
        assert agency.synthetic, agency.id
        assert agency.contact_channel in ("email", "webhook"), agency.id
        host = agency.contact_address.split("@")[-1].split("//")[-1].split("/")[0]
        assert host.endswith(".example"), agency.id


def test_comments_carry_no_contacts_either() -> None:
    for path in FILES:
        for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
            if line.lstrip().startswith("#"):
                assert person_like_contacts(line) == [], f"{path.name}:{number}"
