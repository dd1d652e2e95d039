"""What every benchmark shares: the synthetic SOP, the runtime, the actor, seeding referrals
in bulk, databases in a temporary folder or a fresh PostgreSQL schema, and the figures."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring, new_case_key, wrap_case_key
from sop_engine.language.compiler import CompiledSop, SopLibrary
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from sop_engine.timeline.chain import GENESIS, entry_hash
from sop_engine.timeline.entries import entry_content

__all__ = [
    "ACTOR",
    "EVENT",
    "POSTGRES_URL",
    "SOP_DIR",
    "SOP_KEY",
    "START",
    "Figure",
    "case_code",
    "load_library",
    "make_runtime",
    "postgres_schema",
    "seed_referrals",
]

SOP_DIR = Path(__file__).resolve().parent
SOP_KEY = "bench.pingpong"
EVENT = "volley"
"""Sends a referral from ``ping`` to ``pong`` and back: every fire ends two timers and
starts two."""

START = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
ACTOR = Actor("bench-caseworker", "caseworker", "TH-NGO-BENCH", ("ngo",))
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

_R = tables.referrals
_K = tables.case_keys
_T = tables.timeline_entries
_TM = tables.timers
_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"


@dataclass
class Figure:
    """One line of the report and one object of the JSON list."""

    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    skipped: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """Printed under the figure's line, not written to JSON."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "ratio": self.ratio,
        }
        if self.skipped is not None:
            data["skipped"] = self.skipped
        if self.details:
            data["details"] = self.details
        return data

    def line(self) -> str:
        if self.skipped is not None:
            return f"{self.name:<22} skipped: {self.skipped}"
        text = f"{self.name:<22} {self.value:>10.1f} {self.unit}"
        if self.baseline is not None:
            text += f"   baseline {self.baseline:.1f}"
        if self.ratio is not None:
            text += f"   ratio {self.ratio:.2f}"
        return "\n".join([text, *self.notes])


def load_library() -> SopLibrary:
    return SopLibrary.load([SOP_DIR])


def make_runtime(engine: Engine, library: SopLibrary | None = None) -> Runtime:
    keyring = MasterKeyring(MasterKey.generate("bench"))
    return Runtime(engine, library or load_library(), keyring, ManualClock(START))


def case_code(index: int) -> str:
    """A deterministic case code for seeded referral ``index``, in the engine's alphabet, so
    that a process can pick referrals at random without loading their codes."""
    chars = []
    for _ in range(12):
        index, digit = divmod(index, len(_ALPHABET))
        chars.append(_ALPHABET[digit])
    code = "".join(reversed(chars))
    return f"{code[:4]}-{code[4:8]}-{code[8:]}"


def seed_referrals(
    engine: Engine,
    sop: CompiledSop,
    count: int,
    *,
    first: int = 0,
    keyring: MasterKeyring | None = None,
    batch: int = 5_000,
) -> None:
    """Insert ``count`` open referrals as ``create_referral`` leaves them (the referral row,
    its wrapped case key, its hash-chained first timeline entry and the timers of the
    initial state), in bulk with Core: creating 100,000 one by one would take minutes."""
    spec = sop.spec
    state = spec.initial_state
    keyring = keyring or MasterKeyring(MasterKey.generate("bench"))
    # One wrapped key shared by every seeded referral: wrapping is not what is measured,
    # and no seeded referral holds identifying facts.
    key_id, wrapped = wrap_case_key(keyring, new_case_key())
    for start in range(first, first + count, batch):
        refs: list[dict[str, Any]] = []
        keys: list[dict[str, Any]] = []
        entries: list[dict[str, Any]] = []
        timers: list[dict[str, Any]] = []
        for index in range(start, min(start + batch, first + count)):
            referral_id = str(uuid.UUID(int=index + 1))
            now = START - timedelta(seconds=index)
            entry: dict[str, Any] = {
                "referral_id": referral_id,
                "seq": 1,
                "at": now,
                "kind": "created",
                "actor_id": ACTOR.id,
                "actor_role": ACTOR.role,
                "actor_agency_id": ACTOR.agency_id,
                "event": None,
                "from_state": None,
                "to_state": state,
                "consent_grant_id": None,
                "disclosed_to": None,
                "disclosed_fields": [],
                "override": False,
                "details": {"sop": spec.ref, "origin": "TH", "destination": "LA"},
            }
            entry["prev_hash"] = GENESIS
            entry["hash"] = entry_hash(GENESIS, entry_content(entry))
            entries.append(entry)
            refs.append(
                {
                    "id": referral_id,
                    "case_code": case_code(index),
                    "sop_key": spec.key,
                    "sop_version": spec.version,
                    "state": state,
                    "version": 1,
                    "origin_country": "TH",
                    "destination_country": "LA",
                    "owner_agency_id": ACTOR.agency_id,
                    "agencies": {},
                    "facts": {},
                    "sealed": None,
                    "sealed_fields": [],
                    "incident_at": None,
                    "disclosed_at": None,
                    "created_at": now,
                    "updated_at": now,
                    "closed_at": None,
                    "erased_at": None,
                    "timeline_seq": 1,
                    "head_hash": entry["hash"],
                }
            )
            keys.append(
                {
                    "referral_id": referral_id,
                    "master_key_id": key_id,
                    "wrapped_key": wrapped,
                    "created_at": now,
                }
            )
            for deadline in spec.states[state].deadlines.values():
                assert deadline.anchor == "entered", "the benchmark SOP's deadlines start on entry"
                due = now + deadline.after
                timers.extend(
                    {
                        "referral_id": referral_id,
                        "state": state,
                        "deadline": deadline.name,
                        "level": level.level,
                        "due_at": due + level.after,
                        "deadline_due_at": due,
                        "created_at": now,
                    }
                    for level in deadline.escalation
                )
        with engine.begin() as conn:
            conn.execute(_R.insert(), refs)
            conn.execute(_K.insert(), keys)
            conn.execute(_T.insert(), entries)
            conn.execute(_TM.insert(), timers)


@contextmanager
def postgres_schema(url: str = POSTGRES_URL) -> Iterator[str]:
    """A URL whose connections work in a fresh schema, dropped on the way out.

    :raises SQLAlchemyError: the server cannot be reached.
    """
    parsed = make_url(url)
    admin = create_engine(parsed, poolclass=NullPool, connect_args={"connect_timeout": 5})
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        try:
            yield parsed.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
                hide_password=False
            )
        finally:
            try:
                with admin.begin() as conn:
                    conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            except SQLAlchemyError:
                pass
    finally:
        admin.dispose()
