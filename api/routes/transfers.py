"""Case transfer: the managing agency hands the case to another agency, which accepts or
declines (:mod:`sop_engine.runtime.transfer`; the SOP's ``transfer`` block says who and
under which consent).

An agency that takes no part in the referral gets 404 for every route, as for a wrong case
code, and the attempt is access-logged as refused; one on the referral that may not take
the step gets 403; a step the transfer's state does not allow (none pending, already
pending, the case closed) gets 409, as does a stale ``If-Match``. The POSTs take an
``Idempotency-Key``: a retry answers the first result, ``replayed: true``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response, status

from api.deps import Authorized, RuntimeDep, actor_of, managed_directory
from api.openapi import error_responses
from api.routes.consent import IdempotencyKey, refused
from api.routes.referrals import _expected_version, _visible
from api.schemas.transfers import TransferDecline, TransferPublic, TransferRecorded, TransferRequest
from api.users import Principal
from sop_engine.errors import InvalidInput, NotFound
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.idempotency import run_once
from sop_engine.runtime.transfer import TransferView

__all__ = ["router"]

router = APIRouter(
    prefix="/referrals",
    tags=["transfers"],
    responses=error_responses(401, 403, 404, 409, 413, 422),
)

IfMatch = Annotated[str | None, Header(description='The referral\'s version read, as "3".')]


def _step(
    runtime: Runtime,
    user: Principal,
    case_code: str,
    response: Response,
    *,
    operation: str,
    idempotency_key: str | None,
    request: dict[str, Any],
    take: Callable[[Actor], TransferView],
) -> TransferRecorded:
    """One step of a transfer: 404 (logged) for an agency not on the referral; then the step,
    once per ``Idempotency-Key``; the answer with the referral's ``ETag``."""
    try:
        _visible(runtime, case_code, user)
    except NotFound:
        raise refused(runtime, user, operation, case_code) from None
    actor = actor_of(user)
    result, replayed = run_once(
        runtime.services,
        actor,
        idempotency_key,
        operation=operation,
        case_code=case_code,
        request=request,
        run=lambda: TransferPublic.of(take(actor)).model_dump(mode="json"),
    )
    answer = TransferRecorded.model_validate({**result, "replayed": replayed})
    response.headers["ETag"] = f'"{answer.version}"'
    return answer


@router.post("/{case_code}/transfer", status_code=status.HTTP_201_CREATED)
def request_transfer(
    *,
    request: Request,
    runtime: RuntimeDep,
    user: Authorized,
    case_code: str,
    body: TransferRequest,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> TransferRecorded:
    """Ask ``to_agency_id`` to take over the management of the case: the SOP's requester
    roles at the managing agency only (403 otherwise). The receiving agency must be in the
    directory, fit the SOP's slot and take new cases (422, field ``to_agency_id``), and a
    standing consent grant of the SOP's transfer scope must cover it and the dataset (403
    ``consent_missing`` otherwise); the dataset is then disclosed to it. 409 while another
    transfer is pending, or the case is closed."""
    expected = _expected_version(if_match)
    directory = managed_directory(request, runtime)
    if directory.accepts_new_cases(body.to_agency_id) is False:
        raise InvalidInput(
            "the directory says this agency takes no new cases; choose another",
            field="to_agency_id",
        )
    return _step(
        runtime, user, case_code, response,
        operation="transfer.request", idempotency_key=idempotency_key,
        request=body.model_dump(mode="json"),
        take=lambda actor: runtime.request_transfer(
            case_code, to_agency_id=body.to_agency_id, actor=actor, expected_version=expected
        ),
    )  # fmt: skip


@router.post("/{case_code}/transfer/accept")
def accept_transfer(
    *,
    runtime: RuntimeDep,
    user: Authorized,
    case_code: str,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> TransferRecorded:
    """Take over the case: the SOP's answering role at the agency the transfer is pending
    with only (403 otherwise). Its agency then manages the case; the former managing agency
    no longer takes part in it. 403 ``consent_missing`` when the consent that covered the
    request no longer stands: the transfer can then only be declined or cancelled."""
    expected = _expected_version(if_match)
    return _step(
        runtime, user, case_code, response,
        operation="transfer.accept", idempotency_key=idempotency_key, request={},
        take=lambda actor: runtime.accept_transfer(
            case_code, actor=actor, expected_version=expected
        ),
    )  # fmt: skip


@router.post("/{case_code}/transfer/decline")
def decline_transfer(
    *,
    runtime: RuntimeDep,
    user: Authorized,
    case_code: str,
    body: TransferDecline,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> TransferRecorded:
    """Decline the transfer, for one of the SOP's reasons (422, field ``reason``, otherwise):
    the answering role at the agency it is pending with. The case stays where it is."""
    expected = _expected_version(if_match)
    return _step(
        runtime, user, case_code, response,
        operation="transfer.decline", idempotency_key=idempotency_key,
        request=body.model_dump(mode="json"),
        take=lambda actor: runtime.decline_transfer(
            case_code, reason=body.reason, actor=actor, expected_version=expected
        ),
    )  # fmt: skip


@router.post("/{case_code}/transfer/cancel")
def cancel_transfer(
    *,
    runtime: RuntimeDep,
    user: Authorized,
    case_code: str,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> TransferRecorded:
    """Withdraw the pending request before it is answered: the SOP's requester roles at the
    managing agency. 409 when none is pending."""
    expected = _expected_version(if_match)
    return _step(
        runtime, user, case_code, response,
        operation="transfer.cancel", idempotency_key=idempotency_key, request={},
        take=lambda actor: runtime.cancel_transfer(
            case_code, actor=actor, expected_version=expected
        ),
    )  # fmt: skip


@router.get("/{case_code}/transfers")
def list_transfers(
    *, runtime: RuntimeDep, user: Authorized, case_code: str, response: Response
) -> list[TransferPublic]:
    """The case's transfers, oldest first: all of them for the managing agency; for an agency
    a transfer was sent to, its own. 404 for anyone else. Access-logged."""
    actor = actor_of(user)
    try:
        _visible(runtime, case_code, user)
        found = runtime.list_transfers(case_code, actor)
    except NotFound:
        raise refused(runtime, user, "transfer.read", case_code) from None
    runtime.log_access(
        actor, "transfer.read", case_code=case_code,
        fields=tuple(TransferPublic.model_fields) if found else (),
    )  # fmt: skip
    if found:
        response.headers["ETag"] = f'"{found[0].version}"'
    return [TransferPublic.of(t) for t in found]
