"""The service directory: everyone reads it (agencies pick recipients from it, auditors check
it); coordinators add agencies or replace their entries.

The directory is the YAML files the engine started with, with the entries kept through this
API over them (:mod:`sop_engine.directory.managed`). An entry is never deleted, since
referrals and audit trails name agencies by id: to stop new referrals to an agency, ``PUT``
its entry with ``accepts_new_cases: false``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response, status
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError

from api.deps import Authorized, RuntimeDep, authorize, managed_directory
from api.openapi import error_responses
from api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, page_of
from api.schemas.directory import AgencyEntry, AgencyRecord
from sop_engine.directory.managed import DirectorySnapshot, EntryRefused, ManagedDirectory
from sop_engine.errors import InvalidInput

__all__ = ["managed_directory", "router"]

router = APIRouter(
    prefix="/directory",
    tags=["directory"],
    dependencies=[Depends(authorize)],
    responses=error_responses(401, 403, 404, 422),
)


Directory = Annotated[ManagedDirectory, Depends(managed_directory)]


def _snapshot(directory: Directory, runtime: RuntimeDep) -> DirectorySnapshot:
    return directory.snapshot(runtime.clock.now().date())


Snapshot = Annotated[DirectorySnapshot, Depends(_snapshot)]
AgencyId = Annotated[str, PathParam(min_length=1, max_length=100)]


def _expected_revision(if_match: str | None) -> int | None:
    """``If-Match: "3"`` (or ``3``, or ``W/"3"``) -> 3; ``"0"`` for an entry not managed yet."""
    if if_match is None:
        return None
    value = if_match.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise InvalidInput('If-Match must be the entry\'s revision, such as "3"', field="If-Match")
    return int(value)


@router.get("/agencies")
def list_agencies(
    *,
    snapshot: Snapshot,
    country: str | None = None,
    service: str | None = None,
    corridor: str | None = None,
    accepting: bool = False,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[AgencyRecord]:
    """Agencies by id that match every filter given; ``accepting=true`` leaves out those
    taking no new cases. An unknown country, service or corridor is a 422 with a "did you
    mean", never an empty list."""
    after = decode_cursor(cursor)
    if after is not None and not isinstance(after, str):
        raise InvalidInput("not a cursor this API gave out", field="cursor")
    found = snapshot.directory.find(
        country=country, service=service, corridor=corridor, accepting_only=accepting
    )
    ordered = sorted((a for a in found if after is None or a.id > after), key=lambda a: a.id)
    items, next_cursor = page_of(ordered[: limit + 1], limit, lambda a: a.id)
    return Page[AgencyRecord](
        items=[AgencyRecord.of(a, snapshot.managed.get(a.id)) for a in items],
        next_cursor=next_cursor,
    )


@router.get("/agencies/{agency_id}")
def read_agency(snapshot: Snapshot, agency_id: AgencyId, response: Response) -> AgencyRecord:
    """One agency; ``ETag`` is its managed revision (``"0"`` for a file's entry)."""
    record = AgencyRecord.of(snapshot.directory.agency(agency_id), snapshot.managed.get(agency_id))
    response.headers["ETag"] = f'"{record.revision}"'
    return record


@router.put(
    "/agencies/{agency_id}",
    responses={
        **error_responses(409, 413),
        201: {"model": AgencyRecord, "description": "The id was new to the directory"},
    },
)
def put_agency(
    *,
    directory: Directory,
    runtime: RuntimeDep,
    user: Authorized,
    agency_id: AgencyId,
    body: AgencyEntry,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> AgencyRecord:
    """Create the managed entry ``agency_id``, or replace it (201 when the id is new to the
    directory, 200 otherwise). It is checked as a directory file's entry is: every problem is
    answered at once, each naming its field. ``If-Match`` refuses the change (409) if the
    entry's revision is no longer the one read."""
    try:
        agency, stored, created = directory.put(
            agency_id,
            body.entry(),
            actor_id=user.id,
            now=runtime.clock.now(),
            expected_revision=_expected_revision(if_match),
        )
    except EntryRefused as exc:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", *p.field.split(".")),
                    "msg": p.message + (f" ({p.hint})" if p.hint else ""),
                    "type": "value_error",
                }
                for p in exc.problems
            ]
        ) from None
    if created:
        response.status_code = status.HTTP_201_CREATED
        response.headers["Location"] = f"/directory/agencies/{agency_id}"
    response.headers["ETag"] = f'"{stored.revision}"'
    return AgencyRecord.of(agency, stored)
