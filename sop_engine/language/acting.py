"""Stage 5c: who acts. Every transition names the agency slots whose agency may fire it
(``agencies``, by default the managing agency); the compiler refuses an SOP whose words and
slots disagree, so that no agency can fire what the SOP does not give it:

* a role that works at one slot (``roles: {x: {agency: slot}}``) on a transition that slot may
  not fire: the role's holders could never fire it, or the SOP forgot to name the slot (the
  managing agency may stand for any slot except one that receives a handoff);
* a slot named on a transition that none of its roles can work at;
* a transition entering a handoff that another agency than the handoff's ``sender`` could
  fire (the sender alone sends, and revokes);
* a handoff whose receiving role works at another slot than the one it receives at.

Escalations act for the managing agency only; that rule is checked with the rest of the
ladder in :mod:`checks`.
"""

from __future__ import annotations

from sop_engine.errors import Problem
from sop_engine.language.report import Report, entered_handoff, transition_state, what
from sop_engine.language.spec import MANAGING_AGENCY, RoleSpec, SopSpec, TransitionSpec, Where

__all__ = ["acting_problems", "slot_names"]


def slot_names(slots: tuple[str, ...]) -> str:
    """``the managing agency, 'receiving_focal_point'``: slots as a message names them."""
    return ", ".join("the managing agency" if s == MANAGING_AGENCY else repr(s) for s in slots)


def _works_at(role: RoleSpec | None, slot: str, spec: SopSpec) -> bool:
    if role is None or slot == MANAGING_AGENCY:
        return True
    if role.agency is not None:
        return role.agency == slot
    types = spec.agencies[slot].types if slot in spec.agencies else ()
    return not role.agency_types or not types or bool(set(role.agency_types) & set(types))


def _where(spec: SopSpec, t: TransitionSpec, key: str) -> Where:
    if t.handoff is None:
        return t.where.of(key)
    h = spec.handoffs[t.handoff]
    return h.where.of({"roles": "role" if t.answers_handoff else "sender_roles"}.get(key, "sender"))


def _transition(r: Report, spec: SopSpec, t: TransitionSpec) -> None:
    state, ctx = transition_state(spec, t), what(t)
    receiving = {h.to for h in spec.handoffs.values()}
    for name in t.roles:
        role = spec.roles.get(name)
        if role is None or role.agency is None or role.agency in t.agencies:
            continue
        # The managing agency may fill any slot but those it sends referrals to.
        if MANAGING_AGENCY not in t.agencies or role.agency in receiving:
            r.add(
                _where(spec, t, "roles"),
                f"{ctx}role {name!r} works at {role.agency!r}, which may not fire it "
                f"(agencies: {slot_names(t.agencies)}): name {role.agency!r} in 'agencies' "
                "or give the transition to another role",
                state=state,
            )
    for slot in t.agencies:
        if slot in spec.agencies and not any(_works_at(spec.roles.get(n), slot, spec)
                                             for n in t.roles):  # fmt: skip
            r.add(
                _where(spec, t, "agencies"),
                f"{ctx}none of its roles ({', '.join(t.roles)}) works at {slot!r}, "
                "so nobody there could fire it",
                state=state,
            )
    h = entered_handoff(spec, t)
    if h is not None and set(t.agencies) != {h.sender}:
        r.add(
            _where(spec, t, "agencies"),
            f"{ctx}enters handoff {h.name!r}, which {slot_names((h.sender,))} sends and alone "
            f"may revoke, but {slot_names(t.agencies)} could fire it: say "
            f"'agencies: [{h.sender}]' (or the handoff's 'sender')",
            state=state,
        )


def acting_problems(spec: SopSpec) -> list[Problem]:
    """Every transition and handoff whose acting agencies disagree with its roles."""
    r = Report(spec)
    for t in spec.transitions:
        if t.handoff is None or t.answers_handoff or t.action == "revoke":
            _transition(r, spec, t)
    for h in spec.handoffs.values():
        role = spec.roles.get(h.role)
        if role is not None and role.agency is not None and role.agency != h.to:
            r.add(
                h.where.of("role"),
                f"handoff: role {h.role!r} works at {role.agency!r}, but the referral is "
                f"received at {h.to!r}",
                state=h.name,
            )
    return r.problems
