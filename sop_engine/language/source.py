"""Stage 1: read SOP YAML into plain data, remembering where every value came from.

PyYAML composes the node graph; we construct values ourselves so that:

* plain scalars follow YAML 1.2's core schema (``on``/``off``/``yes``/``no`` stay strings,
  dates stay strings, only ``true``/``false`` are booleans);
* duplicate keys, non-string keys and explicit tags (``!!python/object`` and every other
  tag beyond the standard str/seq/map) are refused;
* a file over :data:`MAX_FILE_BYTES` is refused before it is parsed; nesting stops at
  :data:`MAX_DEPTH` while the YAML is composed (before PyYAML's composer, which recurses,
  could reach Python's recursion limit), and alias expansion (the "billion laughs"), values
  and the entries of one mapping or list stop at the budgets of
  :mod:`~sop_engine.language.limits`.

The result, a :class:`SourceDocument`, holds the data and a map from each value's path to
the line it was written on; later stages use :meth:`SourceDocument.line` to say where a
fault is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
import yaml.reader
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from sop_engine.errors import DefinitionError, Problem
from sop_engine.language.limits import (
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_ENTRIES,
    MAX_FILE_BYTES,
    MAX_VALUES,
)

__all__ = [
    "DataPath",
    "Location",
    "PathIndex",
    "SourceDocument",
    "load_source",
    "parse_source",
]

DataPath = tuple[str | int, ...]
"""A path into the data: mapping keys and sequence indices."""

_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"

_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL_TRUE = re.compile(r"^(?:true|True|TRUE)$")
_BOOL_FALSE = re.compile(r"^(?:false|False|FALSE)$")
_INT = re.compile(r"^[-+]?[0-9]+$")
_INT_OCT = re.compile(r"^0o[0-7]+$")
_INT_HEX = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")


class _Resolver(BaseResolver):
    """No implicit resolvers: every plain scalar arrives tagged ``str`` and we decide."""

    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012 (PyYAML's own class API)


class _Loader(Reader, Scanner, Parser, Composer, _Resolver):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Resolver.__init__(self)


if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _FastLoader(Composer, CParser, _Resolver):
        """libyaml scans and parses (most of the time of reading a file); PyYAML's composer
        builds the nodes from its events, so that aliases are counted as they arrive."""

        def __init__(self, stream: str) -> None:
            # libyaml reports offsets in the UTF-8 bytes; PyYAML's reader checks the
            # characters first and reports them by character.
            found = Reader.NON_PRINTABLE.search(stream)
            if found:
                raise yaml.reader.ReaderError(
                    "<unicode string>",
                    found.start(),
                    ord(found.group()),
                    "unicode",
                    "special characters are not allowed",
                )
            CParser.__init__(self, stream)
            Composer.__init__(self)
            _Resolver.__init__(self)

    # The same interface as _Loader's for parse_source (compose_node, check_event,
    # peek_event, get_single_node, dispose), from other bases.
    _LOADER = cast(Callable[[str], _Loader], _FastLoader)
else:  # pragma: no cover - PyYAML without libyaml
    _LOADER = _Loader


class _TooLarge(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


Location = tuple[str, int]
"""A file and a 1-based line."""


class PathIndex:
    """The paths of a location map as a tree, so that the paths under a prefix are found in
    time proportional to their number, not to the size of the whole document."""

    def __init__(self, paths: Iterable[DataPath]) -> None:
        self._children: dict[DataPath, set[DataPath]] = {}
        for path in paths:
            for end in range(len(path)):
                self._children.setdefault(path[:end], set()).add(path[: end + 1])

    def under(self, prefix: DataPath) -> Iterator[DataPath]:
        """``prefix`` and every path below it that the index holds (and maybe some that
        were removed from the map since: callers look each one up)."""
        stack = [prefix]
        while stack:
            path = stack.pop()
            yield path
            stack.extend(self._children.get(path, ()))


@dataclass
class SourceDocument:
    """YAML data with the location of every value (the line of its key, in a mapping).

    After ``extends`` is resolved one document holds values from several files, so each
    location names its own file; ``file`` is the file the document was read from.
    """

    file: str
    data: Any
    locations: dict[DataPath, Location] = field(default_factory=dict)
    _children: dict[DataPath, list[tuple[str, Location]]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def where(self, path: DataPath) -> Location:
        """The location of ``path``, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            found = self.locations.get(tuple(path[:end]))
            if found is not None:
                return found
        return (self.file, 1)

    def line(self, path: DataPath) -> int:
        return self.where(path)[1]

    def paths_under(self, prefix: DataPath) -> Iterator[DataPath]:
        n = len(prefix)
        return (p for p in self.locations if p[:n] == prefix)

    def child_locations(self, path: DataPath) -> list[tuple[str, Location]]:
        """The locations of the direct children of ``path``, by key."""
        if self._children is None:
            index: dict[DataPath, list[tuple[str, Location]]] = {}
            for p, loc in self.locations.items():
                if p:
                    index.setdefault(p[:-1], []).append((str(p[-1]), loc))
            self._children = index
        return self._children.get(path, [])


def _plain_scalar(value: str) -> Any:
    if _NULL.match(value):
        return None
    if _BOOL_TRUE.match(value):
        return True
    if _BOOL_FALSE.match(value):
        return False
    if _INT.match(value):
        return int(value)
    if _INT_OCT.match(value):
        return int(value[2:], 8)
    if _INT_HEX.match(value):
        return int(value[2:], 16)
    if _FLOAT.match(value):
        return float(value)
    if value in {".inf", ".Inf", ".INF", "+.inf"}:
        return float("inf")
    if value in {"-.inf", "-.Inf", "-.INF"}:
        return float("-inf")
    return value


class _Constructor:
    def __init__(self, file: str) -> None:
        self.file = file
        self.locations: dict[DataPath, Location] = {}
        self.problems: list[Problem] = []
        self.nodes = 0
        self.aliases: set[int] = set()

    def _problem(self, node: Node, message: str) -> None:
        self.problems.append(Problem(self.file, node.start_mark.line + 1, message))

    def build(self, node: Node, path: DataPath, depth: int, line: int | None = None) -> Any:
        self.nodes += 1
        if self.nodes > MAX_VALUES:
            raise _TooLarge(
                f"document expands to more than {MAX_VALUES} values (alias bomb?)",
                node.start_mark.line + 1,
            )
        if depth > MAX_DEPTH:  # an alias of its own ancestor (&a [*a]) is composed shallow
            raise _TooLarge(f"nesting deeper than {MAX_DEPTH} levels", node.start_mark.line + 1)
        if isinstance(node, SequenceNode | MappingNode) and len(node.value) > MAX_ENTRIES:
            what = "keys in one mapping" if isinstance(node, MappingNode) else "items in one list"
            where = line if line is not None else node.start_mark.line + 1
            raise _TooLarge(f"more than {MAX_ENTRIES} {what} ({len(node.value)})", where)
        self.locations[path] = (self.file, line if line is not None else node.start_mark.line + 1)
        if node.tag not in (_STR, _SEQ, _MAP):
            self._problem(node, f"YAML tag {node.tag!r} is not allowed in an SOP")
            return None
        if isinstance(node, ScalarNode):
            if node.tag != _STR:
                self._problem(node, "a scalar cannot carry a sequence or mapping tag")
                return None
            return node.value if node.style else _plain_scalar(node.value)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        assert isinstance(node, MappingNode)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or (
                isinstance(key_node, ScalarNode) and key_node.value == "<<" and not key_node.style
            ):
                self._problem(key_node, "merge keys ('<<') are not supported; use 'extends'")
                continue
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR:
                self._problem(key_node, "mapping keys must be plain strings")
                continue
            key = key_node.value
            if key in result:
                self._problem(key_node, f"duplicate key {key!r}")
                continue
            result[key] = self.build(
                value_node, (*path, key), depth + 1, line=key_node.start_mark.line + 1
            )
        return result


class _Budget:
    """Counts while PyYAML composes, and stops it at the first bound passed.

    Aliases: PyYAML shares aliased nodes, so composing is cheap, but an honest SOP never
    needs hundreds of them. Depth: the composer recurses a few frames per level, and would
    reach Python's recursion limit (a RecursionError) about 330 levels down. Nodes: a key and
    a value are two, so more than twice the values allowed cannot make a document within
    them, and composing a megabyte of tiny nodes would take seconds.
    """

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.original = loader.compose_node
        self.aliases = 0
        self.depth = -1
        self.nodes = 0

    def watch(self) -> None:
        self.loader.compose_node = self.compose  # type: ignore[method-assign]

    def _line(self) -> int:
        return int(self.loader.peek_event().start_mark.line) + 1  # type: ignore[no-untyped-call]

    def compose(self, parent: Node | None, index: Any) -> Node | None:
        self.nodes += 1
        if self.nodes > 2 * MAX_VALUES + 1:
            raise _TooLarge(f"document holds more than {MAX_VALUES} values", self._line())
        if self.loader.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _TooLarge(f"more than {MAX_ALIASES} aliases", self._line())
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _TooLarge(f"nesting deeper than {MAX_DEPTH} levels", self._line())
            return self.original(parent, index)
        finally:
            self.depth -= 1


def parse_source(text: str, file: str = "<string>") -> SourceDocument:
    """Parse YAML text into a :class:`SourceDocument`, or raise :class:`DefinitionError`."""
    if len(text.encode("utf-8", errors="replace")) > MAX_FILE_BYTES:
        raise DefinitionError(
            [Problem(file, 1, f"file is larger than {MAX_FILE_BYTES // 1024} KiB; refused")]
        )
    try:
        loader = _LOADER(text)
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise DefinitionError(
            [Problem(file, line, f"character {exc.character:#06x} is not allowed in YAML")]
        ) from None
    try:
        _Budget(loader).watch()
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        raise DefinitionError([Problem(file, line, f"YAML syntax error: {what}")]) from None
    except yaml.YAMLError as exc:
        raise DefinitionError([Problem(file, 1, f"YAML error: {exc}")]) from None
    except _TooLarge as exc:
        raise DefinitionError([Problem(file, exc.line, f"refused: {exc}")]) from None
    finally:
        loader.dispose()
    if root is None:
        raise DefinitionError([Problem(file, 1, "the file is empty")])
    constructor = _Constructor(file)
    try:
        data = constructor.build(root, (), 0)
    except _TooLarge as exc:
        raise DefinitionError([Problem(file, exc.line, f"refused: {exc}")]) from None
    if constructor.problems:
        raise DefinitionError(constructor.problems)
    return SourceDocument(file=file, data=data, locations=constructor.locations)


def load_source(path: Path) -> SourceDocument:
    """Read and parse one SOP file; size is checked before the file is read whole."""
    name = str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DefinitionError([Problem(name, 1, f"cannot read file: {exc.strerror}")]) from None
    if size > MAX_FILE_BYTES:
        raise DefinitionError(
            [Problem(name, 1, f"file is larger than {MAX_FILE_BYTES // 1024} KiB; refused")]
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionError([Problem(name, 1, f"not UTF-8 text: {exc.reason}")]) from None
    except OSError as exc:
        raise DefinitionError([Problem(name, 1, f"cannot read file: {exc.strerror}")]) from None
    return parse_source(text, name)
