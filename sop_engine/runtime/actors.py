"""Who acts: a user in a role at an agency, or the engine itself."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SYSTEM", "Actor"]


@dataclass(frozen=True, slots=True)
class Actor:
    """A person acting in one role for one agency. ``id`` is a user id, never a name.

    ``agency_types`` are the types of her agency as the service directory lists them
    (``ngo``, ``health``, ...); an SOP role restricted to some agency types is refused to an
    actor whose agency has none of them. Empty means the agency's types are not known (an
    agency missing from the directory): the restriction is then not checked, and the agency
    checks on the referral still apply.
    """

    id: str
    role: str
    agency_id: str | None = None
    agency_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.agency_types, str):
            raise TypeError("agency_types is a tuple of types, such as ('ngo',)")


SYSTEM = Actor(id="system", role="system", agency_id=None)
"""The engine itself, when a deadline's escalation fires an event."""
