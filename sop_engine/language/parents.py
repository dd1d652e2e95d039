"""Find, in a library of SOP files, only the ones some SOPs extend, without reading the rest.

Checking one file that extends a baseline should not cost parsing the whole library. For
each ``extends: KEY@VERSION`` not supplied by the documents at hand, :func:`find_parents`
looks in this order, and parses a file only when its first lines say it is the one:

1. files named ``KEY.sop.yaml``, the library's convention;
2. any other file whose top-level ``key:`` and ``version:`` lines (read with a regular
   expression, not parsed) match;
3. files whose key cannot be read that way (flow style, an alias...), parsed as a last
   resort, so that no parent the full compile would find is missed.

Found parents are searched for their own parents in turn. When a parent is found nowhere,
the refs read from every file's first lines are returned too, so that the compiler's
"did you mean" can still point at a near miss in the library.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sop_engine.errors import DefinitionError
from sop_engine.language.inherit import ref_of
from sop_engine.language.source import SourceDocument, parse_source

__all__ = ["Parents", "find_parents", "header_ref"]

_KEY_LINE = re.compile(r"^key:[ \t]*(.*?)[ \t]*(?:#.*)?$", re.MULTILINE)
_VERSION_LINE = re.compile(r"^version:[ \t]*(.*?)[ \t]*(?:#.*)?$", re.MULTILINE)
_KEY = re.compile(r"^[a-z][a-z0-9_.-]*$")
_VERSION = re.compile(r"^[0-9]+$")


def _one(pattern: re.Pattern[str], text: str, form: re.Pattern[str]) -> str | None:
    found = pattern.findall(text)
    if len(found) != 1:
        return None
    value = found[0]
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value if form.match(value) else None


def header_ref(text: str) -> tuple[str | None, str | None]:
    """The key and version an SOP's top-level lines declare, each None when unclear."""
    return _one(_KEY_LINE, text, _KEY), _one(_VERSION_LINE, text, _VERSION)


def _may_be(declared: str | None, wanted: str) -> bool:
    return declared is None or not wanted.isdigit() or int(declared) == int(wanted)


@dataclass
class Parents:
    """The library documents the named ones descend from, in library order."""

    docs: list[SourceDocument] = field(default_factory=list)
    elsewhere: set[str] = field(default_factory=set)
    """Refs of library files not read, for hints; filled only when a parent is missing."""


@dataclass
class _Library:
    files: Sequence[Path]
    texts: dict[Path, str | None] = field(default_factory=dict)
    parsed: dict[Path, SourceDocument | None] = field(default_factory=dict)

    def text(self, path: Path) -> str | None:
        if path not in self.texts:
            try:
                self.texts[path] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                self.texts[path] = None  # the full compile could not read it either
        return self.texts[path]

    def parse(self, path: Path) -> SourceDocument | None:
        if path not in self.parsed:
            text = self.text(path)
            try:
                self.parsed[path] = None if text is None else parse_source(text, str(path))
            except DefinitionError:
                self.parsed[path] = None
        return self.parsed[path]

    def find(self, ref: str, suffix: str) -> SourceDocument | None:
        key, _, version = ref.partition("@")
        named = [p for p in self.files if p.name == f"{key}{suffix}"]
        rest = [p for p in self.files if p.name != f"{key}{suffix}"]
        unclear: list[Path] = []
        for path in [*named, *rest]:
            text = self.text(path)
            if text is None:
                continue
            found_key, found_version = header_ref(text)
            if found_key is None:
                unclear.append(path)
                continue
            if found_key == key and _may_be(found_version, version):
                doc = self.parse(path)
                if doc is not None and ref_of(doc.data) == ref:
                    return doc
        for path in unclear:
            doc = self.parse(path)
            if doc is not None and ref_of(doc.data) == ref:
                return doc
        return None

    def refs(self) -> set[str]:
        """Every ref the library's files declare, as far as their first lines tell."""
        found: set[str] = set()
        for path in self.files:
            doc = self.parsed.get(path)
            if doc is not None:
                found.add(ref_of(doc.data) or "")
                continue
            text = self.text(path)
            key, version = header_ref(text) if text is not None else (None, None)
            if key is not None and version is not None:
                found.add(f"{key}@{int(version)}")
        found.discard("")
        return found


def find_parents(docs: Iterable[SourceDocument], library: Sequence[Path], suffix: str) -> Parents:
    """The documents of ``library`` that ``docs`` extend, transitively, by ``KEY@VERSION``.

    A ref defined by one of ``docs`` is never looked for in the library, as when the files
    are compiled together with ``docs`` first.
    """
    docs = list(docs)
    known = {ref for ref in (ref_of(d.data) for d in docs) if ref}
    wanted = [d.data.get("extends") for d in docs if isinstance(d.data, dict)]
    lib = _Library(library)
    found: list[SourceDocument] = []
    missing = False
    searched: set[str] = set()
    while wanted:
        ref = wanted.pop(0)
        if not isinstance(ref, str) or ref in known or ref in searched:
            continue
        searched.add(ref)
        doc = lib.find(ref, suffix)
        if doc is None:
            missing = True
            continue
        known.add(ref)
        found.append(doc)
        wanted.append(doc.data.get("extends"))
    order = {path: i for i, path in enumerate(library)}
    found.sort(key=lambda d: order.get(Path(d.file), len(order)))
    return Parents(found, lib.refs() if missing else set())
