"""Coordinators' SOPs through the API: upload a draft, replace it, publish it.

An upload is compiled like a file (every problem, with its line, in ``upload.sop.yaml``)
against the SOPs it may extend: the library's files and the published versions. A valid
upload is stored as a **draft** (a row of ``sop_sources``); an invalid one is stored nowhere.
A draft may be uploaded again, replacing its text, until it is published.

Publishing compiles the stored text again, against the library as it is now (a parent may
have been published since the upload), marks the row **published** only if its text is
still the text that compiled, and adds the SOP to the running library. From then on the
version never changes: uploading or publishing a key and version the library holds (a file,
or a published row) raises :class:`VersionExists`. Every start compiles the published rows
with the files (:func:`sop_engine.language.published.load_library`).

Both operations take an idempotency key: the first result is stored in the transaction that
made the change, and a retry with the same key gets it back (``replayed``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from sop_engine.errors import (
    ConcurrentChange,
    DefinitionError,
    IdempotencyKeyReused,
    NotFound,
    Problem,
    SopEngineError,
)
from sop_engine.language.compiler import CompiledSop, SopLibrary, compile_documents
from sop_engine.language.inherit import ref_of
from sop_engine.language.published import (
    DRAFT,
    PUBLISHED,
    PublishedSources,
    ancestors,
    sha256_text,
    source_name,
)
from sop_engine.language.source import parse_source
from sop_engine.persistence.db import read_transaction
from sop_engine.persistence.models import PublishingRequest, SopSource, table

__all__ = [
    "MAX_VERSION",
    "UPLOAD_NAME",
    "Outcome",
    "StoredSop",
    "VersionExists",
    "check_upload",
    "decode_upload",
    "list_drafts",
    "publish_draft",
    "read_stored",
    "upload_draft",
]

_S = table(SopSource)
_P = table(PublishingRequest)

UPLOAD_NAME = "upload.sop.yaml"
"""The file name problems of an uploaded SOP carry."""
MAX_VERSION = 2_147_483_647
"""The largest version the database stores (a 32-bit integer, as referrals pin it)."""


class VersionExists(SopEngineError, ValueError):
    """The SOP's key and version are published already (a file, or a published row): a
    published version never changes, so the changed SOP needs a new version."""


@dataclass(frozen=True, slots=True)
class StoredSop:
    """An uploaded SOP as stored: ``source`` is filled only when asked for."""

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

    @property
    def ref(self) -> str:
        return f"{self.key}@{self.version}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["source"]
        for name in ("uploaded_at", "published_at"):
            if data[name] is not None:
                data[name] = data[name].isoformat()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StoredSop:
        values = dict(data)
        for name in ("uploaded_at", "published_at"):
            if values.get(name) is not None:
                values[name] = datetime.fromisoformat(values[name])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an upload or a publication did, or did the first time (``replayed``)."""

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


def upload_draft(
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
    """Store ``text`` as the draft of its key and version, or replace that draft.

    :raises DefinitionError: the SOP does not compile; nothing is stored.
    :raises VersionExists: the version is published already.
    """
    sha = sha256_text(text)
    replay = _Replay(actor_id, "sop.upload", idempotency_key, {"sha256": sha})
    if (seen := replay.seen(db)) is not None:
        return seen
    sop = check_upload(text, sources, templates)
    _refuse_published(library, sop.key, sop.version)
    stored = StoredSop(sop.key, sop.version, sop.spec.title, sha, DRAFT, actor_id, now)
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
                        uploaded_by=actor_id,
                        uploaded_at=now,
                    )
                )
            replay.remember(conn, stored, now)
    except IntegrityError:
        return _lost_race(db, replay, f"{sop.ref} was uploaded by someone else meanwhile")
    return Outcome(stored)


def publish_draft(
    db: Engine,
    library: SopLibrary,
    sources: PublishedSources,
    key: str,
    version: int,
    *,
    actor_id: str,
    now: datetime,
    templates: Collection[str] | None = None,
    idempotency_key: str | None = None,
) -> Outcome:
    """Make the draft ``key@version`` live: compile it against the library as it is now,
    mark it published, add it to ``library``.

    :raises NotFound: there is no such draft.
    :raises VersionExists: the version is published already.
    :raises DefinitionError: the draft no longer compiles (a parent it extends is gone).
    :raises ConcurrentChange: the draft was replaced while it was being published.
    """
    ref = f"{key}@{version}"
    replay = _Replay(actor_id, "sop.publish", idempotency_key, {"ref": ref})
    if (seen := replay.seen(db)) is not None:
        return seen
    _refuse_published(library, key, version)
    with db.connect() as conn:
        row = _row(conn, key, version)
    if row is None:
        raise NotFound(f"no draft {ref}: upload it first (POST /sops)")
    if row.status == PUBLISHED:
        raise _published(ref)
    sop = check_upload(row.source, sources, templates, source_name(key, version))
    if (sop.key, sop.version) != (key, version):  # pragma: no cover - the upload checked it
        raise NotFound(f"no draft {ref}")
    stored = replace(_stored(row), status=PUBLISHED, published_by=actor_id, published_at=now)
    try:
        with db.begin() as conn:
            changed = conn.execute(
                update(_S)
                .where(
                    _S.c.key == key,
                    _S.c.version == version,
                    _S.c.status == DRAFT,
                    _S.c.sha256 == row.sha256,
                )
                .values(status=PUBLISHED, published_by=actor_id, published_at=now)
            ).rowcount
            if not changed:
                current = _row(conn, key, version)
                if current is not None and current.status == PUBLISHED:
                    raise _published(ref)
                raise ConcurrentChange(f"the draft {ref} was replaced meanwhile; publish again")
            replay.remember(conn, stored, now)
    except IntegrityError:
        return _lost_race(db, replay, f"{ref} was published by someone else meanwhile")
    library.add(sop)
    return Outcome(stored)


def list_drafts(
    db: Engine, *, after: tuple[str, int] | None = None, limit: int = 50
) -> list[StoredSop]:
    """Drafts by key and version, after ``after``; up to ``limit`` of them, without text."""
    query = select(_S).where(_S.c.status == DRAFT).order_by(_S.c.key, _S.c.version).limit(limit)
    if after is not None:
        query = query.where(tuple_(_S.c.key, _S.c.version) > tuple_(*after))
    with read_transaction(db) as conn:
        return [_stored(row) for row in conn.execute(query)]


def read_stored(db: Engine, key: str, version: int) -> StoredSop:
    """An uploaded SOP, draft or published, with its text.

    :raises NotFound: nothing was uploaded under this key and version.
    """
    with read_transaction(db) as conn:
        row = _row(conn, key, version)
    if row is None:
        raise NotFound(f"no uploaded SOP {key}@{version}")
    return replace(_stored(row), source=row.source)


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
