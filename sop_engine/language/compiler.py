"""The compiler: SOP files in, checked and immutable :class:`CompiledSop` objects out.

Stages, each a pure function with its own tests::

    source.parse_source      YAML text -> data with locations     (syntax, tags, limits)
    schema.schema_problems   data -> problems                     (keys, types, forms)
    inherit.resolve_extends  documents -> merged documents        (extends)
    build.build_spec         merged data -> SopSpec               (handoffs expanded)
    checks.*                 SopSpec -> problems                  (references, graph, rules)
    machine.build_machine    SopSpec -> transitions.Machine       (one per SOP version)

Every problem of every file is collected before anything is refused, so a coordinator sees
the whole list at once.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sop_engine.errors import DefinitionError, NotFound, Problem
from sop_engine.language import checks, references
from sop_engine.language.build import build_spec
from sop_engine.language.guards import CompiledGuard
from sop_engine.language.inherit import ref_of, resolve_extends
from sop_engine.language.machine import build_machine
from sop_engine.language.schema import did_you_mean, schema_problems
from sop_engine.language.source import SourceDocument, load_source, parse_source
from sop_engine.language.spec import SopSpec

__all__ = [
    "SOP_SUFFIX",
    "CompiledSop",
    "SopLibrary",
    "compile_documents",
    "compile_paths",
    "compile_text",
    "discover",
]

SOP_SUFFIX = ".sop.yaml"
"""In a folder, SOP files are recognised by this ending; named files are read whatever it is."""


@dataclass(frozen=True, eq=False)
class CompiledSop:
    """A checked SOP version: its spec, its compiled guards and its one machine."""

    spec: SopSpec
    guards: Mapping[str, CompiledGuard]
    machine: Any = field(repr=False)

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def version(self) -> int:
        return self.spec.version

    @property
    def ref(self) -> str:
        return self.spec.ref


def discover(paths: Iterable[Path]) -> list[Path]:
    """Files named directly, and every ``*.sop.yaml`` below folders, in a stable order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(path.rglob(f"*{SOP_SUFFIX}")))
        else:
            found.append(path)
    return list(dict.fromkeys(found))


def _ancestors(doc: SourceDocument, docs: list[SourceDocument]) -> Iterable[str]:
    by_ref = {ref_of(d.data): d for d in docs}
    seen: set[str] = set()
    parent = doc.data.get("extends")
    while isinstance(parent, str) and parent in by_ref and parent not in seen:
        seen.add(parent)
        yield parent
        parent = by_ref[parent].data.get("extends")


def _compile_one(
    doc: SourceDocument, templates: Collection[str] | None
) -> CompiledSop | list[Problem]:
    """Schema-check the merged document, build its spec, run every check, build its machine."""
    complete = SourceDocument(
        doc.file, {k: v for k, v in doc.data.items() if k != "extends"}, doc.locations
    )
    found = schema_problems(complete)
    if found:
        return found
    spec = build_spec(doc)
    guards, guard_problems = checks.compile_guards(spec)
    found = [
        *checks.header_problems(spec),
        *references.reference_problems(spec, templates),
        *guard_problems,
        *checks.graph_problems(spec),
        *checks.rule_problems(spec),
    ]
    if found:
        return found
    return CompiledSop(spec, guards, build_machine(spec))


def compile_documents(
    docs: Iterable[SourceDocument], templates: Collection[str] | None = None
) -> tuple[list[CompiledSop], list[Problem]]:
    """Compile parsed documents together (so that ``extends`` can find its parents)."""
    problems: list[Problem] = []
    valid: list[SourceDocument] = []
    broken: set[str] = set()
    for doc in docs:
        found = schema_problems(doc)
        if found:
            problems.extend(found)
            ref = ref_of(doc.data)
            if ref:
                broken.add(ref)
        else:
            valid.append(doc)

    # A child of a broken parent: say so once instead of repeating the parent's faults.
    usable = []
    for doc in valid:
        parent = doc.data.get("extends")
        if parent in broken:
            problems.append(
                Problem(
                    *doc.where(("extends",)),
                    f"extends {parent}, which has errors",
                    sop=doc.data.get("key"),
                )
            )
            broken.add(ref_of(doc.data) or "")
            continue
        usable.append(doc)
    merged, found = resolve_extends(usable)
    problems.extend(found)

    def depth(doc: SourceDocument) -> int:
        return sum(1 for _ in _ancestors(doc, merged))

    compiled: list[CompiledSop] = []
    failed: set[str] = set()
    for doc in sorted(merged, key=depth):
        parent = doc.data.get("extends")
        if parent in failed:
            problems.append(
                Problem(
                    *doc.where(("extends",)),
                    f"extends {parent}, which has errors",
                    sop=doc.data.get("key"),
                )
            )
            failed.add(ref_of(doc.data) or "")
            continue
        result = _compile_one(doc, templates)
        if isinstance(result, CompiledSop):
            compiled.append(result)
        else:
            problems.extend(result)
            failed.add(ref_of(doc.data) or "")
    return compiled, sorted(set(problems), key=lambda p: (p.file, p.line, p.message))


def compile_paths(
    paths: Iterable[Path], templates: Collection[str] | None = None
) -> tuple[list[CompiledSop], list[Problem]]:
    """Discover, parse and compile SOP files; return what compiled and every problem."""
    docs: list[SourceDocument] = []
    problems: list[Problem] = []
    for path in discover(paths):
        try:
            docs.append(load_source(path))
        except DefinitionError as exc:
            problems.extend(exc.problems)
    compiled, found = compile_documents(docs, templates)
    return compiled, sorted({*problems, *found}, key=lambda p: (p.file, p.line, p.message))


def compile_text(
    text: str,
    file: str = "<string>",
    *,
    parents: Iterable[SourceDocument] = (),
    templates: Collection[str] | None = None,
) -> CompiledSop:
    """Compile one SOP given as text; raise :class:`DefinitionError` with every problem."""
    doc = parse_source(text, file)
    compiled, problems = compile_documents([*parents, doc], templates)
    if problems:
        raise DefinitionError(problems)
    ref = ref_of(doc.data)
    return next(c for c in compiled if c.ref == ref)


class SopLibrary:
    """The compiled SOPs a process knows, cached per (key, version); thread-safe.

    A version, once compiled, is never replaced: publishing changed content under a version
    already known is refused, since referrals are pinned to versions for life.
    """

    def __init__(self, sops: Iterable[CompiledSop] = ()) -> None:
        self._lock = threading.Lock()
        self._by_ref: dict[tuple[str, int], CompiledSop] = {}
        for sop in sops:
            self.add(sop)

    @classmethod
    def load(cls, paths: Iterable[Path], templates: Collection[str] | None = None) -> SopLibrary:
        """Compile every SOP under ``paths``; raise :class:`DefinitionError` if any is broken."""
        compiled, problems = compile_paths(paths, templates)
        if problems:
            raise DefinitionError(problems)
        return cls(compiled)

    def add(self, sop: CompiledSop) -> CompiledSop:
        with self._lock:
            known = self._by_ref.get((sop.key, sop.version))
            if known is not None and known.spec != sop.spec:
                raise DefinitionError(
                    [
                        Problem(
                            sop.spec.file,
                            1,
                            f"{sop.ref} is already published with other "
                            "content; give the changed SOP a new version",
                            sop=sop.key,
                        )
                    ]
                )
            return self._by_ref.setdefault((sop.key, sop.version), sop)

    def get(self, key: str, version: int | None = None) -> CompiledSop:
        """One SOP version, or the latest version of ``key`` when none is given."""
        with self._lock:
            if version is not None:
                found = self._by_ref.get((key, version))
            else:
                versions = [v for (k, v) in self._by_ref if k == key]
                found = self._by_ref[(key, max(versions))] if versions else None
            if found is None:
                what = f"{key}@{version}" if version is not None else key
                hint = did_you_mean(key, {k for k, _ in self._by_ref})
                raise NotFound(f"no SOP {what}" + (f" ({hint})" if hint else ""))
            return found

    def get_ref(self, ref: str) -> CompiledSop:
        """``KEY`` or ``KEY@VERSION``."""
        key, _, version = ref.partition("@")
        if version and not version.isdigit():
            raise NotFound(f"no SOP {ref}: the version must be a whole number")
        return self.get(key, int(version) if version else None)

    def __iter__(self) -> Any:
        with self._lock:
            items = sorted(self._by_ref.items())
        return iter([sop for _, sop in items])

    def __len__(self) -> int:
        return len(self._by_ref)
