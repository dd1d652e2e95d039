"""The events a caseworker, supervisor or focal point may fire on a referral now, with what
each needs (see :mod:`api.schemas.events`); fire one with
``POST /referrals/{case_code}/events/{event}``.

Only agencies taking part in the referral see it (404 otherwise, logged as refused). The
answer shows the state and which required facts are still unknown, by name: it is written to
the access log.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import Authorized, RuntimeDep, actor_of
from api.openapi import error_responses
from api.routes.consent import refused
from api.routes.referrals import _visible
from api.schemas.events import EventsAvailable
from sop_engine.errors import InvalidInput, NotFound
from sop_engine.language.schema import did_you_mean

__all__ = ["router"]

router = APIRouter(
    prefix="/referrals", tags=["referrals"], responses=error_responses(401, 403, 404, 422)
)

ACTION = "events.read"


@router.get("/{case_code}/events")
def list_events(
    runtime: RuntimeDep,
    user: Authorized,
    case_code: str,
    sets: Annotated[
        str | None,
        Query(
            max_length=100,
            description="Only the events that may set this fact, such as `risk_level` "
            "(the risk assessment).",
        ),
    ] = None,
) -> EventsAvailable:
    """The events the caller may fire now, by role and agency; guards are checked when an
    event is fired."""
    try:
        view = _visible(runtime, case_code, user)
    except NotFound:
        raise refused(runtime, user, ACTION, case_code) from None
    spec = runtime.library.get(view.sop_key, view.sop_version).spec
    if sets is not None and sets not in spec.facts:
        hint = did_you_mean(sets, spec.facts)
        message = f"{spec.ref} declares no such fact" + (f" ({hint})" if hint else "")
        raise InvalidInput(message, field="sets")
    runtime.log_access(actor_of(user), ACTION, case_code=case_code)
    return EventsAvailable.of(spec, view, actor_of(user), sets=sets)
