"""Referrals, for caseworkers, supervisors and agencies' focal points: create, read, fire.

A user sees a referral only when her agency manages it or fills one of its agency slots;
for anyone else it does not exist (404, the same answer as for a wrong case code).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Body, Header, Path, Request, Response, status

from api.deps import Authorized, RuntimeDep, actor_of, managed_directory
from api.openapi import error_responses
from api.schemas.referrals import (
    ClockWaiverRequest,
    FireRequest,
    FireResultPublic,
    IncidentTimeRequest,
    ReferralCreate,
    ReferralPublic,
    ReopenRequest,
)
from api.users import Principal, find_by_id
from sop_engine.errors import InvalidInput, NotFound
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.referrals import ReferralView

router = APIRouter(
    prefix="/referrals",
    tags=["referrals"],
    responses=error_responses(401, 403, 404, 409, 413, 422),
)


def _visible(runtime: Runtime, case_code: str, user: Principal) -> ReferralView:
    """The referral, if the user's agency takes part in it; NotFound otherwise."""
    view = runtime.read_referral(case_code, actor=actor_of(user))
    agency = user.agency_id
    if agency is None or (agency != view.owner_agency_id and agency not in view.agencies.values()):
        raise NotFound(f"no referral {case_code}")
    return view


def _expected_version(if_match: str | None) -> int | None:
    """``If-Match: "3"`` (or ``3``, or ``W/"3"``) -> 3."""
    if if_match is None:
        return None
    value = if_match.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        message = 'If-Match must be the referral\'s version, such as "3"'
        raise InvalidInput(message, field="If-Match")
    return int(value)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_referral(
    runtime: RuntimeDep,
    user: Authorized,
    body: ReferralCreate,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> ReferralPublic:
    """Open a referral. ``Idempotency-Key`` makes a retry safe: the same key and request
    answer the referral the first request created (as it is now), never a second one."""
    view = runtime.create_referral(
        idempotency_key=idempotency_key,
        sop_key=body.sop_key,
        sop_version=body.sop_version,
        actor=actor_of(user),
        origin_country=body.origin_country,
        destination_country=body.destination_country,
        incident_at=body.incident_at,
        disclosed_at=body.disclosed_at,
        facts=body.facts,
    )
    response.headers["Location"] = f"/referrals/{view.case_code}"
    response.headers["ETag"] = f'"{view.version}"'
    return ReferralPublic.of(view)


READ_ACTION = "referral.read"


@router.get("/{case_code}")
def read_referral(
    runtime: RuntimeDep, user: Authorized, case_code: str, response: Response
) -> ReferralPublic:
    """The referral without identifying facts. The managing agency sees every other fact;
    an agency it was sent to, only those disclosed to it under consent that still stands.
    Every read is access-logged with the fact names shown; a 404 as refused."""
    actor = actor_of(user)
    try:
        view = runtime.read_as_agency(case_code, actor)
    except NotFound:
        runtime.log_access(actor, READ_ACTION, case_code=case_code, outcome="refused")
        raise
    public = ReferralPublic.of(view)
    if user.agency_id != view.owner_agency_id:
        public = public.as_seen_by(user.agency_id)
    runtime.log_access(actor, READ_ACTION, case_code=case_code, fields=list(public.facts))
    response.headers["ETag"] = f'"{view.version}"'
    return public


def _check_signer(runtime: Runtime, user: Principal, signer_id: str, role: str) -> None:
    """An override's sign-off names a user of the API (her id: never a name, which would
    then sit on the timeline), enabled, in the role the SOP asks for, at the caller's
    agency. The engine checks the rest (the role the SOP names, not the caller herself)."""
    signer = find_by_id(runtime.db, signer_id)
    if signer is None or signer.role != role or signer.agency_id != user.agency_id:
        raise InvalidInput(
            "override.signed_off_by must be the user id of someone of your agency "
            "in the role the SOP names for the sign-off (signed_off_role)",
            field="override.signed_off_by",
        )


@router.put("/{case_code}/incident-time")
def record_incident_time(
    *,
    runtime: RuntimeDep,
    user: Authorized,
    case_code: str,
    body: IncidentTimeRequest,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> ReferralPublic:
    """Record or correct when the incident happened, with a reason: the clinical windows run
    from it, so the state's deadlines that do start again from the new time, and the timeline
    keeps the old time and the reason. The managing agency only (404 for an agency not on
    the referral, 403 for one on it that does not manage it); ``If-Match`` as for events."""
    return _managed_change(
        runtime, user, case_code, response, if_match,
        lambda actor, version: runtime.record_incident_time(
            case_code, incident_at=body.incident_at, reason=body.reason, actor=actor,
            expected_version=version,
        ),
    )  # fmt: skip


@router.post("/{case_code}/reopen")
def reopen_case(
    *,
    runtime: RuntimeDep,
    user: Authorized,
    case_code: str,
    body: ReopenRequest,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> ReferralPublic:
    """Reopen a closed case, for one of its SOP's reasons, into the state the SOP names (409
    when it is not closed, was erased, or its SOP does not allow reopening). The managing
    agency only (404 for an agency not on the referral, 403 otherwise)."""
    return _managed_change(
        runtime, user, case_code, response, if_match,
        lambda actor, version: runtime.reopen_case(
            case_code, reason=body.reason, actor=actor, expected_version=version
        ),
    )  # fmt: skip


@router.post("/{case_code}/clocks/{clock}/waive")
def waive_clock(
    *,
    runtime: RuntimeDep,
    user: Authorized,
    case_code: str,
    clock: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")],
    body: ClockWaiverRequest,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> ReferralPublic:
    """Waive a case clock (a medical follow-up the survivor declined, say) for one of its
    reasons: its reminders stop, and a clock that blocks closure no longer keeps the case
    open. The managing agency's roles the clock names (caseworker and supervisor by default;
    404 for an agency not on the referral or a clock its SOP lacks, 403 for one on it that
    does not manage it, 409 when the clock already ended or the case is closed)."""
    return _managed_change(
        runtime, user, case_code, response, if_match,
        lambda actor, version: runtime.waive_clock(
            case_code, clock, reason=body.reason, actor=actor, expected_version=version
        ),
    )  # fmt: skip


def _managed_change(  # noqa: PLR0917 -- the route's own parts, passed on
    runtime: Runtime,
    user: Principal,
    case_code: str,
    response: Response,
    if_match: str | None,
    change: Callable[[Actor, int | None], ReferralView],
) -> ReferralPublic:
    """A change of the referral by its managing agency (the runtime checks that): 404 first
    for an agency not on it; the referral after, with its ``ETag``."""
    _visible(runtime, case_code, user)
    view = change(actor_of(user), _expected_version(if_match))
    response.headers["ETag"] = f'"{view.version}"'
    return ReferralPublic.of(view)


@router.post("/{case_code}/events/{event}")
def fire_event(
    *,
    request: Request,
    runtime: RuntimeDep,
    user: Authorized,
    case_code: str,
    event: str,
    response: Response,
    body: Annotated[FireRequest | None, Body()] = None,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    if_match: Annotated[str | None, Header()] = None,
) -> FireResultPublic:
    """Fire ``event``. ``Idempotency-Key`` makes a retry safe; ``If-Match`` (the version read)
    refuses the event with 409 if the referral changed meanwhile."""
    expected = _expected_version(if_match)
    if body is not None and body.override is not None:
        _check_signer(runtime, user, body.override.signed_off_by, body.override.signed_off_role)
    if body is not None and body.recipient_agency_id is not None:
        directory = managed_directory(request, runtime)
        if directory.accepts_new_cases(body.recipient_agency_id) is False:
            raise InvalidInput(
                "the directory says this agency takes no new cases; choose another",
                field="recipient_agency_id",
            )
    result = runtime.fire(
        case_code,
        event,
        actor_of(user),
        body.payload() if body is not None else None,
        idempotency_key,
        expected_version=expected,
        hide_from_outsiders=True,
    )
    response.headers["ETag"] = f'"{result.version}"'
    return FireResultPublic.of(result)
