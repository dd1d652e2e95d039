"""An agency's tasks: the work a referral's states ask of it, as its inbox lists them.

A task is opened when a state is entered, for the agency filling the task's agency slot;
while that slot is unfilled, and for a task whose role the SOP places at no slot (a
coordinator, a national lead body), it goes to the agency managing the case, which answers
for the referral until someone else is sent it. A handoff's tasks go to the receiving
agency: the disclosure that enters the handoff fills its slot first. A withdrawal of consent
opens an ``acknowledge_withdrawal`` task (outside the state graph) for every agency holding
data under the grant. Every task is thus written with an agency; a task without one would be
shown to nobody, never to everybody.

A task names its referral by case code only, with what is asked (the SOP's words), by when,
and the events the agency may fire on it now; never a fact of the case. Reading tasks is
written to the access log (``tasks.list``, ``task.read``; refusals too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, or_, select

from sop_engine.errors import InvalidInput, NotFound, TransitionNotAllowed
from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction
from sop_engine.runtime.access_log import append_access
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.choice import available_events
from sop_engine.runtime.disclosure import handoff_grant_withdrawn
from sop_engine.runtime.services import Services

__all__ = [
    "HANDOFF_ANSWERS",
    "LIST_ACTION",
    "READ_ACTION",
    "STATUSES",
    "TaskView",
    "handoff_event",
    "list_tasks",
    "read_task",
]

_TK = tables.tasks
_R = tables.referrals

STATUSES = ("open", "done", "cancelled")
HANDOFF_ANSWERS = ("acknowledge", "accept", "decline", "deliver")
"""What the receiving agency does with a handoff (revoking it is the sender's)."""

LIST_ACTION = "tasks.list"
READ_ACTION = "task.read"


@dataclass(frozen=True, slots=True)
class TaskView:
    """A task as its agency sees it: no fact of the case, only what is asked and by when."""

    id: str
    name: str
    role: str
    ask: str
    status: str
    agency_id: str | None
    agency_slot: str | None
    state: str | None
    """The state that opened it (None for a withdrawal notice)."""
    due_at: datetime | None
    created_at: datetime
    closed_at: datetime | None
    closed_by_event: str | None
    case_code: str
    sop_key: str
    sop_version: int
    referral_state: str
    handoff: str | None
    """The handoff the task belongs to, if any: its answers are the task's events."""
    stage: str | None
    service: str
    decline_reasons: tuple[str, ...]
    unsuccessful_reasons: tuple[str, ...]
    """Why its delivery may be reported unsuccessful (a handoff's task; empty otherwise)."""
    available_events: tuple[str, ...]
    """Events the reader may fire on this task now (by role and agency; guards are checked
    when fired). Empty for a closed task."""


def list_tasks(
    services: Services,
    actor: Actor,
    *,
    status: str | None = "open",
    role: str | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = 50,
) -> list[TaskView]:
    """The tasks of the actor's agency, oldest first, after the key ``(created_at, id)``
    (keyset pagination); ``status`` None means any. Logged as one ``tasks.list`` read."""
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}", field="status")
    now = services.clock.now()
    if actor.agency_id is None:
        append_access(services, now, actor, LIST_ACTION)
        return []
    with read_transaction(services.db) as conn:
        query = (
            select(_TK)
            .where(_TK.c.agency_id == actor.agency_id)
            .order_by(_TK.c.created_at, _TK.c.id)
            .limit(limit)
        )
        if status is not None:
            query = query.where(_TK.c.status == status)
        if role is not None:
            query = query.where(_TK.c.role == role)
        if after is not None:
            at, task_id = after
            query = query.where(
                or_(_TK.c.created_at > at, and_(_TK.c.created_at == at, _TK.c.id > task_id))
            )
        rows = conn.execute(query).all()
        refs = _referrals(conn, {r.referral_id for r in rows})
        views = [_view(conn, services, r, refs[r.referral_id], actor=actor, now=now) for r in rows]
    append_access(services, now, actor, LIST_ACTION)
    return views


def read_task(
    services: Services, task_id: str, actor: Actor, *, action: str = READ_ACTION
) -> TaskView:
    """One task of the actor's agency; NotFound (the same as for an unknown id) for another
    agency's. Logged under ``action``, granted or refused."""
    now = services.clock.now()
    view = None
    with read_transaction(services.db) as conn:
        row = conn.execute(select(_TK).where(_TK.c.id == task_id)).first()
        referral_id = row.referral_id if row is not None else None
        if row is not None and actor.agency_id is not None and row.agency_id == actor.agency_id:
            ref = _referrals(conn, {row.referral_id})[row.referral_id]
            view = _view(conn, services, row, ref, actor=actor, now=now)
    outcome = "refused" if view is None else "granted"
    append_access(services, now, actor, action, referral_id=referral_id, outcome=outcome)
    if view is None:
        raise NotFound(f"no task {task_id}")
    return view


def handoff_event(task: TaskView, action: str, *, retry: bool = False) -> str:
    """The event answering the handoff of ``task`` with ``action``; refuse a task that is not
    a handoff's, and a closed one (unless ``retry``: a request whose idempotency key was
    seen, which ``fire`` answers with the first result). The answer's reason and outcome are
    checked by ``fire``, against the handoff (``reason_required``, its reasons)."""
    if action not in HANDOFF_ANSWERS:
        raise InvalidInput(f"action must be one of {', '.join(HANDOFF_ANSWERS)}", field="action")
    if task.handoff is None:
        raise TransitionNotAllowed(
            f"task {task.name!r} on referral {task.case_code} is not part of a handoff: "
            f"fire the referral's events instead",
            available=task.available_events,
        )
    if task.status != "open" and not retry:
        raise TransitionNotAllowed(
            f"task {task.name!r} on referral {task.case_code} is {task.status}", available=()
        )
    return f"{task.handoff}.{action}"


def _referrals(conn: Connection, ids: set[str]) -> Mapping[str, Row[Any]]:
    if not ids:
        return {}
    return {r.id: r for r in conn.execute(select(_R).where(_R.c.id.in_(sorted(ids))))}


def _view(
    conn: Connection,
    services: Services,
    row: Row[Any],
    ref: Row[Any],
    *,
    actor: Actor,
    now: datetime,
) -> TaskView:
    spec = services.sop(ref.sop_key, ref.sop_version).spec
    state = spec.states.get(row.state) if row.state is not None else None
    handoff = spec.handoffs.get(state.handoff) if state is not None and state.handoff else None
    events: tuple[str, ...] = ()
    open_handoffs = dict(ref.handoffs or {})
    parallel = handoff is not None and handoff.parallel
    at = open_handoffs.get(handoff.name) if parallel and handoff is not None else ref.state
    live = ref.closed_at is None and ref.erased_at is None and at == row.state
    if row.status == "open" and live:
        events = available_events(
            spec,
            ref.state,
            actor,
            ref.owner_agency_id,
            dict(ref.agencies or {}),
            open_handoffs=open_handoffs,
        )
        if handoff is not None:
            events = tuple(e for e in events if e.startswith(f"{handoff.name}."))
            region = handoff.name if parallel else None
            if handoff_grant_withdrawn(conn, services, spec, ref, now, region=region) is not None:
                # Consent was withdrawn mid-handoff: it can only be declined (or revoked).
                events = tuple(e for e in events if e.endswith((".decline", ".revoke")))
    return TaskView(
        id=row.id,
        name=row.name,
        role=row.role,
        ask=row.ask,
        status=row.status,
        agency_id=row.agency_id,
        agency_slot=row.agency_slot,
        state=row.state,
        due_at=row.due_at,
        created_at=row.created_at,
        closed_at=row.closed_at,
        closed_by_event=row.closed_by_event,
        case_code=ref.case_code,
        sop_key=ref.sop_key,
        sop_version=ref.sop_version,
        referral_state=ref.state,
        handoff=handoff.name if handoff is not None else None,
        stage=state.stage if state is not None and handoff is not None else None,
        service=handoff.service if handoff is not None else "",
        decline_reasons=handoff.decline_reasons if handoff is not None else (),
        unsuccessful_reasons=handoff.unsuccessful_reasons if handoff is not None else (),
        available_events=events,
    )
