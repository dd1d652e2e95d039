"""The consent ledger's operations: record a grant, withdraw it, acknowledge a withdrawal.

Each is one transaction that also appends to the referral's timeline. Withdrawing tells
every agency that already holds data under the grant (a notification and a task asking it to
acknowledge), and blocks the handoffs that depend on it (see ``fire``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from sop_engine.clock import utc
from sop_engine.errors import InvalidInput, NotFound
from sop_engine.language.schema import did_you_mean
from sop_engine.language.spec import ConsentScope, SopSpec
from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.change import Change, load_referral
from sop_engine.runtime.consent import age_band, check_basis, scope_country
from sop_engine.runtime.recipients import check_slot, recipient
from sop_engine.runtime.services import Services
from sop_engine.timeline.entries import EntryDraft

__all__ = [
    "GrantRecord",
    "acknowledge_withdrawal",
    "grant_consent",
    "list_grants",
    "withdraw_consent",
]

_R = tables.referrals
_G = tables.consent_grants
_W = tables.consent_withdrawals
_D = tables.disclosures
_TK = tables.tasks

WITHDRAWAL_TEMPLATE = "consent_withdrawn"
STOP_USING = "Consent was withdrawn: stop using and sharing this case's data, and acknowledge"
FOCAL_POINT = "agency_focal_point"


@dataclass(frozen=True, slots=True)
class GrantRecord:
    id: str
    scope: str
    purpose: str
    recipient_slot: str
    recipient_agency_id: str | None
    recipient_types: tuple[str, ...] | None
    """The agency types agreed to when no one agency is named (None: any of the slot's)."""
    data_categories: tuple[str, ...]
    country: str
    given_by: str
    assent: str
    age_band: str
    granted_at: datetime
    expires_at: datetime | None
    withdrawn_at: datetime | None


def grant_consent(
    services: Services,
    case_code: str,
    *,
    scope: str,
    actor: Actor,
    given_by: str,
    survivor_age: int | None = None,
    assent: str = "not_required",
    substitute_reason: str | None = None,
    recipient_agency_id: str | None = None,
    recipient_agency_type: str | None = None,
    data_categories: Sequence[str] | None = None,
    country: str | None = None,
    expires_at: datetime | None = None,
) -> GrantRecord:
    """Record consent for one of the SOP's consent scopes.

    The survivor's age decides who may consent (see :mod:`consent`); it is taken from the
    referral's ``survivor_age`` fact when not given. ``expires_at`` defaults to the scope's
    ``valid_for``.

    What she agrees to is recorded as given: ``recipient_agency_id``, one agency of the
    directory fit for the scope's slot (by default the one filling the slot already, such as
    the managing agency for case management); else ``recipient_agency_type`` (default: any type the
    slot takes) in ``country`` (default: the scope's, else its slot's, else a national SOP's
    country; a scope that says none needs it); and ``data_categories``, the scope's or fewer
    (default: all of the scope's).
    """
    with services.db.begin() as conn:
        ref = load_referral(conn, case_code)
        spec = services.sop(ref.sop_key, ref.sop_version).spec
        found = spec.consent_scopes.get(scope)
        if found is None:
            hint = did_you_mean(scope, spec.consent_scopes)
            raise InvalidInput(
                f"unknown consent scope {scope!r}" + (f" ({hint})" if hint else ""), field="scope"
            )
        age = survivor_age if survivor_age is not None else (ref.facts or {}).get("survivor_age")
        if not isinstance(age, int) or isinstance(age, bool):
            raise InvalidInput(
                "record the survivor's age (survivor_age) before consent: "
                "who may consent depends on it",
                field="survivor_age",
            )
        band = check_basis(age, given_by, assent, substitute_reason)
        now = services.clock.now()
        if expires_at is not None:
            expires_at = utc(expires_at)
            if expires_at <= now:
                raise InvalidInput("expires_at is in the past", field="expires_at")
        elif found.valid_for is not None:
            expires_at = now + found.valid_for
        grant_id = str(uuid.uuid4())
        agreed = _agreed(
            conn,
            services,
            spec,
            found,
            ref,
            agency_id=recipient_agency_id,
            agency_type=recipient_agency_type,
            categories=data_categories,
            country=country,
        )
        conn.execute(
            _G.insert().values(
                id=grant_id,
                referral_id=ref.id,
                scope=found.name,
                purpose=found.purpose,
                recipient_slot=found.recipient,
                recipient_agency_id=agreed.agency_id,
                recipient_types=list(agreed.types) if agreed.types is not None else None,
                data_categories=list(agreed.categories),
                country=agreed.country,
                given_by=given_by,
                assent=assent,
                survivor_age=age,
                granted_at=now,
                expires_at=expires_at,
                recorded_by=actor.id,
            )
        )
        change = Change.open(conn, ref, spec, now)
        change.record(
            EntryDraft(
                kind="consent_granted",
                actor=actor,
                consent_grant_id=grant_id,
                details={
                    "scope": found.name,
                    "recipient": found.recipient,
                    "recipient_agency_id": agreed.agency_id,
                    "recipient_types": list(agreed.types) if agreed.types is not None else None,
                    "data_categories": list(agreed.categories),
                    "country": agreed.country,
                    "given_by": given_by,
                    "assent": assent,
                    "age_band": band.name,
                    "substitute": given_by in ("trusted_adult", "caseworker"),
                    "expires_at": expires_at.isoformat() if expires_at else None,
                },
            )
        )
        change.write()
    return GrantRecord(grant_id, found.name, found.purpose, found.recipient, agreed.agency_id,
                       agreed.types, agreed.categories, agreed.country, given_by, assent,
                       band.name, now, expires_at, None)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Agreed:
    types: tuple[str, ...] | None
    categories: tuple[str, ...]
    country: str
    agency_id: str | None


def _agreed(
    conn: Any,
    services: Services,
    spec: SopSpec,
    scope: ConsentScope,
    ref: Any,
    *,
    agency_id: str | None,
    agency_type: str | None,
    categories: Sequence[str] | None,
    country: str | None,
) -> _Agreed:
    """Check what the survivor agrees to against the scope; refuse anything beyond it."""
    chosen = tuple(dict.fromkeys(categories)) if categories is not None else scope.data_categories
    beyond = [c for c in chosen if c not in scope.data_categories]
    if beyond or not chosen:
        raise InvalidInput(
            f"data_categories must be some of scope {scope.name!r}'s: "
            f"{', '.join(scope.data_categories)}"
            + (f" (not {', '.join(beyond)})" if beyond else ""),
            field="data_categories",
        )
    slot = spec.agencies.get(scope.recipient)
    slot_types = slot.types if slot is not None else ()
    origin, destination = ref.origin_country, ref.destination_country
    covered = scope_country(spec, scope, origin, destination)
    if country is not None:
        if covered not in ("any", country):
            raise InvalidInput(
                f"scope {scope.name!r} covers {covered} only, not {country}", field="country"
            )
        covered = country
    if agency_id is None and agency_type is None:
        agency_id = (ref.agencies or {}).get(scope.recipient)
    if agency_id is not None:
        if agency_type is not None:
            raise InvalidInput(
                "name one agency or an agency type, not both", field="recipient_agency_type"
            )
        field = "recipient_agency_id"
        to = recipient(conn, services.directory, agency_id, field=field)
        check_slot(spec, scope.recipient, to, origin, destination, field=field)
        if covered not in ("any", to.country):
            raise InvalidInput(
                f"scope {scope.name!r} covers {covered} only: {to.describe()} is outside it",
                field=field,
            )
        return _Agreed(None, chosen, to.country, agency_id)
    if agency_type is not None and slot_types and agency_type not in slot_types:
        raise InvalidInput(
            f"recipient_agency_type must be one of {', '.join(slot_types)} "
            f"(the types scope {scope.name!r}'s recipient {scope.recipient!r} takes)",
            field="recipient_agency_type",
        )
    if covered == "any":
        raise InvalidInput(
            f"scope {scope.name!r} names no country: say in which country the survivor agrees "
            "to share (country), or name the agency (recipient_agency_id)",
            field="country",
        )
    types = (agency_type,) if agency_type is not None else (slot_types or None)
    return _Agreed(types, chosen, covered, None)


def withdraw_consent(services: Services, case_code: str, grant_id: str, actor: Actor) -> list[str]:
    """Withdraw a grant; return the agencies told (those already holding data under it)."""
    with services.db.begin() as conn:
        ref = load_referral(conn, case_code)
        grant = conn.execute(
            select(_G).where(_G.c.id == grant_id, _G.c.referral_id == ref.id)
        ).first()
        if grant is None:
            raise NotFound(f"no consent grant {grant_id} on referral {case_code}")
        if conn.execute(select(_W.c.grant_id).where(_W.c.grant_id == grant_id)).first() is not None:
            raise InvalidInput("this consent was already withdrawn", field="grant_id")
        spec = services.sop(ref.sop_key, ref.sop_version).spec
        now = services.clock.now()
        conn.execute(
            _W.insert().values(
                grant_id=grant_id, referral_id=ref.id, withdrawn_at=now, recorded_by=actor.id
            )
        )
        holders = sorted(
            set(
                conn.scalars(
                    select(_D.c.agency_id).where(
                        _D.c.referral_id == ref.id, _D.c.grant_id == grant_id
                    )
                )
            )
        )
        change = Change.open(conn, ref, spec, now)
        state = spec.states.get(ref.state)
        pending = state.handoff if state is not None and state.handoff else None
        if pending is None:  # or the open parallel handoff sent under this scope
            pending = next(
                (h for h in ref.handoffs or {} if spec.handoffs[h].consent == grant.scope), None
            )
        change.record(
            EntryDraft(
                kind="consent_withdrawn",
                actor=actor,
                consent_grant_id=grant_id,
                details={"scope": grant.scope, "holders_told": holders, "pending_handoff": pending},
            )
        )
        for agency_id in holders:
            change.notify(
                WITHDRAWAL_TEMPLATE,
                FOCAL_POINT,
                agency_id,
                {"event": "consent_withdrawn", "state": ref.state, "scope": grant.scope,
                 "ask": STOP_USING},
            )  # fmt: skip
            change.add(
                "tasks",
                {
                    "id": str(uuid.uuid4()),
                    "referral_id": ref.id,
                    "state": None,
                    "name": "acknowledge_withdrawal",
                    "role": FOCAL_POINT,
                    "agency_slot": None,
                    "agency_id": agency_id,
                    "ask": STOP_USING,
                    "status": "open",
                    "due_at": now + timedelta(days=1),
                    "created_at": now,
                },
            )
        change.write()
    return holders


def acknowledge_withdrawal(services: Services, case_code: str, actor: Actor) -> int:
    """The actor's agency acknowledges a withdrawal; return how many of its tasks closed."""
    with services.db.begin() as conn:
        ref = load_referral(conn, case_code)
        spec = services.sop(ref.sop_key, ref.sop_version).spec
        now = services.clock.now()
        closed = conn.execute(
            update(_TK)
            .where(
                _TK.c.referral_id == ref.id,
                _TK.c.name == "acknowledge_withdrawal",
                _TK.c.agency_id == actor.agency_id,
                _TK.c.status == "open",
            )
            .values(status="done", closed_at=now, closed_by_event="withdrawal_acknowledged")
        ).rowcount
        if not closed:
            raise NotFound(
                f"no withdrawal of consent waits for your agency's acknowledgement on {case_code}"
            )
        change = Change.open(conn, ref, spec, now)
        change.record(EntryDraft(kind="withdrawal_acknowledged", actor=actor))
        change.write()
        return int(closed)


def list_grants(services: Services, case_code: str) -> list[GrantRecord]:
    with read_transaction(services.db) as conn:
        ref = load_referral(conn, case_code)
        rows = conn.execute(
            select(_G, _W.c.withdrawn_at)
            .join(_W, _W.c.grant_id == _G.c.id, isouter=True)
            .where(_G.c.referral_id == ref.id)
            .order_by(_G.c.granted_at)
        ).all()
    return [
        GrantRecord(
            r.id,
            r.scope,
            r.purpose,
            r.recipient_slot,
            r.recipient_agency_id,
            tuple(r.recipient_types) if r.recipient_types is not None else None,
            tuple(r.data_categories),
            r.country,
            r.given_by,
            r.assent,
            age_band(r.survivor_age).name,
            r.granted_at,
            r.expires_at,
            r.withdrawn_at,
        )
        for r in rows
    ]
