"""Stage 3: resolve ``extends``, so that national and corridor SOPs share one baseline.

An SOP that says ``extends: KEY@VERSION`` starts from that SOP's data and overrides it:
mappings merge key by key (so a child names only the deadline, role, agency or text it
changes), while scalars and lists given by the child replace the parent's. Nothing is
deleted by an override. ``key``, ``version`` and ``extends`` always come from the child.

Every merged value keeps the file and line it came from, so a fault in an inherited part
is reported in the parent's file and a fault in an override in the child's.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from typing import Any

from sop_engine.errors import Problem
from sop_engine.language.limits import MAX_EXTENDS
from sop_engine.language.schema import did_you_mean
from sop_engine.language.source import DataPath, Location, PathIndex, SourceDocument

__all__ = ["OWN_KEYS", "ref_of", "resolve_extends"]

OWN_KEYS = frozenset({"key", "version", "extends", "$schema"})
"""Top-level keys that are never inherited."""

WHOLE = frozenset({("jurisdiction",), ("sources",)})
"""Mappings a child replaces whole: a corridor's origin and destination must not be mixed
with its parent's list of countries."""


def ref_of(data: Any) -> str | None:
    """``KEY@VERSION`` of a document's data, or None when it has no usable identity."""
    if not isinstance(data, dict):
        return None
    key, version = data.get("key"), data.get("version")
    if isinstance(key, str) and isinstance(version, int) and not isinstance(version, bool):
        return f"{key}@{version}"
    return None


class _Merge:
    """One child merged over its parent: the merged locations, and the two location maps as
    trees (:class:`PathIndex`), so that moving a subtree's locations costs its own size."""

    def __init__(
        self, locations: dict[DataPath, Location], child_locations: Mapping[DataPath, Location]
    ) -> None:
        self.locations = locations
        self.child_locations = child_locations
        self._parent_paths = PathIndex(locations)
        self._child_paths = PathIndex(child_locations)

    def merge(self, parent: Any, child: Any, path: DataPath) -> Any:
        if isinstance(parent, dict) and isinstance(child, dict) and path not in WHOLE:
            merged = dict(parent)
            for key, value in child.items():
                if not path and key in OWN_KEYS:
                    continue
                sub = (*path, key)
                if key in parent:
                    merged[key] = self.merge(parent[key], value, sub)
                else:
                    merged[key] = value
                    self.take(sub)
            if path in self.child_locations:
                self.locations.setdefault(path, self.child_locations[path])
            return merged
        # Replacement: forget where the parent's value came from, take the child's positions.
        # (Nothing of the child's is under ``path`` yet: each path is merged once.)
        for stale in self._parent_paths.under(path):
            self.locations.pop(stale, None)
        self.take(path)
        return child

    def take(self, prefix: DataPath) -> None:
        """The child's locations of ``prefix`` and everything under it."""
        for p in self._child_paths.under(prefix):
            found = self.child_locations.get(p)
            if found is not None:
                self.locations[p] = found


def _chain(ref: str, by_ref: Mapping[str, SourceDocument]) -> list[str]:
    """The SOPs above ``ref``, nearest first, as far as they are known: at most one more
    than :data:`MAX_EXTENDS`, and each once (a cycle is reported on its own)."""
    chain: list[str] = []
    parent = by_ref[ref].data.get("extends")
    while isinstance(parent, str) and parent in by_ref and parent not in (ref, *chain):
        chain.append(parent)
        if len(chain) > MAX_EXTENDS:
            break
        parent = by_ref[parent].data.get("extends")
    return chain


def resolve_extends(
    docs: list[SourceDocument], elsewhere: Collection[str] = ()
) -> tuple[list[SourceDocument], list[Problem]]:
    """Return every document with its ancestors merged in, and the problems found.

    A document whose parent is missing, or which sits in a cycle of ``extends``, is reported
    and left out of the result. ``elsewhere``: refs of SOPs that exist but were not read,
    offered in the "did you mean" of a missing parent.
    """
    by_ref: dict[str, SourceDocument] = {}
    problems: list[Problem] = []
    for doc in docs:
        ref = ref_of(doc.data)
        if ref is None:
            continue
        if ref in by_ref:
            problems.append(
                Problem(
                    *doc.where(("version",)),
                    f"{ref} is defined twice (also in {by_ref[ref].file})",
                    sop=ref.split("@")[0],
                )
            )
            continue
        by_ref[ref] = doc

    resolved: dict[str, SourceDocument | None] = {}

    def resolve(ref: str, trail: tuple[str, ...]) -> SourceDocument | None:
        if ref in resolved:
            return resolved[ref]
        doc = by_ref[ref]
        parent_ref = doc.data.get("extends")
        if not isinstance(parent_ref, str):
            resolved[ref] = doc
            return doc
        key = ref.split("@", maxsplit=1)[0]
        if parent_ref in trail or parent_ref == ref:
            cycle = " -> ".join((*trail, ref, parent_ref))
            problems.append(Problem(*doc.where(("extends",)), f"extends cycle: {cycle}", sop=key))
            resolved[ref] = None
            return None
        chain = _chain(ref, by_ref)
        if len(chain) > MAX_EXTENDS:
            problems.append(
                Problem(
                    *doc.where(("extends",)),
                    f"extends a chain of more than {MAX_EXTENDS} SOPs "
                    f"({' -> '.join(chain[:MAX_EXTENDS])} -> ...)",
                    sop=key,
                )
            )
            resolved[ref] = None
            return None
        if parent_ref not in by_ref:
            problems.append(
                Problem(
                    *doc.where(("extends",)),
                    f"extends unknown SOP {parent_ref!r}",
                    sop=key,
                    hint=did_you_mean(parent_ref, {*by_ref, *elsewhere}),
                )
            )
            resolved[ref] = None
            return None
        parent = resolve(parent_ref, (*trail, ref))
        if parent is None:
            resolved[ref] = None
            return None
        locations = {p: loc for p, loc in parent.locations.items() if not p or p[0] not in OWN_KEYS}
        merging = _Merge(locations, doc.locations)
        data = merging.merge(copy.deepcopy(parent.data), doc.data, ())
        for own in OWN_KEYS:
            if own in doc.data:
                data[own] = doc.data[own]
                merging.take((own,))
            else:
                data.pop(own, None)
        locations[()] = doc.where(())
        merged = SourceDocument(file=doc.file, data=data, locations=locations)
        resolved[ref] = merged
        return merged

    out: list[SourceDocument] = []
    for ref in by_ref:
        merged = resolve(ref, ())
        if merged is not None:
            out.append(merged)
    return out, problems
