"""Coordinators' SOPs through the API, under four eyes: one coordinator uploads, another
approves (then it is published) or refuses.

An upload is compiled like a file (every problem, with its line, in ``upload.sop.yaml``)
against the SOPs it may extend: the library's files and the published versions. A valid
upload is stored **pending** (a row of ``sop_sources``); an invalid one is stored nowhere. A
pending or refused version may be uploaded again, replacing its text (and making it pending
again), until it is published.

Approving names the SHA-256 of the text the reviewer read: a text replaced since is not
approved (:class:`ConcurrentChange`). The approver must be another user than whoever uploaded
that text (:class:`ApprovalByRequester`), unless the service allows a single coordinator (a
demo setting that production refuses, see :mod:`sop_engine.settings`). An approved text is
compiled again, against the library as it is now (a parent may have been published since the
upload), marked **published** only if it is still the text that compiled, and added to the
running library. From then on the version never changes: uploading or approving a key and
version the library holds (a file, or a published row) raises :class:`VersionExists`. Every
start compiles the published rows with the files
(:func:`sop_engine.language.published.load_library`). Refusing needs a reason. Every decision
is kept in ``sop_reviews``, with who decided, on which text, when and why.

Each operation takes an idempotency key: the first result is stored in the transaction that
made the change, and a retry with the same key gets it back (``replayed``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from sop_engine.errors import (
    ApprovalByRequester,
    ConcurrentChange,
    DefinitionError,
    IdempotencyKeyReused,
    InvalidInput,
    NotFound,
    Problem,
    SopEngineError,
)
from sop_engine.language.compiler import CompiledSop, SopLibrary, compile_documents
from sop_engine.language.inherit import ref_of
from sop_engine.language.published import (
    PENDING,
    PUBLISHED,
    REFUSED,
    PublishedSources,
    ancestors,
    sha256_text,
    source_name,
)
from sop_engine.language.source import parse_source
from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction

__all__ = [
    "APPROVED",
    "MAX_COMMENT",
    "MAX_VERSION",
    "UPLOAD_NAME",
    "NotPending",
    "Outcome",
    "Review",
    "StoredSop",
    "VersionExists",
    "approve_upload",
    "check_upload",
    "decode_upload",
    "list_pending",
    "read_stored",
    "refuse_upload",
    "upload_sop",
]

_S = tables.sop_sources
_R = tables.sop_reviews
_P = tables.publishing_requests

UPLOAD_NAME = "upload.sop.yaml"
"""The file name problems of an uploaded SOP carry."""
MAX_VERSION = 2_147_483_647
"""The largest version the database stores (a 32-bit integer, as referrals pin it)."""
MAX_COMMENT = 2000
"""The longest review comment kept, in characters."""
APPROVED = "approved"
"""A review's decision that published the text (the other is ``refused``)."""


class VersionExists(SopEngineError, ValueError):
    """The SOP's key and version are published already (a file, or a published row): a
    published version never changes, so the changed SOP needs a new version."""


class NotPending(SopEngineError, ValueError):
    """The upload was refused: nothing is left to approve or refuse until it is uploaded
    again."""


@dataclass(frozen=True, slots=True)
class Review:
    """One decision on an upload's text."""

    decision: str
    reviewer_id: str
    uploaded_by: str
    sha256: str
    comment: str | None
    decided_at: datetime


@dataclass(frozen=True, slots=True)
class StoredSop:
    """An uploaded SOP as stored: ``source`` and ``reviews`` are filled only when asked for
    (:func:`read_stored`)."""

    key: str
    version: int
    title: str
    sha256: str
    status: str
    uploaded_by: str
    uploaded_at: datetime
    published_by: str | None = None
    published_at: datetime | None = None
    source: str | None = None
    reviews: tuple[Review, ...] = field(default=())

    @property
    def ref(self) -> str:
        return f"{self.key}@{self.version}"

    def to_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _SUMMARY}
        for name in ("uploaded_at", "published_at"):
            if data[name] is not None:
                data[name] = data[name].isoformat()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StoredSop:
        values: dict[str, Any] = {name: data.get(name) for name in _SUMMARY}
        for name in ("uploaded_at", "published_at"):
            if values.get(name) is not None:
                values[name] = datetime.fromisoformat(values[name])
        return cls(**values)


_SUMMARY = (
    "key",
    "version",
    "title",
    "sha256",
    "status",
    "uploaded_by",
    "uploaded_at",
    "published_by",
    "published_at",
)
"""What an idempotent replay stores and gives back of an upload (never its text)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an upload or a review did, or did the first time (``replayed``)."""

    sop: StoredSop
    replayed: bool = False


def decode_upload(body: bytes) -> str:
    """The text of an uploaded SOP.

    :raises DefinitionError: the bytes are not UTF-8 (at the line where they stop being so).
    """
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body[: exc.start].count(b"\n") + 1
        raise DefinitionError([Problem(UPLOAD_NAME, line, "not UTF-8 text")]) from None


def check_upload(
    text: str,
    sources: PublishedSources,
    templates: Collection[str] | None = None,
    file: str = UPLOAD_NAME,
) -> CompiledSop:
    """Compile an SOP sent as text against the SOPs it extends (files and published rows).

    :raises DefinitionError: with every problem, in ``file``.
    """
    doc = parse_source(text, file)
    version = doc.data.get("version") if isinstance(doc.data, dict) else None
    if isinstance(version, int) and version > MAX_VERSION:
        message = f"version {version} is too large to store: at most {MAX_VERSION}"
        raise DefinitionError([Problem(*doc.where(("version",)), message)])
    known = sources.documents()
    compiled, problems = compile_documents([doc], templates, parents=ancestors(doc, known))
    if problems:
        raise DefinitionError(problems)
    own = ref_of(doc.data)
    return next(c for c in compiled if c.ref == own)


def upload_sop(
    db: Engine,
    library: SopLibrary,
    sources: PublishedSources,
    text: str,
    *,
    actor_id: str,
    now: datetime,
    templates: Collection[str] | None = None,
    idempotency_key: str | None = None,
) -> Outcome:
    """Store ``text`` pending review as its key and version, replacing a pending or refused
    text of that version.

    :raises DefinitionError: the SOP does not compile; nothing is stored.
    :raises VersionExists: the version is published already.
    """
    sha = sha256_text(text)
    replay = _Replay(actor_id, "sop.upload", idempotency_key, {"sha256": sha})
    if (seen := replay.seen(db)) is not None:
        return seen
    sop = check_upload(text, sources, templates)
    _refuse_published(library, sop.key, sop.version)
    stored = StoredSop(sop.key, sop.version, sop.spec.title, sha, PENDING, actor_id, now)
    values = {**stored.to_json(), "uploaded_at": now, "source": text}
    try:
        with db.begin() as conn:
            row = _row(conn, sop.key, sop.version, lock=True)
            if row is not None and row.status == PUBLISHED:
                raise _published(sop.ref)
            if row is None:
                conn.execute(_S.insert().values(values))
            else:
                conn.execute(
                    update(_S)
                    .where(_S.c.key == sop.key, _S.c.version == sop.version)
                    .values(
                        title=stored.title,
                        source=text,
                        sha256=sha,
                        status=PENDING,
                        uploaded_by=actor_id,
                        uploaded_at=now,
                    )
                )
            replay.remember(conn, stored, now)
    except IntegrityError:
        return _lost_race(db, replay, f"{sop.ref} was uploaded by someone else meanwhile")
    return Outcome(stored)


def approve_upload(
    db: Engine,
    library: SopLibrary,
    sources: PublishedSources,
    key: str,
    version: int,
    *,
    sha256: str,
    actor_id: str,
    now: datetime,
    comment: str | None = None,
    single_coordinator: bool = False,
    templates: Collection[str] | None = None,
    idempotency_key: str | None = None,
) -> Outcome:
    """Approve the pending text of ``key@version`` whose SHA-256 is ``sha256`` (the text the
    approver read): compile it against the library as it is now, mark it published, add it
    to ``library``, keep the review.

    :raises NotFound: nothing was uploaded under this key and version.
    :raises VersionExists: the version is published already.
    :raises NotPending: the upload was refused (upload it again).
    :raises ApprovalByRequester: ``actor_id`` uploaded this text, and a single coordinator is
        not allowed.
    :raises ConcurrentChange: the text is not the one with ``sha256`` (it was replaced since
        the approver read it, or meanwhile).
    :raises DefinitionError: the text no longer compiles (a parent it extends is gone).
    """
    ref = f"{key}@{version}"
    comment = _comment(comment, required=False)
    request = {"ref": ref, "sha256": sha256, "comment": comment}
    replay = _Replay(actor_id, "sop.approve", idempotency_key, request)
    if (seen := replay.seen(db)) is not None:
        return seen
    _refuse_published(library, key, version)
    with db.connect() as conn:
        row = _pending_row(conn, key, version, sha256)
    if row.uploaded_by == actor_id and not single_coordinator:
        raise ApprovalByRequester(
            f"you uploaded this text of {ref}: another coordinator must approve it "
            "(four eyes on every SOP that goes live)"
        )
    sop = check_upload(row.source, sources, templates, source_name(key, version))
    if (sop.key, sop.version) != (key, version):  # pragma: no cover - the upload checked it
        raise NotFound(f"no upload {ref}")
    stored = replace(_stored(row), status=PUBLISHED, published_by=actor_id, published_at=now)
    try:
        with db.begin() as conn:
            changed = conn.execute(
                update(_S)
                .where(
                    _S.c.key == key,
                    _S.c.version == version,
                    _S.c.status == PENDING,
                    _S.c.sha256 == sha256,
                    _S.c.uploaded_by == row.uploaded_by,
                )
                .values(status=PUBLISHED, published_by=actor_id, published_at=now)
            ).rowcount
            if not changed:
                _pending_row(conn, key, version, sha256)  # raises what changed
                raise ConcurrentChange(f"{ref} was uploaded again meanwhile; read it again")
            _keep_review(
                conn,
                stored,
                decision=APPROVED,
                reviewer_id=actor_id,
                comment=comment,
                now=now,
            )
            replay.remember(conn, stored, now)
    except IntegrityError:
        return _lost_race(db, replay, f"{ref} was reviewed by someone else meanwhile")
    library.add(sop)
    return Outcome(stored)


def refuse_upload(
    db: Engine,
    key: str,
    version: int,
    *,
    sha256: str,
    actor_id: str,
    comment: str,
    now: datetime,
    idempotency_key: str | None = None,
) -> Outcome:
    """Refuse the pending text of ``key@version`` whose SHA-256 is ``sha256``, saying why
    (``comment``). Its uploader may refuse it too (withdrawing it). It stays refused until it
    is uploaded again.

    :raises InvalidInput: no reason given (field ``comment``).
    :raises NotFound, VersionExists, NotPending, ConcurrentChange: as :func:`approve_upload`.
    """
    ref = f"{key}@{version}"
    reason = _comment(comment, required=True)
    request = {"ref": ref, "sha256": sha256, "comment": reason}
    replay = _Replay(actor_id, "sop.refuse", idempotency_key, request)
    if (seen := replay.seen(db)) is not None:
        return seen
    try:
        with db.begin() as conn:
            row = _pending_row(conn, key, version, sha256, lock=True)
            stored = replace(_stored(row), status=REFUSED)
            conn.execute(
                update(_S).where(_S.c.key == key, _S.c.version == version).values(status=REFUSED)
            )
            _keep_review(
                conn,
                stored,
                decision=REFUSED,
                reviewer_id=actor_id,
                comment=reason,
                now=now,
            )
            replay.remember(conn, stored, now)
    except IntegrityError:
        return _lost_race(db, replay, f"{ref} was reviewed by someone else meanwhile")
    return Outcome(stored)


def list_pending(
    db: Engine, *, after: tuple[str, int] | None = None, limit: int = 50
) -> list[StoredSop]:
    """Uploads waiting for review, by key and version, after ``after``; up to ``limit`` of
    them, without text."""
    query = select(_S).where(_S.c.status == PENDING).order_by(_S.c.key, _S.c.version).limit(limit)
    if after is not None:
        query = query.where(tuple_(_S.c.key, _S.c.version) > tuple_(*after))
    with read_transaction(db) as conn:
        return [_stored(row) for row in conn.execute(query)]


def read_stored(db: Engine, key: str, version: int) -> StoredSop:
    """An uploaded SOP, pending, refused or published, with its text and its reviews.

    :raises NotFound: nothing was uploaded under this key and version.
    """
    with read_transaction(db) as conn:
        row = _row(conn, key, version)
        if row is None:
            raise NotFound(f"no uploaded SOP {key}@{version}")
        reviews = conn.execute(
            select(_R).where(_R.c.key == key, _R.c.version == version).order_by(_R.c.id)
        ).all()
    return replace(
        _stored(row),
        source=row.source,
        reviews=tuple(
            Review(r.decision, r.reviewer_id, r.uploaded_by, r.sha256, r.comment, r.decided_at)
            for r in reviews
        ),
    )


def _pending_row(
    conn: Connection, key: str, version: int, sha256: str, *, lock: bool = False
) -> Any:
    """The pending row of ``key@version`` holding the text ``sha256``.

    :raises NotFound, VersionExists, NotPending, ConcurrentChange: it is not.
    """
    ref = f"{key}@{version}"
    row = _row(conn, key, version, lock=lock)
    if row is None:
        raise NotFound(f"no upload {ref}: upload it first (POST /sops)")
    if row.status == PUBLISHED:
        raise _published(ref)
    if row.status == REFUSED:
        raise NotPending(f"{ref} was refused; upload it again to have it reviewed")
    if row.sha256 != sha256:
        raise ConcurrentChange(
            f"{ref} holds another text than the one you reviewed (sha256 {row.sha256}): "
            "it was uploaded again; read it again (GET /sops/{key}/{version}/source)"
        )
    return row


def _keep_review(
    conn: Connection,
    stored: StoredSop,
    *,
    decision: str,
    reviewer_id: str,
    comment: str | None,
    now: datetime,
) -> None:
    conn.execute(
        _R.insert().values(
            key=stored.key,
            version=stored.version,
            sha256=stored.sha256,
            decision=decision,
            reviewer_id=reviewer_id,
            uploaded_by=stored.uploaded_by,
            comment=comment,
            decided_at=now,
        )
    )


def _comment(comment: str | None, *, required: bool) -> str | None:
    text = (comment or "").strip()
    if required and not text:
        raise InvalidInput("say why the SOP is refused", field="comment")
    if len(text) > MAX_COMMENT:
        raise InvalidInput(f"at most {MAX_COMMENT} characters", field="comment")
    return text or None


def _row(conn: Connection, key: str, version: int, *, lock: bool = False) -> Any:
    query = select(_S).where(_S.c.key == key, _S.c.version == version)
    if lock:
        query = query.with_for_update()
    return conn.execute(query).first()


def _stored(row: Any) -> StoredSop:
    return StoredSop(
        key=row.key,
        version=row.version,
        title=row.title,
        sha256=row.sha256,
        status=row.status,
        uploaded_by=row.uploaded_by,
        uploaded_at=row.uploaded_at,
        published_by=row.published_by,
        published_at=row.published_at,
    )


def _published(ref: str) -> VersionExists:
    return VersionExists(
        f"{ref} is already published and never changes; give the changed SOP a new version"
    )


def _refuse_published(library: SopLibrary, key: str, version: int) -> None:
    try:
        library.get(key, version)
    except NotFound:
        return
    raise _published(f"{key}@{version}")


def _lost_race(db: Engine, replay: _Replay, message: str) -> Outcome:
    """Another request changed the same row or took the same key first: its result if it was
    a retry of this one, else a conflict."""
    if (seen := replay.seen(db)) is not None:
        return seen
    raise ConcurrentChange(message)


@dataclass(frozen=True, slots=True)
class _Replay:
    """One operation's idempotency key: what a retry must repeat, and where it is stored."""

    actor_id: str
    operation: str
    key: str | None
    request: Mapping[str, Any]

    @property
    def stored_key(self) -> str:
        assert self.key is not None
        return f"{self.operation}:{hashlib.sha256(self.key.encode('utf-8')).hexdigest()}"

    @property
    def request_hash(self) -> str:
        body = json.dumps({"operation": self.operation, **self.request}, sort_keys=True)
        return hashlib.sha256(body.encode("utf-8")).hexdigest()

    def seen(self, db: Engine) -> Outcome | None:
        """The first result under this key, or None.

        :raises IdempotencyKeyReused: the key was used for another request.
        """
        if self.key is None:
            return None
        with db.connect() as conn:
            row = conn.execute(
                select(_P.c.request_hash, _P.c.result).where(
                    _P.c.actor_id == self.actor_id, _P.c.key == self.stored_key
                )
            ).first()
        if row is None:
            return None
        if row.request_hash != self.request_hash:
            raise IdempotencyKeyReused(
                "this idempotency key was already used for a different request",
                field="Idempotency-Key",
            )
        return Outcome(StoredSop.from_json(row.result), replayed=True)

    def remember(self, conn: Connection, stored: StoredSop, now: datetime) -> None:
        if self.key is None:
            return
        conn.execute(
            _P.insert().values(
                actor_id=self.actor_id,
                key=self.stored_key,
                request_hash=self.request_hash,
                result=stored.to_json(),
                created_at=now,
            )
        )
