"""Stage 2b: when the schema finds faults, keep what can still be checked.

A schema fault must not hide the file's other faults: a coordinator who misspelt one key and
named an unknown state elsewhere should learn of both at once. :func:`salvage` prunes the
faulty parts from a copy of the data until it validates:

* an unknown key: just that key (nothing reads it, so pruning it changes nothing);
* a wrong value: the field holding it; an object missing a required key: the object;
* an object with a badly formed name (``propertyNames``): that named object;
* a path ending in a list index is widened to the field holding the list, so that the
  indices and source locations of what is left stay true.

Pruning repeats (a required field pruned makes its object incomplete) for at most
:data:`MAX_ROUNDS` rounds. The top level is never pruned, nor ``key``, ``version`` or
``extends``, without which the document has no identity or no meaning: then there is nothing
to salvage. Required top-level keys may stay missing, since the builder has a default for
each.

The later stages then run on the pruned document, and :class:`Salvage` tells which of their
problems are only consequences of the pruning (:meth:`Salvage.keeps`), by these rules:

* a reference to an unknown name is dropped when that name was pruned, or the whole
  collection of its kind was pruned or is missing ("unknown state 'referred'" after the state
  ``referred`` was pruned);
* any other problem is dropped when it names (quoted, or unquoted for facts, which consent
  messages list bare) a named object that was pruned or lost a value (a state, transition,
  fact, role, agency, consent scope, data category, task or deadline), or when it sits on
  the line of an object that lost a value, or on the document's first line when a top-level
  field went missing ("deadline 'assign' has no escalation" after a malformed ladder was
  pruned). A transition entering a handoff that lost a value counts as having lost it too
  (it discloses under the handoff's consent), and a pruned jurisdiction taints the
  countries ``origin`` and ``destination`` (whether the SOP is a corridor is unknown);
* the graph checks are skipped altogether when a state or transition was pruned whole or
  lost a field the graph is made of (``initial``, ``final``, ``from``, ``to``, ``event``,
  ``guard``, ``handoff``); otherwise their problems stand as they are.

Text-only fields (``description``, ``title`` ...) are pruned without any of this: nothing
checks them. An SOP that ``extends`` another is salvaged as a partial document first, and
again if the merged document still has faults; :meth:`Salvage.then` joins the two.

Pruning, rather than repairing with a guessed value, leaves each pruned field to the
builder's default, which for most fields no check objects to; the rules above cover the
fields whose absence a check does notice. The rules err towards silence: a real fault that
shares a name with a pruned object is reported in the next round, once the schema faults are
fixed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from jsonschema.exceptions import ValidationError

from sop_engine.errors import Problem
from sop_engine.language.schema import validator
from sop_engine.language.source import DataPath, Location, PathIndex, SourceDocument
from sop_engine.language.spec import SopSpec

__all__ = ["MAX_ROUNDS", "Salvage", "salvage"]

MAX_ROUNDS = 10
"""Each round prunes one level of a cascade; SOP objects nest far less deep than this."""

KINDS: dict[str, tuple[str, ...]] = {
    "states": ("state",),
    "transitions": ("event", "transition"),
    "facts": ("fact", "dataset field", "timestamp"),
    "roles": ("role",),
    "agencies": ("agency",),
    "consent_scopes": ("consent scope",),
    "data_categories": ("data category",),
}
"""Top-level collections of named objects, and the kinds of reference that name them."""

NAME_MAPS = frozenset({*KINDS, "tasks", "deadlines"})
"""Mappings whose keys are names a coordinator chose (a state's tasks and deadlines too)."""

GRAPH_FIELDS = frozenset({"initial", "final", "from", "to", "event", "guard", "handoff"})
"""Fields of a state or transition the state graph is made of."""

TEXT_FIELDS = frozenset({"$schema", "description", "title", "note", "url", "purpose", "service"})
"""Fields no check reads: pruning one has no consequence."""

IDENTITY = frozenset({"key", "version", "extends"})

_UNKNOWN = re.compile(r"\bunknown ([a-z][a-z ]*?) '([^']*)'")
_QUOTED = re.compile(r"'([^']*)'")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Salvage:
    """A pruned copy of a document and what its pruning may have caused."""

    doc: SourceDocument
    """The pruned document: schema-valid, but for required top-level keys left missing."""
    pruned: tuple[DataPath, ...] = ()
    """What was pruned, unknown keys included."""
    names: frozenset[str] = frozenset()
    """Named objects pruned whole or in part."""
    facts: frozenset[str] = frozenset()
    """Of those, the facts (consent messages list them unquoted)."""
    kinds: frozenset[str] = frozenset()
    """Kinds of reference whose whole collection is gone."""
    lines: frozenset[Location] = frozenset()
    """Lines of objects that lost a value."""
    graph_intact: bool = True
    """Whether every state and transition kept what the graph is made of."""

    def then(self, later: Salvage) -> Salvage:
        """Both prunings at once: ``self`` on the document alone, ``later`` once merged."""
        return Salvage(
            later.doc,
            (*self.pruned, *later.pruned),
            self.names | later.names,
            self.facts | later.facts,
            self.kinds | later.kinds,
            self.lines | later.lines,
            self.graph_intact and later.graph_intact,
        )

    def widened(self, spec: SopSpec) -> Salvage:
        """Also taint the transitions entering a handoff that lost a value: they disclose
        its dataset, under its consent, with its notifications."""
        entering = {
            t.id
            for t in spec.transitions
            if t.target in spec.states
            and spec.states[t.target].stage == "sent"
            and spec.states[t.target].handoff in self.names
        }
        return replace(self, names=self.names | entering) if entering else self

    def keeps(self, problem: Problem) -> bool:
        """Whether a later stage's (non-graph) problem stands on its own, by the module's rules."""
        message = problem.message
        unknown = _UNKNOWN.search(message)
        if unknown is not None:
            kind, name = unknown.groups()
            return kind not in self.kinds and not self._named(name)
        if (problem.file, problem.line) in self.lines:
            return False
        if any(self._named(name) for name in _QUOTED.findall(message)):
            return False
        # Fact names are words (``^[a-z][a-z0-9_]*$``): one look-up per word of the message;
        # only a malformed name (pruned for its form) needs a search of its own.
        words = _WORD.findall(message)
        if not self.facts.isdisjoint(words):
            return False
        return not any(
            re.search(rf"\b{re.escape(f)}\b", message) for f in self.facts if not _WORD.fullmatch(f)
        )

    def _named(self, name: str) -> bool:
        # A handoff's generated stages and events are NAME.sent, NAME.accept...
        return name in self.names or name.split(".", 1)[0] in self.names


@dataclass
class _Pruning:
    """The state of one salvage, round after round."""

    original: dict[str, object]
    data: dict[str, object]
    locations: dict[DataPath, Location]
    root: Location
    paths: PathIndex
    pruned: list[DataPath] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    facts: set[str] = field(default_factory=set)
    kinds: set[str] = field(default_factory=set)
    lines: set[Location] = field(default_factory=set)
    graph_intact: bool = True

    def cut(self, path: DataPath, quiet: bool) -> bool:
        """Prune ``path`` and note what that may cause; False if it is no longer there."""
        node: object = self.data
        for part in path[:-1]:
            if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                node = node[part]
            elif not (isinstance(node, dict) and isinstance(part, str) and part in node):
                return False
            else:
                node = node[part]
        if not isinstance(node, dict) or path[-1] not in node:
            return False
        if not quiet and path[-1] not in TEXT_FIELDS:
            self._note(path)
        del node[path[-1]]
        self.pruned.append(path)
        for stale in self.paths.under(path):
            self.locations.pop(stale, None)
        return True

    def _note(self, path: DataPath) -> None:
        names = _names_along(path)
        whole = bool(names) and names[-1][0] == len(path) - 1
        if names:
            index, name = names[-1]
            self.names.add(name)
            if path[0] == "facts" and index == 1:
                self.facts.add(name)
            if whole and path[0] == "transitions" and index == 1:
                self.names.add(str(_at(self.original, (*path, "event")) or name))
        elif len(path) == 1:
            self.lines.add(self.root)
            self._gone(str(path[0]))
        if path[0] == "jurisdiction":
            # Whether the SOP is a corridor, whose agencies may sit in 'origin' or
            # 'destination', is no longer known.
            self.names.update(("origin", "destination"))
        if not whole and len(path) > 1:
            self.lines.add(_where(self.locations, path[:-1], self.root))
        if path[0] in ("states", "transitions") and (
            len(path) <= 2 or (len(path) == 3 and path[2] in GRAPH_FIELDS)
        ):
            self.graph_intact = False

    def _gone(self, key: str) -> None:
        """A top-level field is missing or was pruned whole."""
        if key in KINDS:
            self.kinds.update(KINDS[key])
            items = self.original.get(key)
            if isinstance(items, dict):
                self.names.update(str(k) for k in items)
                if key == "facts":
                    self.facts.update(str(k) for k in items)
        if key in ("states", "transitions"):
            self.graph_intact = False
        self.lines.add(self.root)


def _names_along(path: DataPath) -> list[tuple[int, str]]:
    """The names a coordinator chose along ``path``, with their positions."""
    found: list[tuple[int, str]] = []
    expect_name = False
    for i, part in enumerate(path):
        if expect_name and isinstance(part, str):
            found.append((i, part))
            expect_name = False
            continue
        expect_name = isinstance(part, str) and part in NAME_MAPS
    return found


def _at(data: object, path: DataPath) -> object:
    for part in path:
        if isinstance(data, dict) and isinstance(part, str):
            data = data.get(part)
        else:
            return None
    return data


def _where(locations: dict[DataPath, Location], path: DataPath, root: Location) -> Location:
    for end in range(len(path), -1, -1):
        found = locations.get(path[:end])
        if found is not None:
            return found
    return root


def _cuts(errors: Iterable[ValidationError]) -> tuple[list[tuple[DataPath, bool]], set[str]]:
    """What to prune for these errors (path, and whether it is a harmless unknown key), and
    the required top-level keys that are missing. A path of ``()`` means: give up."""
    cuts: list[tuple[DataPath, bool]] = []
    missing: set[str] = set()
    for error in errors:
        path: DataPath = tuple(error.absolute_path)
        instance = error.instance
        if (
            error.validator == "additionalProperties"
            and isinstance(instance, dict)
            and isinstance(error.schema, dict)
        ):
            known = error.schema.get("properties", {})
            cuts.extend(((*path, k), True) for k in instance if k not in known)
            continue
        if "propertyNames" in error.absolute_schema_path and isinstance(instance, str):
            path = (*path, instance)
        elif error.validator == "required" and not path:
            if isinstance(instance, dict) and isinstance(error.validator_value, list):
                missing.update(str(k) for k in error.validator_value if k not in instance)
            continue
        while path and isinstance(path[-1], int):
            path = path[:-1]
        cuts.append((path, False))
    return cuts, missing


def salvage(doc: SourceDocument, *, partial: bool) -> Salvage | None:
    """Prune ``doc``'s schema faults (checked as a ``partial`` document or in full) until the
    rest validates; None when nothing can be saved. Never raises for any data."""
    if not isinstance(doc.data, dict):
        return None
    if partial and not all(k in doc.data for k in ("key", "version")):
        return None
    state = _Pruning(
        original=doc.data,
        data=copy.deepcopy(doc.data),
        locations=dict(doc.locations),
        root=doc.where(()),
        paths=PathIndex(doc.locations),
    )
    check = validator(partial)
    for _ in range(MAX_ROUNDS):
        cuts, missing = _cuts(check.iter_errors(state.data))
        if not cuts:
            break
        done: set[DataPath] = set()
        for path, quiet in sorted(cuts, key=lambda c: (len(c[0]), not c[1])):
            if not path or path[0] in IDENTITY:
                return None
            if any(path[:end] in done for end in range(1, len(path) + 1)):
                continue
            if state.cut(path, quiet):
                done.add(path)
        if not done:
            return None
    else:
        return None
    if missing & IDENTITY:
        return None
    for key in sorted(missing):
        state._gone(key)
    return Salvage(
        SourceDocument(doc.file, state.data, state.locations),
        tuple(state.pruned),
        frozenset(state.names),
        frozenset(state.facts),
        frozenset(state.kinds),
        frozenset(state.lines),
        state.graph_intact,
    )
