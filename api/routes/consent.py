"""Consent on a referral: its managing agency's caseworkers and supervisors record grants,
list them and withdraw them; the focal point of an agency holding data disclosed under a
withdrawn grant acknowledges the withdrawal.

Only the managing agency records, lists or withdraws consent: for any other agency the
referral does not exist (404, the answer to a wrong case code), and the attempt is written
to the access log as refused. Listing the grants is a read of protected data: it is written
to the access log too. The POSTs take an ``Idempotency-Key`` (see
:mod:`sop_engine.runtime.idempotency`): a retry answers the first result, ``replayed: true``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, status

from api.deps import Authorized, RuntimeDep, actor_of
from api.openapi import error_responses
from api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_time_key, page_of
from api.routes.referrals import _visible
from api.schemas.consent import (
    AcknowledgementPublic,
    ConsentGrantCreate,
    ConsentGrantPublic,
    ConsentGrantRecorded,
    WithdrawalPublic,
)
from api.users import Principal
from sop_engine.errors import NotFound
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.idempotency import run_once
from sop_engine.runtime.ledger import GrantRecord
from sop_engine.runtime.referrals import ReferralView

__all__ = ["IdempotencyKey", "refused", "router"]

router = APIRouter(
    prefix="/referrals",
    tags=["consent"],
    responses=error_responses(401, 403, 404, 409, 413, 422),
)

IdempotencyKey = Annotated[
    str | None,
    Header(max_length=200, description="Makes a retry return the first result instead."),
]
GrantId = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$", description="A grant's id.")]

GRANT_FIELDS = tuple(ConsentGrantPublic.model_fields)
"""What a listing of grants shows, by name, for the access log."""


def refused(runtime: Runtime, user: Principal, action: str, case_code: str) -> NotFound:
    """Log a refused attempt on a referral; the error to raise, the same as for a case code
    that does not exist."""
    runtime.log_access(actor_of(user), action, case_code=case_code, outcome="refused")
    return NotFound(f"no referral {case_code}")


def _managed(runtime: Runtime, case_code: str, user: Principal, action: str) -> ReferralView:
    """The referral, if the user's agency manages it; else a logged refusal (404)."""
    try:
        view = _visible(runtime, case_code, user)
    except NotFound:
        raise refused(runtime, user, action, case_code) from None
    if view.owner_agency_id != user.agency_id:
        raise refused(runtime, user, action, case_code)
    return view


@router.post("/{case_code}/consents", status_code=status.HTTP_201_CREATED)
def grant_consent(
    *,
    runtime: RuntimeDep,
    user: Authorized,
    case_code: str,
    body: ConsentGrantCreate,
    idempotency_key: IdempotencyKey = None,
) -> ConsentGrantRecorded:
    """Record consent for one of the SOP's consent scopes: to whom (one agency of the
    directory, or a type of agency in a country) and which of the scope's data categories.
    422 naming the field when the scope is unknown, the agency is not in the directory (with a
    "did you mean") or does not fit the scope, a category is not the scope's, the person
    consenting does not fit the survivor's age, the child's assent or a substitute's reason
    is missing, or ``expires_at`` has passed."""
    _managed(runtime, case_code, user, "consent.grant")
    actor = actor_of(user)

    def record() -> dict[str, Any]:
        grant = runtime.grant_consent(
            case_code,
            scope=body.scope,
            actor=actor,
            given_by=body.given_by,
            survivor_age=body.survivor_age,
            assent=body.assent,
            substitute_reason=body.substitute_reason,
            recipient_agency_id=body.recipient_agency_id,
            recipient_agency_type=body.recipient_agency_type,
            country=body.country,
            data_categories=body.data_categories,
            expires_at=body.expires_at,
        )
        return ConsentGrantPublic.of(grant, runtime.clock.now()).model_dump(mode="json")

    result, replayed = run_once(
        runtime.services,
        actor,
        idempotency_key,
        operation="consent.grant",
        case_code=case_code,
        request=body.model_dump(mode="json"),
        run=record,
    )
    return ConsentGrantRecorded.model_validate({**result, "replayed": replayed})


def _grant_key(g: GrantRecord) -> tuple[datetime, str]:
    return (g.granted_at, g.id)


@router.get("/{case_code}/consents")
def list_consents(
    *,
    runtime: RuntimeDep,
    user: Authorized,
    case_code: str,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[ConsentGrantPublic]:
    """The referral's consent grants, oldest first, with their status now."""
    after = decode_time_key(cursor)
    _managed(runtime, case_code, user, "consent.read")
    grants = sorted(runtime.list_grants(case_code), key=_grant_key)
    if after is not None:
        grants = [g for g in grants if _grant_key(g) > after]
    items, next_cursor = page_of(
        grants[: limit + 1], limit, lambda g: [g.granted_at.isoformat(), g.id]
    )
    runtime.log_access(
        actor_of(user), "consent.read", case_code=case_code, fields=GRANT_FIELDS if items else ()
    )
    now = runtime.clock.now()
    return Page[ConsentGrantPublic](
        items=[ConsentGrantPublic.of(g, now) for g in items], next_cursor=next_cursor
    )


@router.post("/{case_code}/consents/{grant_id}/withdrawal")
def withdraw_consent(
    *,
    runtime: RuntimeDep,
    user: Authorized,
    case_code: str,
    grant_id: GrantId,
    idempotency_key: IdempotencyKey = None,
) -> WithdrawalPublic:
    """Withdraw a grant. Every agency holding data disclosed under it is told and asked to
    acknowledge; a handoff sent under it can then only be revoked or declined. Withdrawing it
    again is 422 (field ``grant_id``), unless the retry carries the first request's
    ``Idempotency-Key``."""
    _managed(runtime, case_code, user, "consent.withdraw")
    actor = actor_of(user)

    def withdraw() -> dict[str, Any]:
        told = runtime.withdraw_consent(case_code, grant_id, actor)
        return {"grant_id": grant_id, "agencies_told": told}

    result, replayed = run_once(
        runtime.services,
        actor,
        idempotency_key,
        operation="consent.withdraw",
        case_code=case_code,
        request={"grant_id": grant_id},
        run=withdraw,
    )
    return WithdrawalPublic.model_validate({**result, "replayed": replayed})


@router.post("/{case_code}/withdrawal-acknowledgement")
def acknowledge_withdrawal(
    *,
    runtime: RuntimeDep,
    user: Authorized,
    case_code: str,
    idempotency_key: IdempotencyKey = None,
) -> AcknowledgementPublic:
    """The caller's agency has stopped using the data disclosed under a withdrawn consent.
    404 when no withdrawal waits for its acknowledgement on this referral."""
    try:
        _visible(runtime, case_code, user)
    except NotFound:
        raise refused(runtime, user, "withdrawal.acknowledge", case_code) from None
    actor = actor_of(user)
    result, replayed = run_once(
        runtime.services,
        actor,
        idempotency_key,
        operation="withdrawal.acknowledge",
        case_code=case_code,
        request={},
        run=lambda: {"acknowledged": runtime.acknowledge_withdrawal(case_code, actor)},
    )
    return AcknowledgementPublic.model_validate({**result, "replayed": replayed})
