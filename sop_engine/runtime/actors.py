"""Who acts: a user in a role at an agency, or the engine itself."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SYSTEM", "Actor"]


@dataclass(frozen=True, slots=True)
class Actor:
    """A person acting in one role for one agency. ``id`` is a user id, never a name."""

    id: str
    role: str
    agency_id: str | None = None
    agency_type: str | None = None


SYSTEM = Actor(id="system", role="system", agency_id=None)
"""The engine itself, when a deadline's escalation fires an event."""
