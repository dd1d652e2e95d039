"""The agencies' task inbox: the tasks assigned to the caller's agency, and the answers to a
handoff (acknowledge, accept, decline with a reason, report delivery).

A task of another agency does not exist for the caller (404, the same as for an unknown
id). Every read of a task, and every refused attempt, is written to the access log by the
runtime (``tasks.list``, ``task.read``, ``task.<answer>``). An answer fires the handoff's
event through ``fire``: ``Idempotency-Key`` makes a retry return the first result, and
``If-Match`` (the referral's version) refuses it with 409 if the referral changed meanwhile.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Header, Path, Query, Response

from api.deps import Authorized, RuntimeDep, actor_of
from api.openapi import error_responses
from api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_time_key, page_of
from api.routes.referrals import _expected_version
from api.schemas.referrals import FireResultPublic
from api.schemas.tasks import DeclineRequest, DeliverRequest, TaskPublic, TaskStatus
from api.users import Principal
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.tasks import TaskView

__all__ = ["router"]

router = APIRouter(
    prefix="/tasks", tags=["tasks"], responses=error_responses(401, 403, 404, 409, 413, 422)
)

TaskId = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$", description="A task's id.")]
IdempotencyKey = Annotated[
    str | None,
    Header(max_length=200, description="Makes a retry return the first result instead."),
]
_IF_MATCH = 'The referral\'s version as read (its ETag, such as "4"): 409 if it changed since.'
IfMatch = Annotated[str | None, Header(description=_IF_MATCH)]


def _task_key(t: TaskView) -> list[str]:
    return [t.created_at.isoformat(), t.id]


@router.get("")
def list_tasks(
    *,
    runtime: RuntimeDep,
    user: Authorized,
    status: Annotated[TaskStatus, Query(description="`any` for every status.")] = "open",
    role: Annotated[
        str | None, Query(max_length=64, description="Only tasks for this role.")
    ] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[TaskPublic]:
    """The tasks assigned to the caller's agency, oldest first: each with its case code,
    SOP, state, due time and the events the caller may fire on it now."""
    after = decode_time_key(cursor)
    rows = runtime.list_tasks(
        actor_of(user),
        status=None if status == "any" else status,
        role=role,
        after=after,
        limit=limit + 1,
    )
    items, next_cursor = page_of(rows, limit, _task_key)
    return Page[TaskPublic](items=[TaskPublic.of(t) for t in items], next_cursor=next_cursor)


@router.get("/{task_id}")
def read_task(runtime: RuntimeDep, user: Authorized, task_id: TaskId) -> TaskPublic:
    """One task of the caller's agency (404 for any other)."""
    return TaskPublic.of(runtime.read_task(task_id, actor_of(user)))


def _answer(
    runtime: Runtime,
    user: Principal,
    task_id: str,
    action: str,
    response: Response,
    *,
    reason: str | None = None,
    outcome: str | None = None,
    idempotency_key: str | None,
    if_match: str | None,
) -> FireResultPublic:
    expected = _expected_version(if_match)
    result = runtime.answer_handoff(
        task_id,
        action,
        actor_of(user),
        reason=reason,
        outcome=outcome,
        idempotency_key=idempotency_key,
        expected_version=expected,
    )
    response.headers["ETag"] = f'"{result.version}"'
    return FireResultPublic.of(result)


_REFUSALS = (
    " 409 when the task is not a handoff's, is closed, or its stage does not allow this"
    " answer (with the events it does allow)."
)


@router.post(
    "/{task_id}/acknowledge", description="Acknowledge receipt of the referral." + _REFUSALS
)
def acknowledge(
    *,
    runtime: RuntimeDep,
    user: Authorized,
    task_id: TaskId,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> FireResultPublic:
    return _answer(runtime, user, task_id, "acknowledge", response,
                   idempotency_key=idempotency_key, if_match=if_match)  # fmt: skip


@router.post("/{task_id}/accept", description="Accept the referral." + _REFUSALS)
def accept(
    *,
    runtime: RuntimeDep,
    user: Authorized,
    task_id: TaskId,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> FireResultPublic:
    return _answer(runtime, user, task_id, "accept", response,
                   idempotency_key=idempotency_key, if_match=if_match)  # fmt: skip


@router.post(
    "/{task_id}/decline",
    description="Decline the referral, with one of the handoff's `decline_reasons` "
    "(422 naming `reason` otherwise)." + _REFUSALS,
)
def decline(
    *,
    runtime: RuntimeDep,
    user: Authorized,
    task_id: TaskId,
    response: Response,
    body: Annotated[DeclineRequest | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> FireResultPublic:
    reason = body.reason if body is not None else None
    return _answer(runtime, user, task_id, "decline", response, reason=reason,
                   idempotency_key=idempotency_key, if_match=if_match)  # fmt: skip


@router.post(
    "/{task_id}/deliver",
    description="Report how the delivery ended: `successful`, or `unsuccessful` with one of "
    "the handoff's `unsuccessful_reasons` (422 naming `outcome` or `reason` otherwise); the "
    "referring agency is told." + _REFUSALS,
)
def deliver(
    *,
    runtime: RuntimeDep,
    user: Authorized,
    task_id: TaskId,
    response: Response,
    body: Annotated[DeliverRequest | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> FireResultPublic:
    # Optional here so that the task is looked up first (404 for another agency's); the
    # engine refuses a delivery without an outcome (422 naming it).
    reason, outcome = (body.reason, body.outcome) if body is not None else (None, None)
    return _answer(runtime, user, task_id, "deliver", response, reason=reason, outcome=outcome,
                   idempotency_key=idempotency_key, if_match=if_match)  # fmt: skip
