"""Read a service directory folder: YAML with positions, the JSON Schema, then meaning.

Every ``*.yaml`` file in the folder is read with the engine's safe reader
(:func:`~sop_engine.language.source.load_source`: no tags, no duplicate keys, no huge
files) and checked against the published schema (:mod:`~sop_engine.directory.schema`).
Entries that pass are built into :mod:`~sop_engine.directory.model` objects and checked one
by one (:mod:`~sop_engine.directory.entries`: dates, what synthetic and real entries may
say, a country that matches the file), then together (:mod:`~sop_engine.directory.checks`).
Every problem in every file is reported at once, each at its file and line, with a "did
you mean" for a near-miss word.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from sop_engine.clock import SystemClock
from sop_engine.directory.checks import cross_file_problems
from sop_engine.directory.entries import (
    EntryReader,
    build_agency,
    build_border_point,
    build_corridor,
    build_hotline,
)
from sop_engine.directory.model import Agency, BorderPoint, Corridor, Hotline, ServiceDirectory
from sop_engine.directory.schema import SECTIONS, schema_problems
from sop_engine.errors import DefinitionError, Problem
from sop_engine.language.source import SourceDocument, load_source
from sop_engine.language.spec import frozen_map

__all__ = [
    "DIRECTORY_SUFFIXES",
    "FileEntries",
    "directory_files",
    "load_directory",
    "read_document",
]

DIRECTORY_SUFFIXES = (".yaml", ".yml")
"""What a directory file's name ends with."""


def directory_files(folder: Path) -> list[Path]:
    """The directory's files: every ``*.yaml`` (or ``*.yml``) in ``folder``, by name."""
    if not folder.is_dir():
        raise DefinitionError([Problem(str(folder), 1, "not a folder of directory files")])
    found = sorted(p for p in folder.iterdir() if p.suffix in DIRECTORY_SUFFIXES and p.is_file())
    if not found:
        raise DefinitionError([Problem(str(folder), 1, "no directory files (*.yaml) here")])
    return found


@dataclass
class FileEntries:
    """What one file contributed, with the problems found in it alone."""

    file: str
    country: str | None = None
    corridors: list[Corridor] = field(default_factory=list)
    agencies: list[Agency] = field(default_factory=list)
    hotlines: list[Hotline] = field(default_factory=list)
    border_points: list[BorderPoint] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def load_directory(path: Path, *, today: date | None = None) -> ServiceDirectory:
    """Read and check every directory file in the folder ``path``.

    ``today`` (by default the UTC date) is the latest ``last_verified`` date allowed.

    :raises DefinitionError: with every problem of every file, each at its file and line.
    """
    today = today or SystemClock().now().date()
    problems: list[Problem] = []
    parts: list[FileEntries] = []
    for file in directory_files(path):
        try:
            doc = load_source(file)
        except DefinitionError as exc:
            problems.extend(exc.problems)
            continue
        part = read_document(doc, today)
        problems.extend(part.problems)
        parts.append(part)
    problems.extend(cross_file_problems(parts))
    if problems:
        raise DefinitionError(problems)
    return ServiceDirectory(
        agencies=tuple(a for p in parts for a in p.agencies),
        corridors=frozen_map({c.code: c for p in parts for c in p.corridors}),
        all_hotlines=tuple(h for p in parts for h in p.hotlines),
        all_border_points=tuple(b for p in parts for b in p.border_points),
    )


def read_document(doc: SourceDocument, today: date) -> FileEntries:
    """One file's entries: schema-checked, built, and checked entry by entry. An entry with
    a schema problem is left out, so that the checks after it do not report it twice."""
    part = FileEntries(doc.file)
    data = doc.data
    if not isinstance(data, dict):
        part.problems.append(Problem(doc.file, 1, "a directory file is a mapping of lists"))
        return part
    part.problems, broken = schema_problems(doc)
    country = data.get("country")
    if ("country",) not in broken and isinstance(country, str):
        part.country = country
        _check_file_name(doc, part.country, part.problems)
    for section, kind in SECTIONS.items():
        items = data.get(section)
        if (section,) in broken or not isinstance(items, list):
            continue
        for index, item in enumerate(items):
            if (section, index) in broken:
                continue
            label = f"{kind.replace('_', ' ')} {item.get('id', item.get('code'))}"
            r = EntryReader(doc, (section, index), item, kind, label, today)
            _BUILD[section](r, part)
            part.problems.extend(r.problems)
    return part


def _add_corridor(r: EntryReader, part: FileEntries) -> None:
    if (built := build_corridor(r)) is not None:
        part.corridors.append(built)


def _add_agency(r: EntryReader, part: FileEntries) -> None:
    if (built := build_agency(r, part.country)) is not None:
        part.agencies.append(built)


def _add_hotline(r: EntryReader, part: FileEntries) -> None:
    if (built := build_hotline(r, part.country)) is not None:
        part.hotlines.append(built)


def _add_border_point(r: EntryReader, part: FileEntries) -> None:
    if (built := build_border_point(r, part.country)) is not None:
        part.border_points.append(built)


_BUILD: Mapping[str, Callable[[EntryReader, FileEntries], None]] = {
    "corridors": _add_corridor,
    "agencies": _add_agency,
    "hotlines": _add_hotline,
    "border_points": _add_border_point,
}


def _check_file_name(doc: SourceDocument, country: str, problems: list[Problem]) -> None:
    """A file named after a country (``th.yaml``) holds that country's entries."""
    name = Path(doc.file).name
    stem = name.split(".")[0]
    if len(stem) == 2 and stem.upper() != country:
        problems.append(
            Problem(
                doc.file,
                doc.line(("country",)),
                f"(top level): {name} declares country {country}; a file named after a "
                f"country holds that country's entries",
            )
        )
