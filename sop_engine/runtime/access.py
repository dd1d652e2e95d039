"""Who may fire which transition on a referral: role, agency type, and which agency.

The SOP says it, per transition: its ``roles``, and the agency slots whose agency may fire it
(``agencies``; by default the managing agency, the referral's owner). A handoff's answers
(acknowledge, accept, decline, deliver) belong to the agency filling its ``to`` slot; its
revoke to the agency filling its ``sender`` slot. Nothing follows from merely taking part in
a referral: an agency that was sent it fires only what its slot is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sop_engine.language.acting import slot_names
from sop_engine.language.spec import MANAGING_AGENCY, SopSpec, TransitionSpec
from sop_engine.runtime.actors import SYSTEM, Actor

__all__ = ["acting_agencies", "may_fire", "refusal"]


def acting_agencies(t: TransitionSpec, owner: str, agencies: Mapping[str, Any]) -> set[str]:
    """The agencies that may fire ``t`` on this referral: those filling its slots now."""
    found = {owner if slot == MANAGING_AGENCY else agencies.get(slot) for slot in t.agencies}
    return {a for a in found if isinstance(a, str)}


def refusal(
    spec: SopSpec, t: TransitionSpec, actor: Actor, owner: str, agencies: Mapping[str, Any]
) -> str | None:
    """Why ``actor`` may not fire ``t`` on this referral, or None when it may."""
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
    if actor.agency_id is not None and actor.agency_id in acting_agencies(t, owner, agencies):
        return None
    if t.answers_handoff:
        return f"only the agency that received the referral may {t.action} it"
    if t.action == "revoke":
        return "only the agency that sent the referral may revoke it"
    if actor.agency_id is None or (
        actor.agency_id != owner and actor.agency_id not in agencies.values()
    ):
        return "your agency does not take part in this referral"
    return f"{t.event!r} is for {slot_names(t.agencies)} of this referral, not your agency"


def may_fire(
    spec: SopSpec, t: TransitionSpec, actor: Actor, owner: str, agencies: Mapping[str, Any]
) -> bool:
    return refusal(spec, t, actor, owner, agencies) is None
