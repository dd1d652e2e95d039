"""The auditors' routes, read-only: referrals (no facts), each referral's timeline with the
verification of its hash chain, the access log, and deadline compliance (which coordinators
may read too: it is aggregate and names agencies, never a case).

Reads of referrals and timelines are themselves written to the access log (``audit.*``
actions), before the answer leaves; a timeline asked for a case code that does not exist is
logged as refused. Reading the access log is not logged: each page would add a row to what
is being paged. A timeline read with ``verify=full`` also records the full verification it
made (docs/api.md, "What a timeline's verification says"). Every read runs in a read-only
transaction; those two rows are written after it, each in a short transaction of its own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import AfterValidator, AwareDatetime

from api.deps import Authorized, RuntimeDep, actor_of, authorize
from api.openapi import error_responses
from api.pagination import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    Page,
    decode_cursor,
    decode_time_key,
    page_of,
)
from api.schemas.audit import (
    AccessLogEntryPublic,
    AuditReferral,
    ChainStatus,
    ComplianceReportPublic,
    TimelineEntryPublic,
    TimelinePage,
)
from sop_engine.errors import InvalidInput, NotFound

router = APIRouter(
    prefix="/audit",
    tags=["audit"],
    dependencies=[Depends(authorize)],
    responses=error_responses(401, 403, 422),
)

LIST_REFERRALS = "audit.referrals.list"
READ_TIMELINE = "audit.timeline.read"
"""Access-log actions of the auditors' reads."""

CaseCode = Annotated[str, Path(min_length=1, max_length=32)]


def _in_utc(value: datetime | None) -> datetime | None:
    """The instant in UTC, as the database stores it; one that UTC cannot hold is refused."""
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once in UTC") from None


Since = Annotated[
    AwareDatetime | None,
    AfterValidator(_in_utc),
    Query(description="From this instant, inclusive."),
]
Until = Annotated[
    AwareDatetime | None,
    AfterValidator(_in_utc),
    Query(description="To this instant, exclusive."),
]
SopKey = Annotated[str | None, Query(max_length=100, description="An SOP key.")]

_BAD_CURSOR = "not a cursor this API gave out"
_MAX_ID = 2**63 - 1
"""The largest id or sequence number a database column holds."""


def _int_cursor(cursor: str | None) -> int | None:
    key = decode_cursor(cursor)
    if key is None:
        return None
    if not isinstance(key, int) or isinstance(key, bool) or not 0 <= key <= _MAX_ID:
        raise InvalidInput(_BAD_CURSOR, field="cursor")
    return key


@router.get("/referrals")
def list_referrals(
    *,
    runtime: RuntimeDep,
    user: Authorized,
    sop: SopKey = None,
    sop_version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    country: Annotated[
        str | None,
        Query(min_length=2, max_length=2, description="Origin or destination (ISO alpha-2)."),
    ] = None,
    state: Annotated[str | None, Query(max_length=200)] = None,
    status: Literal["open", "closed"] | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[AuditReferral]:
    """Referrals, oldest first: where each stands and which agencies take part; no facts."""
    found = runtime.list_referrals(
        sop=sop,
        sop_version=sop_version,
        country=country,
        state=state,
        status=status,
        after=decode_time_key(cursor),
        limit=limit + 1,
    )
    items, next_cursor = page_of(found, limit, lambda r: [r.created_at.isoformat(), r.case_code])
    runtime.log_access(actor_of(user), LIST_REFERRALS)
    return Page[AuditReferral](items=[AuditReferral.of(r) for r in items], next_cursor=next_cursor)


@router.get("/referrals/{case_code}/timeline", responses=error_responses(404))
def read_timeline(
    *,
    runtime: RuntimeDep,
    user: Authorized,
    case_code: CaseCode,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    verify: Annotated[
        Literal["page", "full"],
        Query(
            description="`full`: recompute the whole chain now and record the result; "
            "`page`: the page's stretch (all of a timeline of up to 500 entries)."
        ),
    ] = "page",
) -> TimelinePage:
    """The referral's timeline entries by ``seq``, and what was verified of its hash chain."""
    after = _int_cursor(cursor)
    actor = actor_of(user)
    try:
        page = runtime.read_timeline(case_code, after_seq=after, limit=limit + 1, verify=verify)
    except NotFound:
        runtime.log_access(actor, READ_TIMELINE, case_code=case_code, outcome="refused")
        raise
    items, next_cursor = page_of(page.entries, limit, lambda e: e.seq)
    runtime.log_access(actor, READ_TIMELINE, case_code=case_code)
    return TimelinePage(
        case_code=case_code,
        verification=ChainStatus.of(page.verification),
        items=[TimelineEntryPublic.of(e) for e in items],
        next_cursor=next_cursor,
    )


@router.get("/access-log")
def read_access_log(
    *,
    runtime: RuntimeDep,
    case_code: Annotated[str | None, Query(max_length=32)] = None,
    actor_id: Annotated[str | None, Query(max_length=100)] = None,
    agency_id: Annotated[str | None, Query(max_length=100)] = None,
    outcome: Literal["granted", "refused"] | None = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[AccessLogEntryPublic]:
    """Who read which referral's protected data, and who was refused, oldest first."""
    found = runtime.access_log(
        case_code=case_code,
        actor_id=actor_id,
        agency_id=agency_id,
        outcome=outcome,
        since=since,
        until=until,
        after_id=_int_cursor(cursor),
        limit=limit + 1,
    )
    items, next_cursor = page_of(found, limit, lambda r: r.id)
    return Page[AccessLogEntryPublic](
        items=[AccessLogEntryPublic.of(r) for r in items], next_cursor=next_cursor
    )


@router.get("/compliance")
def read_compliance(
    runtime: RuntimeDep,
    group_by: Annotated[
        Literal["sop", "agency", "country", "origin_country", "destination_country"],
        Query(description="See docs/api.md for each grouping's definition."),
    ] = "sop",
    since: Since = None,
    until: Until = None,
    sop: SopKey = None,
) -> ComplianceReportPublic:
    """Deadline compliance of the agencies' tasks, as of now (definitions in docs/api.md)."""
    report = runtime.compliance(group_by, since=since, until=until, sop=sop)
    return ComplianceReportPublic.of(report)
