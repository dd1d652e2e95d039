"""What a coordinator asks of the directory, and how SOP agency slots are filled from it."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

import sop_engine.directory
from sop_engine.directory import ServiceDirectory, load_directory
from sop_engine.errors import DefinitionError, InvalidInput, NotFound
from sop_engine.language.spec import AgencySlot
from tests.shipped import shipped_library

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "sop_definitions"


@pytest.fixture(scope="module")
def directory() -> ServiceDirectory:
    return load_directory(DEFINITIONS / "directory")


def ids(agencies: list[sop_engine.directory.Agency]) -> list[str]:
    return [a.id for a in agencies]


def test_an_agency_by_its_id(directory: ServiceDirectory) -> None:
    msdhs = directory.agency("TH-MSDHS")
    assert msdhs.name == "Ministry of Social Development and Human Security"
    assert msdhs.where.file.endswith("th.yaml")
    assert msdhs.where.of("services").line > msdhs.where.line


def test_an_unknown_id_is_not_found_with_a_did_you_mean(directory: ServiceDirectory) -> None:
    with pytest.raises(NotFound, match=r"did you mean 'TH-MSDHS'\?"):
        directory.agency("TH-MSDH")
    with pytest.raises(LookupError):
        directory.agency("nobody")


def test_find_by_country_and_service(directory: ServiceDirectory) -> None:
    assert ids(directory.find(country="LA", service="repatriation")) == [
        "LA-MLSW",
        "LA-SYN-TRANSIT-VIENTIANE",
    ]


def test_find_leaves_out_agencies_not_taking_cases_unless_asked(
    directory: ServiceDirectory,
) -> None:
    assert "MM-DSW" not in ids(directory.find(country="MM"))
    assert "MM-DSW" in ids(directory.find(country="MM", accepting_only=False))


def test_find_by_corridor_type_and_language(directory: ServiceDirectory) -> None:
    assert ids(directory.find(corridor="TH-MM", agency_type="shelter")) == [
        "MM-SYN-RECEPTION-KAYIN",
        "TH-SYN-SHELTER-TAK",
    ], "in the order written: files by name, entries as listed"
    hmong = ids(directory.find(language="hmn"))
    assert {"TH-SYN-CBO-NONGKHAI", "LA-SYN-CBO-BOKEO", "VN-SYN-CLINIC-LAOCAI"} == set(hmong)


def test_a_filter_with_an_unknown_word_is_refused_not_answered_empty(
    directory: ServiceDirectory,
) -> None:
    with pytest.raises(InvalidInput, match=r"did you mean 'psychosocial_support'\?") as bad:
        directory.find(service="psychosocial")
    assert bad.value.field == "service"
    with pytest.raises(InvalidInput, match="unknown corridor 'LA-TH'"):
        directory.find(corridor="LA-TH")
    with pytest.raises(InvalidInput, match="unknown language"):
        directory.find(language="thai")


def test_hotlines_of_a_country(directory: ServiceDirectory) -> None:
    assert [h.number for h in directory.hotlines("LA")] == ["1554"]
    assert directory.hotlines("MM") == []
    with pytest.raises(InvalidInput, match="unknown country"):
        directory.hotlines("XX")


def test_border_points_of_a_corridor(directory: ServiceDirectory) -> None:
    assert [b.country for b in directory.border_points("TH-MM")] == ["MM", "MM", "MM"]
    assert directory.border_points("TH-VN") == [], "no land border between Thailand and Viet Nam"
    with pytest.raises(InvalidInput, match=r"did you mean 'TH-LA'\?"):
        directory.border_points("TH-LO")


def test_candidates_for_a_receiving_focal_point_slot(directory: ServiceDirectory) -> None:
    slot = AgencySlot("receiving_focal_point", ("government_social_welfare",), "destination")
    assert ids(directory.candidates_for(slot, "LA", corridor="TH-LA")) == [
        "LA-MLSW",
        "LA-SYN-TRANSIT-VIENTIANE",
    ]
    assert ids(directory.candidates_for(slot, "MM")) == ["MM-SYN-FOCAL-SHAN"]
    assert "MM-DSW" in ids(directory.candidates_for(slot, "MM", accepting_only=False))


def test_candidates_match_any_of_the_slot_types(directory: ServiceDirectory) -> None:
    slot = AgencySlot("justice_provider", ("legal_aid", "police"))
    assert ids(directory.candidates_for(slot, "VN")) == ["VN-MPS", "VN-SYN-LEGAL-HCMC"]
    assert ids(directory.candidates_for(slot, "VN", service="repatriation")) == ["VN-MPS"]


def test_a_slot_pinned_to_a_country_is_filled_only_there(directory: ServiceDirectory) -> None:
    slot = AgencySlot("health_provider", ("health",), "TH")
    assert ids(directory.candidates_for(slot, "TH")) == ["TH-MOPH-OSCC", "TH-SYN-CLINIC-CHIANGRAI"]
    with pytest.raises(InvalidInput, match="filled in TH, not LA"):
        directory.candidates_for(slot, "LA")


def test_a_slot_type_the_directory_does_not_know_is_refused(
    directory: ServiceDirectory,
) -> None:
    slot = AgencySlot("clinic", ("helth",))
    with pytest.raises(InvalidInput, match=r"did you mean 'health'\?"):
        directory.candidates_for(slot, "TH")


def test_every_agency_slot_of_every_shipped_sop_can_be_filled(
    directory: ServiceDirectory,
) -> None:
    """For each SOP in sop_definitions/, each slot has a candidate taking cases in each
    country where a referral could need it."""
    compiled = list(shipped_library())
    assert compiled
    unfilled: list[str] = []
    for sop in compiled:
        j = sop.spec.jurisdiction
        parties = [c for c in (*j.countries, j.origin, j.destination) if c]
        for slot in sop.spec.agencies.values():
            by_side: dict[str, Sequence[str | None]] = {
                "origin": [j.origin],
                "destination": [j.destination],
                "any": parties,
            }
            where = by_side.get(slot.country, [slot.country])
            for country in where:
                if country and not directory.candidates_for(slot, country):
                    unfilled.append(f"{sop.ref} {slot.name} in {country}")
    assert unfilled == []


def test_the_directory_cannot_be_changed_once_loaded(directory: ServiceDirectory) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        # The refused writes are what is under test.
        directory.agency("TH-MSDHS").accepts_new_cases = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        directory.corridors["XX-YY"] = directory.corridors["TH-LA"]  # type: ignore[index]


def test_the_public_surface() -> None:
    assert set(sop_engine.directory.__all__) == {
        "AGENCY_TYPES",
        "CONTACT_CHANNELS",
        "CORRIDOR_ROLES",
        "COUNTRIES",
        "LANGUAGES",
        "SERVICES",
        "Agency",
        "BorderPoint",
        "Corridor",
        "Hotline",
        "ServiceDirectory",
        "directory_files",
        "directory_schema",
        "load_directory",
    }


def test_the_directory_needs_no_web_scheduling_or_templating_framework() -> None:
    code = (
        "import sys, sop_engine.directory as d; "
        "from pathlib import Path; d.load_directory(Path(sys.argv[1])); "
        "print(sorted(m for m in ('fastapi', 'prefect', 'jinja2') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(DEFINITIONS / "directory")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def _with_webhook(tmp_path: Path, address: str) -> Path:
    folder = tmp_path / "directory"
    shutil.copytree(Path(__file__).resolve().parents[2] / "sop_definitions" / "directory", folder)
    path = folder / "th.yaml"
    text = path.read_text("utf-8")
    start = text.index("  - id: TH-SYN-CBO-NONGKHAI\n")
    end = text.index("contact_channel: in_app", start)
    contact = f"contact_channel: webhook\n    contact_address: {address}"
    path.write_text(text[:end] + contact + text[end + len("contact_channel: in_app") :], "utf-8")
    return folder


def test_a_synthetic_agency_may_use_a_webhook_receiver_on_loopback(tmp_path: Path) -> None:
    """Tests' receivers listen on this machine, which reaches no one else."""
    folder = _with_webhook(tmp_path, "http://127.0.0.1:8089/sop-engine")
    agency = load_directory(folder).agency("TH-SYN-CBO-NONGKHAI")
    assert (agency.contact_channel, agency.contact_address) == (
        "webhook",
        "http://127.0.0.1:8089/sop-engine",
    )


@pytest.mark.parametrize("address", ["http://10.0.0.7/hook", "http://example.org/hook"])
def test_a_webhook_elsewhere_must_be_https_on_a_reserved_domain(
    tmp_path: Path, address: str
) -> None:
    with pytest.raises(DefinitionError, match="is not an address of the form"):
        load_directory(_with_webhook(tmp_path, address))
