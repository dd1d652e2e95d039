"""Managed entries: checked by the directory's own stages with problems at their fields, laid
over the YAML directory by id, stored with a revision."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from sop_engine.directory import ServiceDirectory, load_directory
from sop_engine.directory.managed import (
    EntryRefused,
    ManagedDirectory,
    ManagedEntry,
    check_entry,
    load_managed_directory,
    overlay,
)
from sop_engine.errors import ConcurrentChange, DefinitionError
from sop_engine.language.spec import frozen_map

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "sop_definitions" / "directory"
TODAY = date(2026, 11, 28)
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def directory() -> ServiceDirectory:
    return load_directory(FOLDER, today=TODAY)


def entry(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": "LA-SYN-DESK-PAKSE",
        "name": "Synthetic Desk P (Champasak)",
        "country": "LA",
        "province": "Champasak",
        "agency_types": ["community_based"],
        "services": ["psychosocial_support"],
        "languages": ["lo"],
        "corridors": ["TH-LA"],
        "contact_channel": "webhook",
        "contact_address": "https://desk-p.la-syn.example/hook",
        "accepts_new_cases": True,
        "source": "synthetic",
        "last_verified": "2026-11-01",
        "synthetic": True,
    }
    values.update(changes)
    return values


def managed(values: dict[str, Any], revision: int = 1) -> ManagedEntry:
    return ManagedEntry(values["id"], values, revision, "u-1", NOW, "u-1", NOW)


def test_a_sound_entry_builds_the_agency_a_file_would(directory: ServiceDirectory) -> None:
    agency = check_entry(entry(), directory, TODAY)
    assert agency.id == "LA-SYN-DESK-PAKSE"
    assert agency.services == ("psychosocial_support",)
    assert agency.last_verified == date(2026, 11, 1)
    assert agency.contact_address == "https://desk-p.la-syn.example/hook"


def test_every_problem_is_named_by_its_field(directory: ServiceDirectory) -> None:
    broken = entry(services=["psychosocial_support", "counseling"], colour="blue")
    with pytest.raises(EntryRefused) as caught:
        check_entry(broken, directory, TODAY)
    fields = {p.field: p for p in caught.value.problems}
    assert set(fields) == {"services.1", "colour"}
    assert fields["colour"].hint == "did you mean 'country'?"
    assert caught.value.field in fields
    assert isinstance(caught.value, ValueError)  # an InvalidInput
    # As in a file, an entry the schema refuses is not read further; once it passes, the
    # checks of meaning follow, all at once.
    meaning = entry(contact_address="https://desk-p.la.gov/hook", last_verified="2027-01-01")
    with pytest.raises(EntryRefused) as caught:
        check_entry(meaning, directory, TODAY)
    assert {p.field for p in caught.value.problems} == {"contact_address", "last_verified"}


def test_a_real_body_keeps_only_its_channel(directory: ServiceDirectory) -> None:
    real = entry(
        id="LA-DESK-PAKSE",
        name="Desk of Champasak",
        source="A public source, 2026",
        synthetic=False,
        contact_address="https://desk.example/hook",
    )
    with pytest.raises(EntryRefused) as caught:
        check_entry(real, directory, TODAY)
    assert [p.field for p in caught.value.problems] == ["contact_address"]
    del real["contact_address"]
    assert check_entry(real, directory, TODAY).contact_address is None


def test_the_overlay_replaces_by_id_in_place_and_adds_new_ones_at_the_end(
    directory: ServiceDirectory,
) -> None:
    tak = directory.agency("TH-SYN-SHELTER-TAK")
    closed = {
        **entry(),
        "id": tak.id,
        "name": tak.name,
        "country": "TH",
        "province": tak.province,
        "languages": list(tak.languages),
        "corridors": list(tak.corridors),
        "accepts_new_cases": False,
    }
    laid = overlay(directory, [managed(closed), managed(entry())], TODAY)
    order = [a.id for a in laid.agencies]
    assert order[:-1] == [a.id for a in directory.agencies]
    assert order[-1] == "LA-SYN-DESK-PAKSE"
    assert laid.agency(tak.id).accepts_new_cases is False
    assert tak.id not in [a.id for a in laid.find(corridor="TH-MM")]


def test_an_entry_that_no_longer_fits_the_files_is_a_definition_error(
    directory: ServiceDirectory,
) -> None:
    without = dataclasses.replace(
        directory,
        corridors=frozen_map({k: v for k, v in directory.corridors.items() if k != "TH-LA"}),
    )
    with pytest.raises(DefinitionError) as caught:
        overlay(without, [managed(entry())], TODAY)
    (problem,) = caught.value.problems
    assert problem.file == "managed agency LA-SYN-DESK-PAKSE"
    assert "unknown corridor 'TH-LA'" in problem.message


def test_put_stores_a_revision_and_refuses_a_stale_one(
    engine: Engine, directory: ServiceDirectory
) -> None:
    store = ManagedDirectory(engine, directory)
    agency, row, created = store.put(entry()["id"], entry(), actor_id="u-1", now=NOW)
    assert created
    assert (row.revision, agency.id) == (1, "LA-SYN-DESK-PAKSE")
    _, row, created = store.put(
        agency.id, entry(note="second"), actor_id="u-2", now=NOW, expected_revision=1
    )
    assert (row.revision, row.updated_by, created) == (2, "u-2", False)
    with pytest.raises(ConcurrentChange) as stale:
        store.put(agency.id, entry(), actor_id="u-1", now=NOW, expected_revision=1)
    assert stale.value.current_version == 2
    with pytest.raises(EntryRefused):
        store.put(agency.id, entry(services=["nothing"]), actor_id="u-1", now=NOW)

    snapshot = store.snapshot(TODAY)
    assert snapshot.directory.agency(agency.id).note == "second"
    assert snapshot.managed[agency.id].revision == 2
    loaded = load_managed_directory(engine, FOLDER, today=TODAY)
    assert loaded.agency(agency.id).note == "second"
    assert len(loaded.agencies) == len(directory.agencies) + 1


def test_a_body_naming_another_id_is_refused(engine: Engine, directory: ServiceDirectory) -> None:
    with pytest.raises(EntryRefused) as caught:
        ManagedDirectory(engine, directory).put("LA-SYN-OTHER", entry(), actor_id="u-1", now=NOW)
    assert caught.value.field == "id"
