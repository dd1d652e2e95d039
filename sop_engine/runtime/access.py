"""Who may fire which transition on a referral: role, agency type, and which agency."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sop_engine.language.spec import SopSpec, TransitionSpec
from sop_engine.runtime.actors import SYSTEM, Actor

__all__ = ["may_fire", "refusal"]


def refusal(
    spec: SopSpec, t: TransitionSpec, actor: Actor, owner: str, agencies: Mapping[str, Any]
) -> str | None:
    """Why ``actor`` may not fire ``t`` on this referral, or None when it may.

    An agency acts on a referral when it manages it (the owner) or fills one of the SOP's
    agency slots for it (it was sent the referral). Answering a handoff (acknowledge, accept,
    decline, deliver) is for the receiving agency alone; revoking it, for the sender.
    """
    if actor == SYSTEM:
        return None
    if actor.role not in t.roles:
        return f"role {actor.role!r} may not fire {t.event!r} (roles: {', '.join(t.roles)})"
    role = spec.roles.get(actor.role)
    if (
        role
        and role.agency_types
        and actor.agency_types
        and not set(actor.agency_types) & set(role.agency_types)
    ):
        kinds = ", ".join(actor.agency_types)
        return (
            f"an agency of type {kinds} cannot hold role {actor.role!r} in this SOP "
            f"(types: {', '.join(role.agency_types)})"
        )
    if t.handoff is not None and not t.event.endswith(".revoke"):
        receiver = agencies.get(spec.handoffs[t.handoff].to)
        if actor.agency_id is None or actor.agency_id != receiver:
            return f"only the agency that received the referral may {t.event.split('.')[-1]} it"
        return None
    if actor.agency_id == owner or (
        actor.agency_id is not None and actor.agency_id in agencies.values()
    ):
        return None
    return "your agency does not take part in this referral"


def may_fire(
    spec: SopSpec, t: TransitionSpec, actor: Actor, owner: str, agencies: Mapping[str, Any]
) -> bool:
    return refusal(spec, t, actor, owner, agencies) is None
