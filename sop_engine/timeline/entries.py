"""Writing a referral's timeline in the database (verifying it: :mod:`verify`).

Each entry is appended in the transaction of the change it records, chained to the one
before by SHA-256 (:mod:`chain`), with a checkpoint at every ``CHECKPOINT_EVERY``-th entry
(:mod:`checkpoints`). The referral row keeps the chain's head (``head_hash``,
``timeline_seq``), so appending needs no extra read, and verification also notices entries
cut off the end, unless the referral row was rewritten too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sop_engine.runtime.actors import Actor

__all__ = ["EntryDraft", "entry_content", "entry_row"]


@dataclass(frozen=True, slots=True)
class EntryDraft:
    """What one timeline entry says, before it is numbered and chained."""

    kind: str
    actor: Actor
    event: str | None = None
    from_state: str | None = None
    to_state: str | None = None
    consent_grant_id: str | None = None
    disclosed_to: str | None = None
    disclosed_fields: Sequence[str] = ()
    override: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def entry_content(row: Mapping[str, Any]) -> dict[str, Any]:
    """The hashed content of an entry, from a row or the values about to be inserted."""
    return {
        "referral_id": row["referral_id"],
        "seq": row["seq"],
        "at": _iso(row["at"]),
        "kind": row["kind"],
        "actor_id": row["actor_id"],
        "actor_role": row["actor_role"],
        "actor_agency_id": row["actor_agency_id"],
        "event": row["event"],
        "from_state": row["from_state"],
        "to_state": row["to_state"],
        "consent_grant_id": row["consent_grant_id"],
        "disclosed_to": row["disclosed_to"],
        "disclosed_fields": list(row["disclosed_fields"] or ()),
        "override": bool(row["override"]),
        "details": dict(row["details"] or {}),
    }


def entry_row(referral_id: str, seq: int, at: datetime, draft: EntryDraft) -> dict[str, Any]:
    """The column values of entry number ``seq``, before it is chained (``prev_hash`` and
    ``hash`` are added by whoever appends it: ``Change.record``)."""
    return {
        "referral_id": referral_id,
        "seq": seq,
        "at": at,
        "kind": draft.kind,
        "actor_id": draft.actor.id,
        "actor_role": draft.actor.role,
        "actor_agency_id": draft.actor.agency_id,
        "event": draft.event,
        "from_state": draft.from_state,
        "to_state": draft.to_state,
        "consent_grant_id": draft.consent_grant_id,
        "disclosed_to": draft.disclosed_to,
        "disclosed_fields": list(draft.disclosed_fields),
        "override": draft.override,
        "details": dict(draft.details),
    }
