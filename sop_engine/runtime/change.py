"""One change to one referral, planned in memory and written in one go.

A :class:`Change` is opened on a referral row read inside a transaction. Callers record what
happens (timeline entries, a state left and entered, facts, tasks, timers, notifications,
disclosures); :meth:`Change.write` then claims the referral with a conditional update on its
version (a concurrent change makes that update match no row, and the whole transaction is
refused as a conflict, never a lost update) and inserts everything else.

Only the runtime uses this; it is the single place that writes a referral's state, owner,
timeline, timers, tasks, outbox, disclosures and transfers.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, select, update

from sop_engine.errors import ConcurrentChange, NotFound
from sop_engine.language.spec import HANDOFF_STAGES, DeadlineSpec, SopSpec, StateSpec
from sop_engine.persistence import tables
from sop_engine.timeline.chain import entry_hash
from sop_engine.timeline.checkpoints import checkpoint_row, is_checkpoint
from sop_engine.timeline.entries import EntryDraft, entry_content, entry_row

__all__ = [
    "SELECT_BY_CASE_CODE",
    "TRANSFER_TIMERS",
    "Change",
    "anchor_time",
    "check_version",
    "load_referral",
    "recipient_agency",
]

_R = tables.referrals
_T = tables.timeline_entries
_TM = tables.timers
_TK = tables.tasks
_O = tables.outbox
_D = tables.disclosures
_C = tables.timeline_checkpoints
_TR = tables.transfers

TRANSFER_TIMERS = ":transfer"
"""The ``timers.state`` of a pending transfer's answer deadline: not a state of any SOP (a
state's name has no colon), since the deadline runs whatever state the case is in."""

# Built once: constructing a statement (and its cache key) costs more than running it on
# SQLite, and these run on every fire.
_CLAIM_REFERRAL = (
    update(_R)
    .where(_R.c.id == bindparam("p_id"), _R.c.version == bindparam("p_read_version"))
    .values(
        state=bindparam("p_state"),
        version=bindparam("p_version"),
        owner_agency_id=bindparam("p_owner"),
        facts=bindparam("p_facts", type_=_R.c.facts.type),
        agencies=bindparam("p_agencies", type_=_R.c.agencies.type),
        handoffs=bindparam("p_handoffs", type_=_R.c.handoffs.type),
        fact_writers=bindparam("p_fact_writers", type_=_R.c.fact_writers.type),
        sealed=bindparam("p_sealed", type_=_R.c.sealed.type),
        sealed_fields=bindparam("p_sealed_fields", type_=_R.c.sealed_fields.type),
        closed_at=bindparam("p_closed_at", type_=_R.c.closed_at.type),
        incident_at=bindparam("p_incident_at", type_=_R.c.incident_at.type),
        updated_at=bindparam("p_updated_at", type_=_R.c.updated_at.type),
        timeline_seq=bindparam("p_timeline_seq"),
        head_hash=bindparam("p_head_hash"),
    )
)
_CLOSE_TASKS = (
    update(_TK)
    .where(
        _TK.c.referral_id == bindparam("p_referral"),
        _TK.c.state == bindparam("p_state"),
        _TK.c.status == "open",
    )
    .values(
        status=bindparam("p_status"),
        closed_at=bindparam("p_at", type_=_TK.c.closed_at.type),
        closed_by_event=bindparam("p_event"),
    )
)
_DROP_TIMERS = delete(_TM).where(
    _TM.c.referral_id == bindparam("p_referral"),
    _TM.c.state == bindparam("p_state"),
    _TM.c.fired_at.is_(None),
)
_DROP_DEADLINE_TIMERS = delete(_TM).where(
    _TM.c.referral_id == bindparam("p_referral"),
    _TM.c.state == bindparam("p_state"),
    _TM.c.deadline == bindparam("p_deadline"),
    _TM.c.fired_at.is_(None),
)
_TASK_DUE = (
    update(_TK)
    .where(
        _TK.c.referral_id == bindparam("p_referral"),
        _TK.c.state == bindparam("p_state"),
        _TK.c.name == bindparam("p_name"),
        _TK.c.status == "open",
    )
    .values(due_at=bindparam("p_due_at", type_=_TK.c.due_at.type))
)
SELECT_BY_CASE_CODE = select(_R).where(_R.c.case_code == bindparam("p_code"))
"""A referral's row by case code; execute with ``{"p_code": code}``."""


def load_referral(conn: Connection, case_code: str) -> Row[Any]:
    """The referral's row, read in the caller's transaction.

    :raises NotFound: no referral has that case code.
    """
    ref = conn.execute(SELECT_BY_CASE_CODE, {"p_code": case_code}).first()
    if ref is None:
        raise NotFound(f"no referral {case_code}")
    return ref


def check_version(ref: Row[Any], expected_version: int | None) -> None:
    """Refuse a change asked for at another version than the referral's (``If-Match``).

    :raises ConcurrentChange: with the referral's version.
    """
    if expected_version is not None and ref.version != expected_version:
        raise ConcurrentChange(
            f"referral {ref.case_code} is at version {ref.version}, not {expected_version}",
            current_version=ref.version,
        )


def anchor_time(
    ref: Row[Any], facts: Mapping[str, Any], anchor: str, now: datetime
) -> datetime | None:
    """When a deadline starts: on entering the state, or at a referral timestamp or fact."""
    if anchor == "entered":
        return now
    if anchor in ("incident_at", "disclosed_at", "created_at"):
        value: datetime | None = getattr(ref, anchor)
        return value
    raw = facts.get(anchor)
    return datetime.fromisoformat(raw) if isinstance(raw, str) else None


def recipient_agency(
    spec: SopSpec, state: StateSpec | None, role: str, agencies: Mapping[str, Any], owner: str
) -> str | None:
    """The agency whose holders of ``role`` are told, in ``state``.

    - the agency filling the slot of the state's task for that role (a handoff's receiving
      agency, for instance);
    - for a role the SOP places at an agency slot (``roles: {caseworker: {agency: case_agency}}``),
      the agency filling that slot, or while it is unfilled the agency managing the case;
    - for any other role (the coordinator, a national lead body, a GBV sub-cluster): no agency,
      meaning every holder of the role under this SOP.
    """
    if state is not None:
        for task in state.tasks.values():
            if task.role == role and task.agency is not None and task.agency in agencies:
                return str(agencies[task.agency])
    declared = spec.roles.get(role)
    if declared is None or declared.agency is None:
        return None
    return str(agencies.get(declared.agency, owner))


@dataclass
class Change:
    """The plan of one transaction on one referral (see the module docstring)."""

    conn: Connection
    ref: Row[Any]
    spec: SopSpec
    now: datetime
    state: str = ""
    owner_agency_id: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    agencies: dict[str, Any] = field(default_factory=dict)
    handoffs: dict[str, str] = field(default_factory=dict)
    """The open parallel handoffs, each to the state of its stage."""
    fact_writers: dict[str, Any] = field(default_factory=dict)
    sealed: bytes | None = None
    sealed_fields: list[str] = field(default_factory=list)
    closed_at: datetime | None = None
    incident_at: datetime | None = None
    seq: int = 0
    head: str = ""
    entries: list[dict[str, Any]] = field(default_factory=list)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    statements: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)

    @classmethod
    def open(cls, conn: Connection, ref: Row[Any], spec: SopSpec, now: datetime) -> Change:
        return cls(
            conn=conn,
            ref=ref,
            spec=spec,
            now=now,
            state=ref.state,
            owner_agency_id=ref.owner_agency_id,
            facts=dict(ref.facts or {}),
            agencies=dict(ref.agencies or {}),
            handoffs=dict(ref.handoffs or {}),
            fact_writers=dict(ref.fact_writers or {}),
            sealed=ref.sealed,
            sealed_fields=list(ref.sealed_fields or ()),
            closed_at=ref.closed_at,
            incident_at=ref.incident_at,
            seq=ref.timeline_seq,
            head=ref.head_hash,
        )

    # -- timeline ---------------------------------------------------------------------------

    def record(self, draft: EntryDraft) -> tuple[int, str]:
        """Chain one timeline entry; return its sequence number and hash."""
        self.seq += 1
        values = entry_row(self.ref.id, self.seq, self.now, draft)
        digest = entry_hash(self.head, entry_content(values))
        values["prev_hash"], values["hash"] = self.head, digest
        self.head = digest
        self.entries.append(values)
        if is_checkpoint(self.seq):
            self.add("checkpoints", checkpoint_row(self.ref.id, self.seq, digest))
        return self.seq, digest

    # -- rows written with the change ------------------------------------------------------

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.rows.setdefault(table, []).append(row)

    def notify(
        self, template: str, role: str, agency_id: str | None, context: Mapping[str, Any]
    ) -> str:
        message_id = str(uuid.uuid4())
        self.add(
            "outbox",
            {
                "id": message_id,
                "referral_id": self.ref.id,
                "template": template,
                "recipient_role": role,
                "recipient_agency_id": agency_id,
                "context": {"case_code": self.ref.case_code, **context},
                "created_at": self.now,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": self.now,
            },
        )
        return message_id

    def disclose(
        self,
        slot: str,
        agency_id: str,
        grant_id: str | None,
        override: bool,
        fields: Sequence[str],
        *,
        values: Mapping[str, Any] | None = None,
        sealed_values: bytes | None = None,
    ) -> None:
        """Record that ``agency_id`` now holds ``fields``, with their values as disclosed."""
        self.add(
            "disclosures",
            {
                "referral_id": self.ref.id,
                "agency_slot": slot,
                "agency_id": agency_id,
                "grant_id": grant_id,
                "override": override,
                "fields": list(fields),
                "field_values": dict(values) if values is not None else None,
                "sealed_values": sealed_values,
                "at": self.now,
                "timeline_seq": self.seq,
            },
        )

    # -- moving between states -------------------------------------------------------------

    def leave(self, event: str | None, *, cancel: bool = False, state: str | None = None) -> None:
        """Close the tasks and drop the unfired timers of the current state, or of ``state``
        (a parallel handoff's stage)."""
        old = self.spec.states.get(self.state if state is None else state)
        if old is None:
            return
        if old.tasks or old.handoff:
            self.statements.append(
                (
                    _CLOSE_TASKS,
                    {
                        "p_referral": self.ref.id,
                        "p_state": old.name,
                        "p_status": "cancelled" if cancel else "done",
                        "p_at": self.now,
                        "p_event": event,
                    },
                )
            )
        if old.deadlines:
            self.statements.append((_DROP_TIMERS, {"p_referral": self.ref.id, "p_state": old.name}))

    def enter(self, state: str) -> None:
        """Move the case to ``state``: open its tasks and start its deadline timers."""
        self.state = state
        if self.spec.states[state].final:
            self.closed_at = self.now
        self._open(state)

    def move_handoff(self, region: str, stage: str) -> None:
        """Move parallel handoff ``region`` to the state ``stage``: open that stage's tasks and
        start its timers, or end the handoff when ``stage`` is no stage of it (its idle
        state). Leaving its stage before is the caller's: :meth:`leave` with ``state``."""
        if stage in self.spec.states:
            self.handoffs[region] = stage
            self._open(stage)
        else:
            self.handoffs.pop(region, None)

    def _open(self, state: str) -> None:
        spec = self.spec.states[state]
        deadlines_due: dict[str, datetime] = {}
        for d in spec.deadlines.values():
            due = self._start_timers(state, d)
            if due is not None:
                deadlines_due[d.name] = due
        first_due = min(deadlines_due.values(), default=None)
        for task in spec.tasks.values():
            agency = self.agencies.get(task.agency or "", self.owner_agency_id)
            self.add(
                "tasks",
                {
                    "id": str(uuid.uuid4()),
                    "referral_id": self.ref.id,
                    "state": state,
                    "name": task.name,
                    "role": task.role,
                    "agency_slot": task.agency,
                    "agency_id": agency,
                    "ask": task.ask,
                    "status": "open",
                    "due_at": deadlines_due.get(task.name, first_due),
                    "created_at": self.now,
                },
            )

    # -- transfers -------------------------------------------------------------------------

    def start_transfer_deadline(self, deadline: DeadlineSpec) -> datetime | None:
        """Start the timers of a transfer's answer deadline; when it is due."""
        return self._start_timers(TRANSFER_TIMERS, deadline)

    def stop_transfer_deadline(self) -> None:
        """Drop the unfired timers of the transfer's answer deadline (it was answered)."""
        self.statements.append(
            (_DROP_TIMERS, {"p_referral": self.ref.id, "p_state": TRANSFER_TIMERS})
        )

    def close_transfer(
        self, transfer_id: str, status: str, actor_id: str, reason: str | None
    ) -> None:
        """Record the answer to (or the cancellation of) the pending transfer ``transfer_id``."""
        self.statements.append(
            (
                update(_TR)
                .where(_TR.c.id == transfer_id, _TR.c.status == "pending")
                .values(status=status, answered_by=actor_id, answered_at=self.now, reason=reason),
                {},
            )
        )

    def hand_over_tasks(self, task_ids: Sequence[str], agency_id: str) -> None:
        """Give the open tasks ``task_ids`` to ``agency_id`` (the new managing agency)."""
        if task_ids:
            self.statements.append(
                (
                    update(_TK)
                    .where(_TK.c.id.in_(list(task_ids)), _TK.c.status == "open")
                    .values(agency_id=agency_id),
                    {},
                )
            )

    def missing_anchors(self, state: str) -> list[str]:
        """Deadlines of ``state`` that cannot start because their timestamp is unknown."""
        spec = self.spec.states[state]
        return [d.name for d in spec.deadlines.values() if self._anchor(d.anchor) is None]

    def reanchor(self, anchor: str) -> None:
        """Restart the current state's deadlines that run from ``anchor`` (its value changed):
        their unfired timers are replaced by timers from the new value (those already due
        fire at the next sweep), and the open tasks' due times follow. Fired levels stay."""
        spec = self.spec.states[self.state]
        moved = [d for d in spec.deadlines.values() if d.anchor == anchor]
        if not moved:
            return
        for d in moved:
            self.statements.append(
                (
                    _DROP_DEADLINE_TIMERS,
                    {"p_referral": self.ref.id, "p_state": self.state, "p_deadline": d.name},
                )
            )
            self._start_timers(self.state, d, skip_fired=True)
        deadlines_due = {
            d.name: start + d.after
            for d in spec.deadlines.values()
            if (start := self._anchor(d.anchor)) is not None
        }
        first_due = min(deadlines_due.values(), default=None)
        for task in spec.tasks.values():
            self.statements.append(
                (
                    _TASK_DUE,
                    {
                        "p_referral": self.ref.id,
                        "p_state": self.state,
                        "p_name": task.name,
                        "p_due_at": deadlines_due.get(task.name, first_due),
                    },
                )
            )

    def _anchor(self, anchor: str) -> datetime | None:
        if anchor == "incident_at":
            return self.incident_at
        return anchor_time(self.ref, self.facts, anchor, self.now)

    def _start_timers(
        self, state: str, d: DeadlineSpec, *, skip_fired: bool = False
    ) -> datetime | None:
        """Add the timers of deadline ``d`` of ``state``; when it is due (None when its
        timestamp is unknown). ``skip_fired``: not the levels that already fired."""
        start = self._anchor(d.anchor)
        if start is None:
            return None
        due = start + d.after
        fired = self._fired_levels(state, d.name) if skip_fired else set()
        for lv in d.escalation:
            if lv.level in fired:
                continue
            self.add(
                "timers",
                {
                    "referral_id": self.ref.id,
                    "state": state,
                    "deadline": d.name,
                    "level": lv.level,
                    "due_at": due + lv.after,
                    "deadline_due_at": due,
                    "created_at": self.now,
                },
            )
        return due

    def _fired_levels(self, state: str, deadline: str) -> set[int]:
        return set(
            self.conn.scalars(
                select(_TM.c.level).where(
                    _TM.c.referral_id == self.ref.id,
                    _TM.c.state == state,
                    _TM.c.deadline == deadline,
                    _TM.c.fired_at.is_not(None),
                )
            )
        )

    # -- writing ---------------------------------------------------------------------------

    def write(self, *, bump: bool = True) -> int:
        """Claim the referral at the version it was read at, then write everything; return the
        new version. Raise :class:`ConcurrentChange` if the referral changed meanwhile."""
        version = self.ref.version + 1 if bump else self.ref.version
        result = self.conn.execute(
            _CLAIM_REFERRAL,
            {
                "p_id": self.ref.id,
                "p_read_version": self.ref.version,
                "p_state": self.state,
                "p_version": version,
                "p_owner": self.owner_agency_id,
                "p_facts": self.facts,
                "p_agencies": self.agencies,
                "p_handoffs": self.handoffs,
                "p_fact_writers": self.fact_writers,
                "p_sealed": self.sealed,
                "p_sealed_fields": self.sealed_fields,
                "p_closed_at": self.closed_at,
                "p_incident_at": self.incident_at,
                "p_updated_at": self.now,
                "p_timeline_seq": self.seq,
                "p_head_hash": self.head,
            },
        )
        if int(result.rowcount) != 1:
            raise ConcurrentChange(
                f"referral {self.ref.case_code} was changed by someone else; read it again",
                current_version=None,
            )
        for statement, params in self.statements:
            self.conn.execute(statement, params)
        if self.entries:
            self.conn.execute(_T.insert(), self.entries)
        into = {
            "timers": _TM,
            "tasks": _TK,
            "outbox": _O,
            "disclosures": _D,
            "checkpoints": _C,
            "transfers": _TR,
        }
        into["clock_stops"] = tables.clock_stops
        for name, rows in self.rows.items():
            self.conn.execute(into[name].insert(), rows)
        return int(version)


def handoff_stage(spec: SopSpec, state: str) -> tuple[str, str] | None:
    """(handoff name, stage) when ``state`` is a stage of a handoff."""
    s = spec.states.get(state)
    if s is None or s.handoff is None or s.stage not in HANDOFF_STAGES:
        return None
    return s.handoff, s.stage
