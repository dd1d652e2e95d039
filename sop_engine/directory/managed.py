"""Agencies kept through the API, over the YAML directory: coordinators add an agency, or
replace the entry of one the files list, without editing files or restarting.

A managed entry is written as a directory file writes it (the same keys, words and rules)
and is checked by the same stages as a file: :func:`check_entry` makes a one-entry file of
it and runs the loader's reader (the published schema, then
:func:`~sop_engine.directory.entries.build_agency`: dates, what synthetic and real entries
may say, contact addresses), then the checks across files against the rest of the
directory (unique ids, declared corridors that pass through the agency's country). Problems
name the entry's fields (``services.1``) instead of lines.

Entries are rows of ``managed_agencies``; :class:`ManagedDirectory` lays them over the YAML
directory, replacing the entry of the same id or adding one. Ids are never removed, since
referrals and audit trails name them: an agency that should receive no new referrals is
given ``accepts_new_cases: false``, which drops it from searches.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError

from sop_engine.clock import SystemClock
from sop_engine.directory.checks import cross_file_problems
from sop_engine.directory.loader import FileEntries, load_directory, read_document
from sop_engine.directory.model import Agency, ServiceDirectory
from sop_engine.directory.vocabulary import COUNTRIES
from sop_engine.errors import ConcurrentChange, DefinitionError, InvalidInput, NotFound, Problem
from sop_engine.language.schema import did_you_mean
from sop_engine.language.source import DataPath, Location, SourceDocument
from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction

__all__ = [
    "DirectorySnapshot",
    "EntryRefused",
    "FieldProblem",
    "ManagedDirectory",
    "ManagedEntry",
    "check_entry",
    "load_managed_directory",
    "types_of",
]

_M = tables.managed_agencies

ENTRY = "body"
"""The field name of a problem with the entry as a whole."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One fault in a managed entry: the field at fault (``services.1``, or ``body``)."""

    field: str
    message: str
    hint: str | None = None


class EntryRefused(InvalidInput):
    """A managed entry breaks the directory's rules; ``problems`` lists every fault."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        self.problems = tuple(problems)
        first = self.problems[0]
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{first.message}{more}", field=first.field)


@dataclass(frozen=True, slots=True)
class ManagedEntry:
    """A row of ``managed_agencies``: the entry as written, and who changed it when."""

    id: str
    entry: Mapping[str, Any]
    revision: int
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DirectorySnapshot:
    """The directory with its managed entries laid over it, and those entries by id."""

    directory: ServiceDirectory
    managed: Mapping[str, ManagedEntry] = field(default_factory=dict)


def _document(entry: Mapping[str, Any], country: str) -> SourceDocument:
    """A directory file holding just ``entry``, each value located at its field name."""
    path: DataPath = ("agencies", 0)
    locations: dict[DataPath, Location] = {
        (): (ENTRY, 1),
        ("country",): ("country", 1),
        ("agencies",): (ENTRY, 1),
        path: (ENTRY, 1),
    }
    for key, value in entry.items():
        locations[(*path, key)] = (key, 1)
        if isinstance(value, list):
            for index in range(len(value)):
                locations[(*path, key, index)] = (f"{key}.{index}", 1)
    return SourceDocument(ENTRY, {"country": country, "agencies": [dict(entry)]}, locations)


def check_entry(entry: Mapping[str, Any], directory: ServiceDirectory, today: date) -> Agency:
    """The agency ``entry`` describes, checked as a directory file's entry would be and
    against ``directory`` (which it joins, or in which it replaces the agency of its id).

    :raises EntryRefused: with every problem, each naming its field.
    """
    country = entry.get("country")
    if not isinstance(country, str) or country not in COUNTRIES:
        hint = did_you_mean(str(country), COUNTRIES) if isinstance(country, str) else None
        raise EntryRefused([FieldProblem("country", f"unknown country {country!r}", hint)])
    doc = _document(entry, country)
    part = read_document(doc, today)
    ident = entry.get("id")
    rest = FileEntries(
        "<directory>",
        corridors=list(directory.corridors.values()),
        agencies=[a for a in directory.agencies if a.id != ident],
        hotlines=list(directory.all_hotlines),
        border_points=list(directory.all_border_points),
    )
    # The checks across files report a repeated id at its second writing, which for a
    # hotline or border point is theirs; say it at the entry's id instead.
    ours = {file for file, _ in doc.locations.values()}
    problems = [
        *part.problems,
        *(p for p in cross_file_problems([rest, part]) if p.file in ours),
        *(
            Problem("id", 1, f"{ident!r} is the id of a {kind}; ids are unique in the directory")
            for kind, others in (("hotline", rest.hotlines), ("border point", rest.border_points))
            if any(o.id == ident for o in others)
        ),
    ]
    if problems or not part.agencies:
        found = [FieldProblem(p.file, p.message, p.hint) for p in problems]
        raise EntryRefused(found or [FieldProblem(ENTRY, "not a directory entry")])
    return part.agencies[0]


def _with(directory: ServiceDirectory, agency: Agency) -> ServiceDirectory:
    """``directory`` with ``agency`` in place of the one of its id, or added at the end."""
    agencies = [agency if a.id == agency.id else a for a in directory.agencies]
    if all(a.id != agency.id for a in directory.agencies):
        agencies.append(agency)
    return replace(directory, agencies=tuple(agencies))


def overlay(
    base: ServiceDirectory, entries: Iterable[ManagedEntry], today: date
) -> ServiceDirectory:
    """``base`` with ``entries`` laid over it, each checked against what came before it.

    :raises DefinitionError: an entry no longer fits (its corridor left the files, say);
        each problem names the managed agency and its field.
    """
    directory = base
    problems: list[Problem] = []
    for managed in entries:
        try:
            directory = _with(directory, check_entry(managed.entry, directory, today))
        except EntryRefused as exc:
            problems.extend(
                Problem(f"managed agency {managed.id}", 1, f"{p.field}: {p.message}", hint=p.hint)
                for p in exc.problems
            )
    if problems:
        raise DefinitionError(problems)
    return directory


def _entry(row: Any) -> ManagedEntry:
    return ManagedEntry(
        id=row.id,
        entry=dict(row.entry),
        revision=row.revision,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
    )


def types_of(
    agency_id: str, entry: Mapping[str, Any] | None, base: ServiceDirectory | None
) -> tuple[str, ...]:
    """An agency's types: its managed ``entry``'s, else its entry in the files of ``base``,
    else none (an agency the directory does not list)."""
    if entry is not None:
        return tuple(str(t) for t in entry.get("agency_types") or ())
    if base is None:
        return ()
    try:
        return base.agency(agency_id).agency_types
    except NotFound:
        return ()


class ManagedDirectory:
    """The YAML directory ``base`` with the managed entries of ``db`` over it, as they are
    now: each :meth:`snapshot` reads the rows again (and rebuilds only when they changed),
    so that every process sharing the database sees every change."""

    def __init__(self, db: Engine, base: ServiceDirectory) -> None:
        self.db = db
        self.base = base
        self._lock = threading.Lock()
        self._built: tuple[tuple[tuple[str, int], ...], DirectorySnapshot] | None = None

    def entries(self) -> list[ManagedEntry]:
        with read_transaction(self.db) as conn:
            return [_entry(row) for row in conn.execute(select(_M).order_by(_M.c.id))]

    def _stored_entry(self, agency_id: str) -> Mapping[str, Any] | None:
        """One agency's managed entry, or None: one query by primary key, no rebuild."""
        with read_transaction(self.db) as conn:
            entry = conn.execute(select(_M.c.entry).where(_M.c.id == agency_id)).scalar()
        return dict(entry) if entry is not None else None

    def agency_types(self, agency_id: str) -> tuple[str, ...]:
        """The types of one agency (see :func:`types_of`)."""
        return types_of(agency_id, self._stored_entry(agency_id), self.base)

    def accepts_new_cases(self, agency_id: str) -> bool | None:
        """Whether the agency takes new referrals (its managed entry's word, else its file
        entry's); None for an agency the directory does not list."""
        entry = self._stored_entry(agency_id)
        if entry is not None:
            return bool(entry.get("accepts_new_cases", True))
        try:
            return self.base.agency(agency_id).accepts_new_cases
        except NotFound:
            return None

    def snapshot(self, today: date) -> DirectorySnapshot:
        """The directory now.

        :raises DefinitionError: a managed entry no longer fits the YAML directory.
        """
        entries = self.entries()
        stamp = tuple((e.id, e.revision) for e in entries)
        with self._lock:
            if self._built is not None and self._built[0] == stamp:
                return self._built[1]
        built = DirectorySnapshot(overlay(self.base, entries, today), {e.id: e for e in entries})
        with self._lock:
            self._built = (stamp, built)
        return built

    def put(
        self,
        agency_id: str,
        entry: Mapping[str, Any],
        *,
        actor_id: str,
        now: datetime,
        expected_revision: int | None = None,
    ) -> tuple[Agency, ManagedEntry, bool]:
        """Create or replace the managed entry ``agency_id``; return the agency, the row, and
        whether the id is new to the directory.

        :raises EntryRefused: the entry breaks the directory's rules (nothing is stored).
        :raises ConcurrentChange: ``expected_revision`` (0: not managed yet) is not the
            entry's revision now.
        """
        given = entry.get("id", agency_id)
        if given != agency_id:
            raise EntryRefused([FieldProblem("id", "the id in the body differs from the path's")])
        entry = {**entry, "id": agency_id}
        now_date = now.date()
        directory = self.snapshot(now_date).directory
        agency = check_entry(entry, directory, now_date)
        known = agency_id in {a.id for a in directory.agencies}
        which = _M.c.id == agency_id
        try:
            with self.db.begin() as conn:
                row = conn.execute(select(_M).where(which).with_for_update()).first()
                revision = row.revision if row is not None else 0
                if expected_revision is not None and expected_revision != revision:
                    raise ConcurrentChange(
                        f"agency {agency_id} changed since it was read; read it again",
                        current_version=revision,
                    )
                values = {"entry": entry, "updated_by": actor_id, "updated_at": now}
                if row is None:
                    conn.execute(
                        _M.insert().values(
                            id=agency_id, revision=1, created_by=actor_id, created_at=now, **values
                        )
                    )
                else:
                    conn.execute(update(_M).where(which).values(revision=revision + 1, **values))
                stored = _entry(conn.execute(select(_M).where(which)).one())
        except IntegrityError:
            raise ConcurrentChange(
                f"agency {agency_id} was created by someone else meanwhile; read it again",
                current_version=1,
            ) from None
        return agency, stored, not known


def load_managed_directory(
    db: Engine, path: Path, *, today: date | None = None
) -> ServiceDirectory:
    """The YAML directory at ``path`` with the managed entries of ``db`` over it: what the
    worker's dispatch reads addresses from.

    :raises DefinitionError: the files, or a managed entry, are broken.
    """
    today = today or SystemClock().now().date()
    return ManagedDirectory(db, load_directory(path, today=today)).snapshot(today).directory
