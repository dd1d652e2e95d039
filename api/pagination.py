"""Keyset pagination for every list route: ``?limit=`` and ``?cursor=``, answered with
``{items, next_cursor}``. The cursor is opaque to clients (base64 of the last key seen);
``next_cursor`` is null on the last page. Pages are stable while rows are added: a row added
after the cursor's key appears on a later page, never twice.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field

from sop_engine.errors import InvalidInput

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "Cursor",
    "Limit",
    "Page",
    "decode_cursor",
    "decode_time_key",
    "page_of",
]

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page (1 to {MAX_LIMIT}).")]
Cursor = Annotated[
    str | None,
    Query(max_length=200, description="`next_cursor` of the previous page; none for the first."),
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


def encode_cursor(key: Any) -> str:
    raw = json.dumps(key, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Any:
    """The key a cursor carries, or None for no cursor; 422 (field ``cursor``) for a bad one."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidInput("not a cursor this API gave out", field="cursor") from None


def decode_time_key(cursor: str | None) -> tuple[datetime, str] | None:
    """The ``(created_at, id)`` key a cursor of a list ordered by creation carries (tasks,
    notices, referrals), in UTC, or None; 422 (field ``cursor``) for one this API did not
    give out."""
    key = decode_cursor(cursor)
    if key is None:
        return None
    if isinstance(key, list) and len(key) == 2 and all(isinstance(k, str) for k in key):
        try:
            at = datetime.fromisoformat(key[0])
            if at.tzinfo is not None:
                return at.astimezone(UTC), key[1]
        except (ValueError, OverflowError):
            pass
    raise InvalidInput("not a cursor this API gave out", field="cursor")


def page_of(rows: Sequence[T], limit: int, key: Callable[[T], Any]) -> tuple[list[T], str | None]:
    """Given up to ``limit + 1`` rows, the page's rows and the next cursor (None at the end).

    Fetch ``limit + 1`` rows after the cursor's key, ordered by ``key``; the extra row only
    says that there is a next page.
    """
    items = list(rows[:limit])
    more = len(rows) > limit
    return items, (encode_cursor(key(items[-1])) if more and items else None)
