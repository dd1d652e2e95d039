"""Uploading and publishing SOPs, below the API: what is stored, what is refused, and that
what is published is exactly the text that was checked."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from sop_engine import publishing
from sop_engine.errors import (
    ConcurrentChange,
    DefinitionError,
    IdempotencyKeyReused,
    NotFound,
)
from sop_engine.language.compiler import CompiledSop
from sop_engine.language.published import PublishedLibrary, PublishedSources, load_library
from sop_engine.persistence.models import SopSource
from sop_engine.publishing import (
    StoredSop,
    VersionExists,
    decode_upload,
    list_drafts,
    publish_draft,
    read_stored,
    upload_draft,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "sop_definitions" / "examples"
NOW = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)

VERSION_2 = "key: example.corridor\nversion: 2\nextends: example.corridor@1\ntitle: Two\n"


@pytest.fixture
def library(engine: Engine) -> PublishedLibrary:
    return load_library(engine, [EXAMPLES])


def upload(
    db: Engine, library: PublishedLibrary, text: str, idempotency_key: str | None = None
) -> StoredSop:
    outcome = upload_draft(
        db,
        library,
        library.sources,
        text,
        actor_id="u-1",
        now=NOW,
        idempotency_key=idempotency_key,
    )
    return outcome.sop


def publish(
    db: Engine, library: PublishedLibrary, ref: str, idempotency_key: str | None = None
) -> StoredSop:
    key, _, version = ref.partition("@")
    outcome = publish_draft(
        db,
        library,
        library.sources,
        key,
        int(version),
        actor_id="u-2",
        now=NOW + timedelta(hours=1),
        idempotency_key=idempotency_key,
    )
    return outcome.sop


def test_an_upload_is_stored_as_sent_with_its_hash(
    engine: Engine, library: PublishedLibrary
) -> None:
    stored = upload(engine, library, VERSION_2)
    assert (stored.ref, stored.status, stored.title) == ("example.corridor@2", "draft", "Two")
    again = read_stored(engine, "example.corridor", 2)
    assert again.source == VERSION_2
    assert len(again.sha256) == 64
    assert [d.ref for d in list_drafts(engine)] == ["example.corridor@2"]


def test_a_broken_upload_raises_every_problem_and_stores_nothing(
    engine: Engine, library: PublishedLibrary
) -> None:
    with pytest.raises(DefinitionError) as caught:
        upload(engine, library, VERSION_2 + "titel: x\nreview: soon\n")
    assert {p.line for p in caught.value.problems} >= {5}
    assert all(p.file == "upload.sop.yaml" for p in caught.value.problems)
    assert list_drafts(engine) == []


def test_bytes_that_are_not_utf8_are_a_problem_at_their_line() -> None:
    with pytest.raises(DefinitionError) as caught:
        decode_upload(b"key: x\nversion: 1\ntitle: \xff\n")
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.message) == ("upload.sop.yaml", 3, "not UTF-8 text")


def test_publishing_marks_the_row_and_adds_the_sop(
    engine: Engine, library: PublishedLibrary
) -> None:
    upload(engine, library, VERSION_2)
    done = publish(engine, library, "example.corridor@2")
    assert (done.status, done.published_by) == ("published", "u-2")
    assert library.get("example.corridor", 2).spec.title == "Two"
    assert list_drafts(engine) == []
    with pytest.raises(VersionExists):
        publish(engine, library, "example.corridor@2")
    with pytest.raises(VersionExists):
        upload(engine, library, VERSION_2)
    with pytest.raises(NotFound):
        publish(engine, library, "example.corridor@5")


def test_a_draft_replaced_while_it_is_being_published_is_not_published(
    engine: Engine, library: PublishedLibrary, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What was checked is what goes live: the row is marked published only if its text is
    still the text that compiled."""
    upload(engine, library, VERSION_2)
    check = publishing.check_upload

    def check_then_replace(
        text: str,
        sources: PublishedSources,
        templates: Collection[str] | None = None,
        file: str = publishing.UPLOAD_NAME,
    ) -> CompiledSop:
        compiled = check(text, sources, templates, file)
        monkeypatch.setattr(publishing, "check_upload", check)
        upload(engine, library, VERSION_2.replace("Two", "Two, replaced"))
        return compiled

    monkeypatch.setattr(publishing, "check_upload", check_then_replace)
    with pytest.raises(ConcurrentChange):
        publish(engine, library, "example.corridor@2")
    with engine.connect() as conn:
        row = conn.execute(select(SopSource.__table__)).one()
    assert (row.status, row.title) == ("draft", "Two, replaced")
    with pytest.raises(NotFound):
        library.get("example.corridor", 2)


def test_a_key_replays_the_first_result_and_refuses_another_request(
    engine: Engine, library: PublishedLibrary
) -> None:
    first = upload(engine, library, VERSION_2, idempotency_key="k")
    assert upload(engine, library, VERSION_2, idempotency_key="k") == first
    with pytest.raises(IdempotencyKeyReused):
        upload(engine, library, VERSION_2.replace("Two", "2"), idempotency_key="k")
    done = publish(engine, library, "example.corridor@2", idempotency_key="k")
    assert publish(engine, library, "example.corridor@2", idempotency_key="k") == done


def test_a_stored_sop_survives_its_json_form() -> None:
    stored = StoredSop("k", 1, "T", "0" * 64, "published", "u-1", NOW, "u-2", NOW)
    assert StoredSop.from_json(stored.to_json()) == stored


def test_a_version_too_large_to_store_is_a_problem_at_its_line(
    engine: Engine, library: PublishedLibrary
) -> None:
    """Regression: a version past the 32-bit column crashed the insert (500 on PostgreSQL)."""
    with pytest.raises(DefinitionError) as caught:
        upload(engine, library, VERSION_2.replace("version: 2", "version: 9223372036854775808"))
    (problem,) = caught.value.problems
    assert (problem.line, problem.message) == (
        2,
        "version 9223372036854775808 is too large to store: at most 2147483647",
    )
