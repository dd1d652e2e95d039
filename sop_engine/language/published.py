"""The SOP library of a running engine: the SOP files, and the versions coordinators
published through the API (rows of ``sop_sources``, see :mod:`sop_engine.publishing`).

Both the API and the worker build their library with :func:`load_library`, so that a
referral on a published SOP is served, escalated and notified like one on a file. A
published row is compiled with the same stages as a file, named ``KEY@VERSION.sop.yaml`` in
its problems, and may ``extends:`` a file or another published version.

Several processes share one database: a version another process published after this one
started is found on first use. :class:`PublishedLibrary` looks in the database when asked
for a version it does not know, for the latest version of a key, and when listed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select

from sop_engine.errors import DefinitionError, NotFound, Problem
from sop_engine.language.compiler import CompiledSop, SopLibrary, compile_documents, discover
from sop_engine.language.inherit import ref_of
from sop_engine.language.limits import MAX_EXTENDS
from sop_engine.language.source import SourceDocument, load_source, parse_source
from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction

__all__ = [
    "PENDING",
    "PUBLISHED",
    "REFUSED",
    "PublishedLibrary",
    "PublishedSources",
    "ancestors",
    "load_library",
    "sha256_text",
    "source_name",
]

log = logging.getLogger(__name__)

_S = tables.sop_sources

PENDING = "pending"
"""Status of an uploaded SOP waiting for a second coordinator's approval; it may still be
replaced."""
REFUSED = "refused"
"""Status of an uploaded SOP a coordinator refused; it may be uploaded again."""
PUBLISHED = "published"
"""Status of an uploaded SOP that is live, and never changes again."""


def source_name(key: str, version: int) -> str:
    """The file name a stored SOP's problems and spec carry: ``KEY@VERSION.sop.yaml``."""
    return f"{key}@{version}.sop.yaml"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ancestors(doc: SourceDocument, known: Mapping[str, SourceDocument]) -> list[SourceDocument]:
    """The documents of ``known`` that ``doc`` extends, nearest first (not ``doc`` itself);
    at most one more than :data:`~sop_engine.language.limits.MAX_EXTENDS`, which is enough for
    the compiler to refuse the chain."""
    own = ref_of(doc.data)
    found: list[SourceDocument] = []
    parent = doc.data.get("extends") if isinstance(doc.data, dict) else None
    while isinstance(parent, str) and parent != own and parent in known:
        if len(found) > MAX_EXTENDS:
            break
        nearest = known[parent]
        if nearest in found:
            break
        found.append(nearest)
        parent = nearest.data.get("extends") if isinstance(nearest.data, dict) else None
    return found


@dataclass(frozen=True, slots=True)
class _Parsed:
    sha256: str
    doc: SourceDocument


class PublishedSources:
    """The source documents an SOP may extend: the files under ``paths`` (read once, on first
    use) and the published rows of the database (read on every call, parsed once each)."""

    def __init__(
        self,
        db: Engine,
        paths: Iterable[Path],
        *,
        files: Mapping[str, SourceDocument] | None = None,
    ) -> None:
        self.db = db
        self.paths = tuple(paths)
        self._lock = threading.Lock()
        self._files: dict[str, SourceDocument] | None = dict(files) if files is not None else None
        self._parsed: dict[str, _Parsed] = {}

    def file_documents(self) -> Mapping[str, SourceDocument]:
        """``KEY@VERSION`` -> document, for every SOP file that parses (broken files are the
        library loader's to report)."""
        with self._lock:
            if self._files is None:
                files: dict[str, SourceDocument] = {}
                for path in discover(self.paths):
                    try:
                        doc = load_source(path)
                    except DefinitionError:
                        continue
                    ref = ref_of(doc.data)
                    if ref:
                        files.setdefault(ref, doc)
                self._files = files
            return self._files

    def published_documents(self) -> dict[str, SourceDocument]:
        """``KEY@VERSION`` -> document, for every published row (a row that no longer parses
        is left out: it parsed when it was published). Only rows not seen before are read
        whole; the others cost their key, version and hash."""
        with read_transaction(self.db) as conn:
            rows = conn.execute(
                select(_S.c.key, _S.c.version, _S.c.sha256).where(_S.c.status == PUBLISHED)
            ).all()
            with self._lock:
                new = [
                    r
                    for r in rows
                    if (seen := self._parsed.get(f"{r.key}@{r.version}")) is None
                    or seen.sha256 != r.sha256
                ]
            for row in new:
                text = conn.execute(
                    select(_S.c.source).where(_S.c.key == row.key, _S.c.version == row.version)
                ).scalar_one()
                ref = f"{row.key}@{row.version}"
                try:
                    doc = parse_source(text, source_name(row.key, row.version))
                except DefinitionError:
                    log.warning("published SOP %s no longer parses; left out", ref)
                    continue
                with self._lock:
                    self._parsed[ref] = _Parsed(row.sha256, doc)
        with self._lock:
            return {
                ref: self._parsed[ref].doc
                for r in rows
                if (ref := f"{r.key}@{r.version}") in self._parsed
            }

    def documents(self) -> dict[str, SourceDocument]:
        """Files and published rows together; a file wins over a row of the same version
        (the library loader refuses that pair at start)."""
        return {**self.published_documents(), **self.file_documents()}


class PublishedLibrary(SopLibrary):
    """A :class:`SopLibrary` that also finds versions published in the database after it was
    loaded (by this process or another one sharing the database)."""

    def __init__(
        self,
        sops: Iterable[CompiledSop] = (),
        *,
        sources: PublishedSources,
        templates: Collection[str] | None = None,
    ) -> None:
        super().__init__(sops)
        self.sources = sources
        self.templates = templates
        self._refreshing = threading.Lock()

    def refresh(self) -> list[CompiledSop]:
        """Compile and add the published versions this library does not hold yet; return
        them. A row that does not compile any more is logged and left out."""
        with self._refreshing:
            published = self.sources.published_documents()
            missing = [ref for ref in published if not self._holds(ref)]
            if not missing:
                return []
            known = {**published, **self.sources.file_documents()}
            added: list[CompiledSop] = []
            for ref in missing:
                doc = published[ref]
                compiled, problems = compile_documents(
                    [*ancestors(doc, known), doc], self.templates
                )
                sop = next((c for c in compiled if c.ref == ref), None)
                if sop is None:
                    log.warning(
                        "published SOP %s does not compile: %d problem(s)", ref, len(problems)
                    )
                    continue
                added.append(self.add(sop))
            return added

    def _holds(self, ref: str) -> bool:
        key, _, version = ref.rpartition("@")
        try:
            super().get(key, int(version))
        except NotFound:
            return False
        return True

    def get(self, key: str, version: int | None = None) -> CompiledSop:
        if version is None:
            self.refresh()  # another process may have published a later version
            return super().get(key, version)
        try:
            return super().get(key, version)
        except NotFound:
            if not self.refresh():
                raise
            return super().get(key, version)

    def __iter__(self) -> Iterator[CompiledSop]:
        self.refresh()
        listed: Iterator[CompiledSop] = super().__iter__()
        return listed

    def __len__(self) -> int:
        return len(list(iter(self)))


def load_library(
    db: Engine, paths: Iterable[Path], templates: Collection[str] | None = None
) -> PublishedLibrary:
    """Compile the SOP files under ``paths`` and the published rows of ``db`` together.

    :raises DefinitionError: with every problem, when a file or a published row does not
        compile, or a published row has the key and version of a file.
    """
    paths = tuple(paths)
    docs: list[SourceDocument] = []
    problems: list[Problem] = []
    for path in discover(paths):
        try:
            docs.append(load_source(path))
        except DefinitionError as exc:
            problems.extend(exc.problems)
    files = {ref: d for d in docs if (ref := ref_of(d.data))}
    sources = PublishedSources(db, paths, files=files)
    for ref, doc in sources.published_documents().items():
        if ref in files:
            problems.append(
                Problem(
                    doc.file,
                    1,
                    f"{ref} is published in the database and also written in "
                    f"{files[ref].file}; a published version never changes: give the file "
                    "a new version",
                    sop=ref.rpartition("@")[0],
                )
            )
            continue
        docs.append(doc)
    compiled, found = compile_documents(docs, templates)
    problems.extend(found)
    if problems:
        raise DefinitionError(problems)
    return PublishedLibrary(compiled, sources=sources, templates=templates)
