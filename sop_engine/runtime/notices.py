"""The in-app notifications of a user: the ``inbox_messages`` rows that the notifications'
in-app channel wrote for her role at her agency (or, for roles that belong to no agency,
such as a coordinator, the SOP-wide messages for that role).

A notice holds a case code, what is asked and by when, never personal data; reading the
list is still logged (``notices.list``), since it says which cases an agency works on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, select, update

from sop_engine.errors import NotFound
from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction
from sop_engine.runtime.access_log import append_access
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.services import Services

__all__ = ["Notice", "list_notices", "mark_read"]

_N = tables.inbox_messages


@dataclass(frozen=True, slots=True)
class Notice:
    id: str
    case_code: str
    template: str
    language: str
    subject: str
    body: str
    created_at: datetime
    read_at: datetime | None


def _addressed_to(actor: Actor) -> ColumnElement[bool]:
    agency = (
        _N.c.recipient_agency_id.is_(None)
        if actor.agency_id is None
        else _N.c.recipient_agency_id == actor.agency_id
    )
    return and_(_N.c.recipient_role == actor.role, agency)


def list_notices(
    services: Services,
    actor: Actor,
    *,
    unread_only: bool = False,
    after: tuple[datetime, str] | None = None,
    limit: int = 50,
) -> list[Notice]:
    """The actor's notices, oldest first, after the key ``(created_at, id)``."""
    query = select(_N).where(_addressed_to(actor)).order_by(_N.c.created_at, _N.c.message_id)
    if unread_only:
        query = query.where(_N.c.read_at.is_(None))
    if after is not None:
        at, message_id = after
        query = query.where(
            (_N.c.created_at > at) | and_(_N.c.created_at == at, _N.c.message_id > message_id)
        )
    with read_transaction(services.db) as conn:
        rows = conn.execute(query.limit(limit)).all()
    append_access(services, services.clock.now(), actor, "notices.list")
    return [
        Notice(
            id=r.message_id,
            case_code=r.case_code,
            template=r.template,
            language=r.language,
            subject=r.subject,
            body=r.body,
            created_at=r.created_at,
            read_at=r.read_at,
        )
        for r in rows
    ]


def mark_read(services: Services, actor: Actor, message_id: str) -> datetime:
    """Mark one of the actor's notices read (once: a second call keeps the first time)."""
    now = services.clock.now()
    with services.db.begin() as conn:
        found = conn.execute(
            select(_N.c.read_at).where(_N.c.message_id == message_id, _addressed_to(actor))
        ).first()
        if found is None:
            raise NotFound("no such notice for you")
        if found.read_at is not None:
            read_at: datetime = found.read_at
            return read_at
        conn.execute(update(_N).where(_N.c.message_id == message_id).values(read_at=now))
    return now
