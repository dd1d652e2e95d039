"""The compiler: SOP files in, checked and immutable :class:`CompiledSop` objects out.

Stages, each a pure function with its own tests::

    source.parse_source      YAML text -> data with locations     (syntax, tags, limits)
    schema.schema_problems   data -> problems                     (keys, types, forms)
    salvage.salvage          faulty data -> the part still checkable
    inherit.resolve_extends  documents -> merged documents        (extends)
    limits.size_problems     merged data -> problems              (values, states, transitions)
    build.build_spec         merged data -> SopSpec               (handoffs expanded)
    checks.*                 SopSpec -> problems                  (references, graph, rules)
    clocks.*                 SopSpec -> problems, conditions      (case clocks, stops_when)
    machine.build_machine    SopSpec -> transitions.Machine       (one per SOP version)

Every problem of every file is collected before anything is refused, so a coordinator sees
the whole list at once. A document is checked against the schema once: in full when it
stands alone; partially when it ``extends`` another, then in full once merged. Schema faults
do not stop the later stages: they run on what :mod:`~sop_engine.language.salvage` could
keep, and report what does not follow from the pruning; such a document never compiles, and
its children are told their parent has errors.

:func:`compile_with_library` checks a few files whose parents are in a library, reading of
the library only those parents (:mod:`~sop_engine.language.parents`).
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sop_engine.errors import DefinitionError, NotFound, Problem
from sop_engine.language import acting, checks, clocks, references
from sop_engine.language.build import build_spec
from sop_engine.language.guards import CompiledGuard
from sop_engine.language.inherit import ref_of, resolve_extends
from sop_engine.language.limits import size_problems
from sop_engine.language.machine import build_machine
from sop_engine.language.parents import find_parents
from sop_engine.language.salvage import Salvage
from sop_engine.language.salvage import salvage as salvage_document
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
    "compile_with_library",
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


@dataclass(frozen=True)
class _Checked:
    """What the first schema check of a document found."""

    in_full: bool
    """Checked against the full schema (no ``extends``), so not to be checked again."""
    salvage: Salvage | None = None
    """Its schema faults and what was pruned to check the rest; None when it had none."""


def _later_stages(
    doc: SourceDocument, templates: Collection[str] | None, salvage: Salvage | None
) -> tuple[dict[str, CompiledGuard], list[Problem], SopSpec]:
    """Build the spec and run every check after the schema, heeding what was pruned."""
    spec = build_spec(doc)
    guards, guard_problems = checks.compile_guards(spec)
    conditions, condition_problems = clocks.compile_conditions(spec)
    guards.update(conditions)
    found = [
        *checks.header_problems(spec),
        *references.reference_problems(spec, templates),
        *guard_problems,
        *checks.rule_problems(spec),
        *acting.acting_problems(spec),
        *clocks.clock_problems(spec, templates),
        *condition_problems,
    ]
    if salvage is None:
        return guards, [*found, *checks.graph_problems(spec)], spec
    salvage = salvage.widened(spec)
    kept = [p for p in found if salvage.keeps(p)]
    if salvage.graph_intact:
        kept.extend(checks.graph_problems(spec))
    return guards, kept, spec


def _compile_one(
    doc: SourceDocument, templates: Collection[str] | None, checked: _Checked
) -> CompiledSop | list[Problem]:
    """Schema-check the merged document (unless it was checked in full already), build its
    spec, run every check, build its machine. After schema faults, report the later stages'
    faults on what could be salvaged, and never compile."""
    salvage = checked.salvage
    problems: list[Problem] = []
    if not checked.in_full:
        complete = SourceDocument(
            doc.file, {k: v for k, v in doc.data.items() if k != "extends"}, doc.locations
        )
        problems = schema_problems(complete)
        if problems:
            rescue = salvage_document(complete, partial=False)
            if rescue is None:
                return problems
            salvage = rescue if salvage is None else salvage.then(rescue)
            extends = {"extends": doc.data["extends"]} if "extends" in doc.data else {}
            doc = SourceDocument(doc.file, {**rescue.doc.data, **extends}, rescue.doc.locations)
    if salvage is None:
        guards, found, spec = _later_stages(doc, templates, None)
        if found:
            return found
        return CompiledSop(spec, guards, build_machine(spec))
    try:
        _, found, _ = _later_stages(doc, templates, salvage)
    except Exception:
        # The builder trusts schema-valid data; a pruned document may still surprise it,
        # and the schema faults alone are a truthful answer.
        return problems
    return [*problems, *found]


def compile_documents(
    docs: Iterable[SourceDocument],
    templates: Collection[str] | None = None,
    *,
    parents: Iterable[SourceDocument] = (),
) -> tuple[list[CompiledSop], list[Problem]]:
    """Compile parsed documents together (so that ``extends`` can find its parents).

    ``parents`` are SOPs that compiled already (the library's, the published ones): the
    documents may extend them, but they are neither checked nor compiled again, so that the
    cost of checking an upload does not grow with the length of its chain of ``extends``.
    Whatever they pass on is checked in the documents that inherit it."""
    return _compile(docs, templates, (), parents)


def _check_schema(
    docs: Iterable[SourceDocument], problems: list[Problem], broken: set[str]
) -> list[tuple[SourceDocument, _Checked]]:
    """Stage 2 on every document: the ones to go on with (salvaged, after faults)."""
    valid: list[tuple[SourceDocument, _Checked]] = []
    for doc in docs:
        found = schema_problems(doc)
        partial = isinstance(doc.data, dict) and "extends" in doc.data
        if not found:
            valid.append((doc, _Checked(in_full=not partial)))
            continue
        problems.extend(found)
        ref = ref_of(doc.data)
        if ref:
            broken.add(ref)
        rescue = salvage_document(doc, partial=partial)
        if rescue is not None:
            valid.append((rescue.doc, _Checked(not partial, rescue)))
    return valid


def _without_broken_descent(
    valid: list[tuple[SourceDocument, _Checked]], problems: list[Problem], broken: set[str]
) -> tuple[list[SourceDocument], dict[str, _Checked]]:
    """Leave out the descendants of broken SOPs, whatever order the files came in; say so
    once for each instead of repeating its parent's faults."""
    grown = True
    while grown:
        grown = False
        for doc, _ in valid:
            ref = ref_of(doc.data)
            if ref and ref not in broken and doc.data.get("extends") in broken:
                broken.add(ref)
                grown = True
    usable: list[SourceDocument] = []
    checked: dict[str, _Checked] = {}
    for doc, check in valid:
        parent = doc.data.get("extends")
        if parent not in broken:
            usable.append(doc)
            checked.setdefault(ref_of(doc.data) or "", check)
        elif check.salvage is None:
            problems.append(
                Problem(
                    *doc.where(("extends",)),
                    f"extends {parent}, which has errors",
                    sop=doc.data.get("key"),
                )
            )
    return usable, checked


def _compile(
    docs: Iterable[SourceDocument],
    templates: Collection[str] | None,
    elsewhere: Collection[str],
    parents: Iterable[SourceDocument] = (),
) -> tuple[list[CompiledSop], list[Problem]]:
    """:func:`compile_documents`; ``elsewhere``: refs known outside ``docs``, for hints."""
    problems: list[Problem] = []
    broken: set[str] = set()
    valid = _check_schema(docs, problems, broken)
    usable, checked = _without_broken_descent(valid, problems, broken)
    given = list(parents)
    compiled_before = {ref_of(p.data) for p in given} - {ref_of(d.data) for d, _ in valid}
    merged, found = resolve_extends([*usable, *given], elsewhere)
    problems.extend(found)

    def depth(doc: SourceDocument) -> int:
        return sum(1 for _ in _ancestors(doc, merged))

    compiled: list[CompiledSop] = []
    failed: set[str] = set()
    for doc in sorted(merged, key=depth):
        ref = ref_of(doc.data) or ""
        if ref in compiled_before:
            continue
        parent = doc.data.get("extends")
        if parent in failed:
            problems.append(
                Problem(
                    *doc.where(("extends",)),
                    f"extends {parent}, which has errors",
                    sop=doc.data.get("key"),
                )
            )
            failed.add(ref)
            continue
        oversized = size_problems(doc)
        if oversized:
            problems.extend(oversized)
            failed.add(ref)
            continue
        # A salvaged document never compiles: _compile_one gives its problems.
        result = _compile_one(doc, templates, checked.get(ref, _Checked(in_full=False)))
        if isinstance(result, CompiledSop):
            compiled.append(result)
        else:
            problems.extend(result)
            failed.add(ref)
    return compiled, _in_order(problems)


def _in_order(problems: Iterable[Problem]) -> list[Problem]:
    """Each problem once, by file, line and message."""
    return sorted(set(problems), key=lambda p: (p.file, p.line, p.message))


def _load_all(paths: Iterable[Path]) -> tuple[list[SourceDocument], list[Problem]]:
    docs: list[SourceDocument] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            docs.append(load_source(path))
        except DefinitionError as exc:
            problems.extend(exc.problems)
    return docs, problems


def compile_paths(
    paths: Iterable[Path], templates: Collection[str] | None = None
) -> tuple[list[CompiledSop], list[Problem]]:
    """Discover, parse and compile SOP files; return what compiled and every problem."""
    docs, problems = _load_all(discover(paths))
    compiled, found = compile_documents(docs, templates)
    return compiled, _in_order([*problems, *found])


def compile_with_library(
    named: Sequence[Path], library: Sequence[Path], templates: Collection[str] | None = None
) -> tuple[list[CompiledSop], list[Problem]]:
    """Compile the ``named`` files (or folders), whose parents may be in the ``library``.

    Of the library, only the SOPs the named ones extend are read, transitively (see
    :mod:`~sop_engine.language.parents`). The result is what compiling the named files
    together with the whole library would give for the named files: their compiled SOPs and
    their problems, nothing of the library's.
    """
    files = discover(named)
    mine = {str(p) for p in files}
    own = {p.resolve() for p in files}
    docs, problems = _load_all(files)
    shelf = [p for p in discover(library) if p.resolve() not in own]
    parents = find_parents(docs, shelf, SOP_SUFFIX)
    compiled, found = _compile([*docs, *parents.docs], templates, parents.elsewhere)
    return (
        [c for c in compiled if c.spec.file in mine],
        _in_order(p for p in (*problems, *found) if p.file in mine),
    )


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
