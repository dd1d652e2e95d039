"""Uploading and reviewing SOPs, below the API: what is stored, what is refused, that a
second coordinator approves every text that goes live, and that what is published is exactly
the text that was checked and approved."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from sop_engine import publishing
from sop_engine.errors import (
    ApprovalByRequester,
    ConcurrentChange,
    DefinitionError,
    IdempotencyKeyReused,
    InvalidInput,
    NotFound,
)
from sop_engine.language.compiler import CompiledSop
from sop_engine.language.published import PublishedLibrary, PublishedSources, load_library
from sop_engine.persistence import tables
from sop_engine.publishing import (
    NotPending,
    Outcome,
    StoredSop,
    VersionExists,
    approve_upload,
    decode_upload,
    list_pending,
    read_stored,
    refuse_upload,
    upload_sop,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "sop_definitions" / "examples"
NOW = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)

VERSION_2 = "key: example.corridor\nversion: 2\nextends: example.corridor@1\ntitle: Two\n"


@pytest.fixture
def library(engine: Engine) -> PublishedLibrary:
    return load_library(engine, [EXAMPLES])


def upload(
    db: Engine,
    library: PublishedLibrary,
    text: str,
    idempotency_key: str | None = None,
    actor_id: str = "u-1",
) -> StoredSop:
    outcome = upload_sop(
        db,
        library,
        library.sources,
        text,
        actor_id=actor_id,
        now=NOW,
        idempotency_key=idempotency_key,
    )
    return outcome.sop


def current_sha(db: Engine, ref: str) -> str:
    key, _, version = ref.partition("@")
    try:
        return read_stored(db, key, int(version)).sha256
    except NotFound:
        return "0" * 64


def publish(
    db: Engine,
    library: PublishedLibrary,
    ref: str,
    idempotency_key: str | None = None,
    actor_id: str = "u-2",
    sha256: str | None = None,
    single_coordinator: bool = False,
) -> StoredSop:
    """Approve ``ref``'s current text (or ``sha256``) as ``actor_id``: another coordinator
    than the uploader ``u-1`` unless told."""
    key, _, version = ref.partition("@")
    outcome = approve_upload(
        db,
        library,
        library.sources,
        key,
        int(version),
        sha256=sha256 or current_sha(db, ref),
        actor_id=actor_id,
        now=NOW + timedelta(hours=1),
        single_coordinator=single_coordinator,
        idempotency_key=idempotency_key,
    )
    return outcome.sop


def refuse(
    db: Engine,
    ref: str,
    comment: str = "the deadlines do not match the national SOP",
    *,
    sha256: str | None = None,
    actor_id: str = "u-2",
    idempotency_key: str | None = None,
) -> StoredSop:
    key, _, version = ref.partition("@")
    outcome = refuse_upload(
        db,
        key,
        int(version),
        sha256=sha256 or current_sha(db, ref),
        actor_id=actor_id,
        comment=comment,
        now=NOW + timedelta(hours=2),
        idempotency_key=idempotency_key,
    )
    return outcome.sop


def reviews(db: Engine) -> list[tuple[str, str, str]]:
    with db.connect() as conn:
        rows = conn.execute(select(tables.sop_reviews).order_by(tables.sop_reviews.c.id)).all()
    return [(r.decision, r.reviewer_id, r.uploaded_by) for r in rows]


def test_an_upload_is_stored_as_sent_with_its_hash(
    engine: Engine, library: PublishedLibrary
) -> None:
    stored = upload(engine, library, VERSION_2)
    assert (stored.ref, stored.status, stored.title) == ("example.corridor@2", "pending", "Two")
    again = read_stored(engine, "example.corridor", 2)
    assert again.source == VERSION_2
    assert len(again.sha256) == 64
    assert [d.ref for d in list_pending(engine)] == ["example.corridor@2"]


def test_a_broken_upload_raises_every_problem_and_stores_nothing(
    engine: Engine, library: PublishedLibrary
) -> None:
    with pytest.raises(DefinitionError) as caught:
        upload(engine, library, VERSION_2 + "titel: x\nreview: soon\n")
    assert {p.line for p in caught.value.problems} >= {5}
    assert all(p.file == "upload.sop.yaml" for p in caught.value.problems)
    assert list_pending(engine) == []


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
    assert list_pending(engine) == []
    with pytest.raises(VersionExists):
        publish(engine, library, "example.corridor@2")
    with pytest.raises(VersionExists):
        upload(engine, library, VERSION_2)
    with pytest.raises(NotFound):
        publish(engine, library, "example.corridor@5")


def test_a_text_replaced_while_it_is_being_approved_is_not_published(
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
    first_sha = current_sha(engine, "example.corridor@2")
    with pytest.raises(ConcurrentChange):
        publish(engine, library, "example.corridor@2", sha256=first_sha)
    assert reviews(engine) == []
    with engine.connect() as conn:
        row = conn.execute(select(tables.sop_sources)).one()
    assert (row.status, row.title) == ("pending", "Two, replaced")
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


def test_the_uploader_may_not_approve_their_own_text(
    engine: Engine, library: PublishedLibrary
) -> None:
    upload(engine, library, VERSION_2)
    with pytest.raises(ApprovalByRequester, match="another coordinator must approve"):
        publish(engine, library, "example.corridor@2", actor_id="u-1")
    assert read_stored(engine, "example.corridor", 2).status == "pending"
    assert reviews(engine) == []
    with pytest.raises(NotFound):
        library.get("example.corridor", 2)

    done = publish(engine, library, "example.corridor@2", actor_id="u-2")
    assert (done.status, done.uploaded_by, done.published_by) == ("published", "u-1", "u-2")
    assert reviews(engine) == [("approved", "u-2", "u-1")]
    (review,) = read_stored(engine, "example.corridor", 2).reviews
    assert review.sha256 == done.sha256


def test_whoever_uploaded_the_current_text_is_the_requester(
    engine: Engine, library: PublishedLibrary
) -> None:
    """A second coordinator who uploads the text again becomes its requester: the first one
    may then approve it, the second may not."""
    upload(engine, library, VERSION_2, actor_id="u-1")
    upload(engine, library, VERSION_2.replace("Two", "Two, fixed"), actor_id="u-2")
    with pytest.raises(ApprovalByRequester):
        publish(engine, library, "example.corridor@2", actor_id="u-2")
    done = publish(engine, library, "example.corridor@2", actor_id="u-1")
    assert (done.title, done.uploaded_by, done.published_by) == ("Two, fixed", "u-2", "u-1")


def test_only_the_text_the_reviewer_read_is_approved(
    engine: Engine, library: PublishedLibrary
) -> None:
    read = upload(engine, library, VERSION_2).sha256
    upload(engine, library, VERSION_2.replace("Two", "Two, changed"), actor_id="u-3")
    with pytest.raises(ConcurrentChange, match="another text than the one you reviewed"):
        publish(engine, library, "example.corridor@2", sha256=read)
    with pytest.raises(ConcurrentChange):
        refuse(engine, "example.corridor@2", sha256=read)
    assert read_stored(engine, "example.corridor", 2).status == "pending"
    assert reviews(engine) == []


def test_a_single_coordinator_approves_alone_only_when_allowed(
    engine: Engine, library: PublishedLibrary
) -> None:
    upload(engine, library, VERSION_2)
    done = publish(engine, library, "example.corridor@2", actor_id="u-1", single_coordinator=True)
    assert (done.uploaded_by, done.published_by) == ("u-1", "u-1")
    assert reviews(engine) == [("approved", "u-1", "u-1")]


def test_a_refusal_needs_a_reason_and_stays_until_the_sop_is_uploaded_again(
    engine: Engine, library: PublishedLibrary
) -> None:
    upload(engine, library, VERSION_2)
    for blank in ("", "   \n"):
        with pytest.raises(InvalidInput) as caught:
            refuse(engine, "example.corridor@2", comment=blank)
        assert caught.value.field == "comment"
    with pytest.raises(InvalidInput):
        refuse(engine, "example.corridor@2", comment="x" * (publishing.MAX_COMMENT + 1))

    refused = refuse(engine, "example.corridor@2")
    assert refused.status == "refused"
    assert list_pending(engine) == []
    with pytest.raises(NotPending):
        publish(engine, library, "example.corridor@2")
    with pytest.raises(NotPending):
        refuse(engine, "example.corridor@2")

    again = upload(engine, library, VERSION_2.replace("Two", "Two, as asked"))
    assert again.status == "pending"
    publish(engine, library, "example.corridor@2")
    stored = read_stored(engine, "example.corridor", 2)
    assert [(r.decision, r.comment) for r in stored.reviews] == [
        ("refused", "the deadlines do not match the national SOP"),
        ("approved", None),
    ]
    assert stored.reviews[0].sha256 != stored.reviews[1].sha256 == stored.sha256


def test_the_uploader_may_withdraw_their_own_text(
    engine: Engine, library: PublishedLibrary
) -> None:
    upload(engine, library, VERSION_2)
    assert refuse(engine, "example.corridor@2", "uploaded by mistake", actor_id="u-1").status == (
        "refused"
    )
    assert reviews(engine) == [("refused", "u-1", "u-1")]


def test_two_coordinators_approving_at_once_publish_once(
    engine: Engine, library: PublishedLibrary
) -> None:
    upload(engine, library, VERSION_2)
    sha = current_sha(engine, "example.corridor@2")
    results: list[StoredSop | Exception] = []
    start = threading.Barrier(2)

    def approve(actor: str) -> Callable[[], None]:
        def run() -> None:
            start.wait()
            try:
                results.append(
                    publish(engine, library, "example.corridor@2", actor_id=actor, sha256=sha)
                )
            except (VersionExists, ConcurrentChange) as exc:
                results.append(exc)

        return run

    threads = [threading.Thread(target=approve(a)) for a in ("u-2", "u-3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    published = [r for r in results if isinstance(r, StoredSop)]
    assert len(published) == 1, results
    assert len(results) == 2
    assert [d for d, *_ in reviews(engine)] == ["approved"]


def test_an_approval_and_a_refusal_at_once_decide_once(
    engine: Engine, library: PublishedLibrary
) -> None:
    upload(engine, library, VERSION_2)
    sha = current_sha(engine, "example.corridor@2")
    start = threading.Barrier(2)
    results: list[object] = []

    def run(decide: Callable[[], StoredSop]) -> None:
        start.wait()
        try:
            results.append(decide())
        except (VersionExists, ConcurrentChange, NotPending) as exc:
            results.append(exc)

    threads = [
        threading.Thread(
            target=run, args=(lambda: publish(engine, library, "example.corridor@2", sha256=sha),)
        ),
        threading.Thread(
            target=run,
            args=(lambda: refuse(engine, "example.corridor@2", sha256=sha, actor_id="u-3"),),
        ),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([r for r in results if isinstance(r, StoredSop)]) == 1, results
    assert len(reviews(engine)) == 1
    status = read_stored(engine, "example.corridor", 2).status
    assert status == {"approved": "published", "refused": "refused"}[reviews(engine)[0][0]]


def test_review_replays_under_the_same_key(engine: Engine, library: PublishedLibrary) -> None:
    upload(engine, library, VERSION_2)
    first = refuse(engine, "example.corridor@2", idempotency_key="r-1")
    assert refuse(engine, "example.corridor@2", idempotency_key="r-1") == first
    with pytest.raises(IdempotencyKeyReused):
        refuse(engine, "example.corridor@2", "another reason", idempotency_key="r-1")
    assert len(reviews(engine)) == 1
    assert isinstance(Outcome(first).sop, StoredSop)
