"""The caller's in-app notifications: what the notifications' in-app channel delivered to her
role at her agency (a referral received, a deadline passed, consent withdrawn...).

A notice names a case code and what is asked, never personal data (the templates see no
more). Another user's notice does not exist for the caller (404, the same as for an unknown
id). Listing is written to the access log (``notices.list``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from api.deps import Authorized, RuntimeDep, actor_of
from api.openapi import error_responses
from api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_time_key, page_of
from sop_engine.runtime.notices import Notice

__all__ = ["router"]

router = APIRouter(prefix="/notices", tags=["notices"], responses=error_responses(401, 403, 422))

NoticeId = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$", description="A notice's id.")]


class NoticePublic(BaseModel):
    id: str
    case_code: str
    template: str
    language: str
    subject: str
    body: str
    created_at: datetime
    read_at: datetime | None

    @classmethod
    def of(cls, n: Notice) -> NoticePublic:
        return cls(
            id=n.id,
            case_code=n.case_code,
            template=n.template,
            language=n.language,
            subject=n.subject,
            body=n.body,
            created_at=n.created_at,
            read_at=n.read_at,
        )


class NoticeRead(BaseModel):
    id: str
    read_at: datetime


def _key(n: Notice) -> list[str]:
    return [n.created_at.isoformat(), n.id]


@router.get("")
def list_notices(
    *,
    runtime: RuntimeDep,
    user: Authorized,
    unread: Annotated[bool, Query(description="Only notices not yet marked read.")] = False,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[NoticePublic]:
    """The caller's notices, oldest first."""
    rows = runtime.list_notices(
        actor_of(user), unread_only=unread, after=decode_time_key(cursor), limit=limit + 1
    )
    items, next_cursor = page_of(rows, limit, _key)
    return Page[NoticePublic](items=[NoticePublic.of(n) for n in items], next_cursor=next_cursor)


@router.post("/{notice_id}/read", responses=error_responses(404))
def mark_read(runtime: RuntimeDep, user: Authorized, notice_id: NoticeId) -> NoticeRead:
    """Mark a notice read; marking it again keeps the first time."""
    return NoticeRead(id=notice_id, read_at=runtime.mark_notice_read(actor_of(user), notice_id))
