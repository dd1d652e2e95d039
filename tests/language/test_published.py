"""The running library: SOP files and published uploads compiled together at start, versions
published later found on first use, and a published version that collides with a file
refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from sop_engine.errors import DefinitionError, NotFound
from sop_engine.language.published import (
    PublishedLibrary,
    PublishedSources,
    load_library,
    source_name,
)
from sop_engine.persistence import tables
from sop_engine.publishing import approve_upload, upload_sop

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "sop_definitions" / "examples"
NOW = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)

VERSION_2 = "key: example.corridor\nversion: 2\nextends: example.corridor@1\ntitle: Two\n"


def published(db: Engine, library: PublishedLibrary, text: str) -> str:
    """Upload ``text`` as one coordinator and approve it as another; its ``KEY@VERSION``."""
    sop = upload_sop(db, library, library.sources, text, actor_id="u-1", now=NOW).sop
    approve_upload(
        db,
        library,
        library.sources,
        sop.key,
        sop.version,
        sha256=sop.sha256,
        actor_id="u-2",
        now=NOW,
    )
    return sop.ref


def test_the_start_compiles_files_and_published_rows_together(sqlite_engine: Engine) -> None:
    first = load_library(sqlite_engine, [EXAMPLES])
    assert {s.ref for s in first} == {"example.baseline@1", "example.corridor@1"}
    published(sqlite_engine, first, VERSION_2)
    published(sqlite_engine, first, VERSION_2.replace("version: 2", "version: 3"))

    again = load_library(sqlite_engine, [EXAMPLES])
    assert {s.ref for s in again} == {
        "example.baseline@1",
        "example.corridor@1",
        "example.corridor@2",
        "example.corridor@3",
    }
    assert again.get("example.corridor").version == 3
    assert again.get("example.corridor", 2).spec.file == source_name("example.corridor", 2)


def test_a_published_row_with_a_files_version_stops_the_start(sqlite_engine: Engine) -> None:
    text = (EXAMPLES / "example.corridor.sop.yaml").read_text()
    with sqlite_engine.begin() as conn:
        conn.execute(
            tables.sop_sources.insert().values(
                key="example.corridor",
                version=1,
                title="One",
                source=text,
                sha256="0" * 64,
                status="published",
                uploaded_by="u-1",
                uploaded_at=NOW,
                published_by="u-1",
                published_at=NOW,
            )
        )
    with pytest.raises(DefinitionError, match="also written in"):
        load_library(sqlite_engine, [EXAMPLES])


def test_a_published_row_whose_parent_left_the_files_stops_the_start(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    library = load_library(sqlite_engine, [EXAMPLES])
    published(sqlite_engine, library, VERSION_2)
    with pytest.raises(DefinitionError) as caught:
        load_library(sqlite_engine, [tmp_path])
    assert {p.file for p in caught.value.problems} == {"example.corridor@2.sop.yaml"}


def test_a_version_published_elsewhere_is_found_on_first_use(sqlite_engine: Engine) -> None:
    here = load_library(sqlite_engine, [EXAMPLES])
    elsewhere = PublishedLibrary(list(here), sources=PublishedSources(sqlite_engine, [EXAMPLES]))
    with pytest.raises(NotFound):
        elsewhere.get("example.corridor", 2)
    published(sqlite_engine, here, VERSION_2)

    assert elsewhere.get("example.corridor", 2).ref == "example.corridor@2"
    assert elsewhere.get("example.corridor", 2) is elsewhere.get("example.corridor", 2)
    with pytest.raises(NotFound):
        elsewhere.get("example.corridor", 9)


def test_the_latest_version_looks_for_newer_ones_first(sqlite_engine: Engine) -> None:
    here = load_library(sqlite_engine, [EXAMPLES])
    elsewhere = PublishedLibrary(list(here), sources=PublishedSources(sqlite_engine, [EXAMPLES]))
    assert elsewhere.get("example.corridor").version == 1
    published(sqlite_engine, here, VERSION_2)
    assert elsewhere.get("example.corridor").version == 2
    assert len(elsewhere) == 3
