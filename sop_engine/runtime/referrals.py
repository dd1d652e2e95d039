"""Creating, reading and erasing referrals.

A referral is created against one SOP version, pinned for life, with a random case code that
says nothing about the survivor. Its identifying facts are sealed with a fresh case key,
itself stored only wrapped by the master key; :func:`erase_referral` deletes that one key
row, after which the sealed facts (and sealed override justifications) are unreadable
everywhere, backups included once they expire.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, select
from sqlalchemy.exc import IntegrityError

from sop_engine.clock import utc
from sop_engine.crypto import new_case_key, open_sealed, seal, unwrap_case_key, wrap_case_key
from sop_engine.errors import IdempotencyKeyReused, InvalidInput, NotFound
from sop_engine.language.spec import SopSpec
from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction
from sop_engine.runtime.access import may_fire
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.change import SELECT_BY_CASE_CODE, Change
from sop_engine.runtime.clocks import open_incident_time_task, update_clocks, waiting_warnings
from sop_engine.runtime.facts import check_facts, split_identifying
from sop_engine.runtime.fingerprints import RequestFingerprint, fingerprint
from sop_engine.runtime.services import Services
from sop_engine.runtime.sop_dates import version_for_new_referral
from sop_engine.timeline.chain import GENESIS
from sop_engine.timeline.entries import EntryDraft

__all__ = [
    "ReferralView",
    "create_referral",
    "erase_referral",
    "handoffs_seen_by",
    "new_case_code",
    "read_referral",
    "referral_view",
]

_R = tables.referrals
_K = tables.case_keys
_I = tables.idempotency_keys

_CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
"""Crockford-like: no 0/O, 1/I/L or U, so codes survive being read out on a phone."""


def new_case_code() -> str:
    """A random case code such as ``R7KQ-M2XD-9PTA`` (about 59 bits)."""
    chars = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(12))
    return f"{chars[:4]}-{chars[4:8]}-{chars[8:]}"


@dataclass(frozen=True, slots=True)
class ReferralView:
    """A referral as the engine returns it. ``identifying`` is filled only when asked for."""

    id: str
    case_code: str
    sop_key: str
    sop_version: int
    state: str
    version: int
    origin_country: str
    destination_country: str
    owner_agency_id: str
    agencies: Mapping[str, Any]
    handoffs: Mapping[str, str]
    """The parallel handoffs open now, each to the state of its stage."""
    facts: Mapping[str, Any]
    sealed_fields: tuple[str, ...]
    incident_at: datetime | None
    disclosed_at: datetime | None
    created_at: datetime
    closed_at: datetime | None
    erased: bool
    available_events: tuple[str, ...] = ()
    identifying: Mapping[str, Any] | None = None
    warnings: tuple[str, ...] = ()
    """Given with a referral just created (its SOP version is due for review), else none."""


def handoffs_seen_by(
    spec: SopSpec,
    handoffs: Mapping[str, str],
    agencies: Mapping[str, Any],
    owner: str,
    agency_id: str | None,
) -> dict[str, str]:
    """The open parallel handoffs an agency may know of: every one, for the managing agency;
    for another, only those it receives or sends. That a justice referral is open is itself
    sensitive, and the clinic answering the health referral is never shown it."""
    if agency_id is not None and agency_id == owner:
        return dict(handoffs)
    return {
        name: stage
        for name, stage in handoffs.items()
        if agency_id is not None
        and name in spec.handoffs
        and agency_id
        in (agencies.get(spec.handoffs[name].to), agencies.get(spec.handoffs[name].sender))
    }


def create_referral(
    services: Services,
    *,
    sop_key: str,
    sop_version: int | None,
    actor: Actor,
    origin_country: str,
    destination_country: str,
    incident_at: datetime | None = None,
    disclosed_at: datetime | None = None,
    facts: Mapping[str, Any] | None = None,
    agencies: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
) -> ReferralView:
    """Open a referral in the SOP's initial state, in one transaction with its first timeline
    entry, its case key, the tasks and timers of the initial state, and the timers of the case
    clocks whose time is known (:mod:`clocks`; a task to establish the incident time when the
    clocks from it cannot start).

    With ``idempotency_key``, the key is stored in that same transaction: a retry by the same
    actor with the same key and the same request gets the referral the first one created (as
    it is now), never a second one; the same key with another request is refused
    (``IdempotencyKeyReused``).
    """
    if idempotency_key is not None:
        request = {
            "sop_key": sop_key,
            "sop_version": sop_version,
            "origin_country": origin_country,
            "destination_country": destination_country,
            "incident_at": incident_at.isoformat() if incident_at else None,
            "disclosed_at": disclosed_at.isoformat() if disclosed_at else None,
            "facts": dict(facts or {}),
            "agencies": dict(agencies or {}),
        }
        stored = "referral.create:" + hashlib.sha256(idempotency_key.encode()).hexdigest()
        request_mac = fingerprint(services.keyring, request)
        earlier = _created_under(services, actor, stored, request_mac)
        if earlier is not None:
            return read_referral(services, earlier, actor=actor)
        try:
            return _create(
                services, sop_key=sop_key, sop_version=sop_version, actor=actor,
                origin_country=origin_country, destination_country=destination_country,
                incident_at=incident_at, disclosed_at=disclosed_at, facts=facts,
                agencies=agencies, key=(stored, request_mac.stored),
            )  # fmt: skip
        except IntegrityError:
            # Another request with the same key won the race: its referral is the answer.
            earlier = _created_under(services, actor, stored, request_mac)
            if earlier is None:
                raise
            return read_referral(services, earlier, actor=actor)
    return _create(
        services, sop_key=sop_key, sop_version=sop_version, actor=actor,
        origin_country=origin_country, destination_country=destination_country,
        incident_at=incident_at, disclosed_at=disclosed_at, facts=facts, agencies=agencies,
        key=None,
    )  # fmt: skip


def _created_under(
    services: Services, actor: Actor, stored: str, request_mac: RequestFingerprint
) -> str | None:
    """The case code a creation under this key made, or None; refuses another request."""
    with read_transaction(services.db) as conn:
        seen = conn.execute(
            select(_I.c.request_hash, _I.c.result).where(
                _I.c.actor_id == actor.id, _I.c.key == stored
            )
        ).first()
    if seen is None:
        return None
    if not request_mac.matches(seen.request_hash):
        raise IdempotencyKeyReused(
            "this idempotency key was already used for a different request",
            field="Idempotency-Key",
        )
    code: str = seen.result["case_code"]
    return code


def _create(
    services: Services,
    *,
    sop_key: str,
    sop_version: int | None,
    actor: Actor,
    origin_country: str,
    destination_country: str,
    incident_at: datetime | None,
    disclosed_at: datetime | None,
    facts: Mapping[str, Any] | None,
    agencies: Mapping[str, str] | None,
    key: tuple[str, str] | None,
) -> ReferralView:
    now = services.clock.now()
    sop, warnings = version_for_new_referral(
        services.library, sop_key, sop_version, now, refuse_past_review=services.refuse_past_review
    )
    spec = sop.spec
    if actor.agency_id is None:
        raise InvalidInput("a referral is created by someone acting for an agency", field="actor")
    for name, code in (
        ("origin_country", origin_country),
        ("destination_country", destination_country),
    ):
        if not (isinstance(code, str) and len(code) == 2 and code.isalpha() and code.isupper()):
            raise InvalidInput(f"{name} must be an ISO 3166 alpha-2 code such as TH", field=name)
    j = spec.jurisdiction
    if j.is_corridor and (origin_country, destination_country) != (j.origin, j.destination):
        raise InvalidInput(
            f"{spec.ref} is the {j.origin} to {j.destination} corridor", field="destination_country"
        )
    for slot in agencies or {}:
        if slot not in spec.agencies:
            raise InvalidInput(f"unknown agency slot {slot!r}", field=f"agencies.{slot}")
    agencies = dict(agencies or {})
    own_slot = spec.roles[actor.role].agency if actor.role in spec.roles else None
    if own_slot is not None:
        # The creator's role belongs at a slot (a caseworker at case_agency): her agency
        # fills it, so that later steps (feedback to the managing agency) know where it is.
        agencies.setdefault(own_slot, actor.agency_id)
    checked = check_facts(spec, facts or {}, None)
    plain, identifying = split_identifying(spec, checked)
    referral_id = str(uuid.uuid4())
    case_key = new_case_key()
    key_id, wrapped = wrap_case_key(services.keyring, case_key)
    sealed = (
        seal(case_key, identifying, associated_data=referral_id.encode()) if identifying else None
    )
    row = {
        "id": referral_id,
        "case_code": new_case_code(),
        "sop_key": spec.key,
        "sop_version": spec.version,
        "state": spec.initial_state,
        "version": 1,
        "origin_country": origin_country,
        "destination_country": destination_country,
        "owner_agency_id": actor.agency_id,
        "agencies": agencies,
        "facts": plain,
        "sealed": sealed,
        "sealed_fields": sorted(k for k, v in identifying.items() if v is not None),
        "incident_at": utc(incident_at) if incident_at else None,
        "disclosed_at": utc(disclosed_at) if disclosed_at else None,
        "created_at": now,
        "updated_at": now,
        "closed_at": None,
        "erased_at": None,
        "timeline_seq": 0,
        "head_hash": GENESIS,
    }
    with services.db.begin() as conn:
        conn.execute(_R.insert().values(**row))
        conn.execute(
            _K.insert().values(
                referral_id=referral_id, master_key_id=key_id, wrapped_key=wrapped, created_at=now
            )
        )
        ref = conn.execute(select(_R).where(_R.c.id == referral_id)).one()
        change = Change.open(conn, ref, spec, now)
        change.record(
            EntryDraft(
                kind="created",
                actor=actor,
                to_state=spec.initial_state,
                details={
                    "sop": spec.ref,
                    "origin": origin_country,
                    "destination": destination_country,
                    **({"review_due": spec.review.isoformat()} if warnings else {}),
                },
            )
        )
        change.enter(spec.initial_state)
        waiting = update_clocks(conn, sop, change, actor, directory=services.directory)
        open_incident_time_task(change, spec.clocks, waiting)
        change.write(bump=False)
        if key is not None:
            conn.execute(
                _I.insert().values(
                    actor_id=actor.id,
                    key=key[0],
                    referral_id=referral_id,
                    request_hash=key[1],
                    result={"case_code": row["case_code"]},
                    created_at=now,
                )
            )
    view = read_referral(services, str(row["case_code"]), actor=actor)
    return replace(view, warnings=(*warnings, *waiting_warnings(waiting)))


def read_referral(
    services: Services,
    case_code: str,
    *,
    actor: Actor | None = None,
    reveal_identifying: bool = False,
) -> ReferralView:
    """A referral by case code; identifying facts are decrypted only when asked for."""
    with read_transaction(services.db) as conn:
        ref = conn.execute(SELECT_BY_CASE_CODE, {"p_code": case_code}).first()
        if ref is None:
            raise NotFound(f"no referral {case_code}")
        return referral_view(
            conn, services, ref, actor=actor, reveal_identifying=reveal_identifying
        )


def referral_view(
    conn: Connection,
    services: Services,
    ref: Row[Any],
    *,
    actor: Actor | None = None,
    reveal_identifying: bool = False,
) -> ReferralView:
    """The :class:`ReferralView` of a referral row read in the caller's transaction."""
    identifying: dict[str, Any] | None = None
    if reveal_identifying:
        key = conn.execute(select(_K).where(_K.c.referral_id == ref.id)).first()
        if key is None:
            identifying = {}
        else:
            case_key = unwrap_case_key(services.keyring, key.master_key_id, key.wrapped_key)
            identifying = (
                open_sealed(case_key, ref.sealed, associated_data=ref.id.encode())
                if ref.sealed
                else {}
            )
    spec = services.library.get(ref.sop_key, ref.sop_version).spec
    available: tuple[str, ...] = ()
    if actor is not None and ref.closed_at is None and ref.erased_at is None:
        available = tuple(
            dict.fromkeys(
                t.event
                for t in spec.transitions_from(ref.state, ref.handoffs or {})
                if may_fire(spec, t, actor, ref.owner_agency_id, ref.agencies or {})
            )
        )
    return ReferralView(
        id=ref.id,
        case_code=ref.case_code,
        sop_key=ref.sop_key,
        sop_version=ref.sop_version,
        state=ref.state,
        version=ref.version,
        origin_country=ref.origin_country,
        destination_country=ref.destination_country,
        owner_agency_id=ref.owner_agency_id,
        agencies=dict(ref.agencies or {}),
        handoffs=dict(ref.handoffs or {}),
        facts=dict(ref.facts or {}),
        sealed_fields=tuple(ref.sealed_fields or ()),
        incident_at=ref.incident_at,
        disclosed_at=ref.disclosed_at,
        created_at=ref.created_at,
        closed_at=ref.closed_at,
        erased=ref.erased_at is not None,
        available_events=available,
        identifying=identifying,
    )


def erase_referral(services: Services, case_code: str, actor: Actor) -> None:
    """Crypto-shred a referral: delete its case key; record the erasure on the timeline."""
    with services.db.begin() as conn:
        ref = conn.execute(SELECT_BY_CASE_CODE, {"p_code": case_code}).first()
        if ref is None:
            raise NotFound(f"no referral {case_code}")
        spec = services.library.get(ref.sop_key, ref.sop_version).spec
        conn.execute(delete(_K).where(_K.c.referral_id == ref.id))
        change = Change.open(conn, ref, spec, services.clock.now())
        change.record(
            EntryDraft(
                kind="erased", actor=actor, details={"sealed_fields": list(ref.sealed_fields or ())}
            )
        )
        change.write()
        conn.execute(_R.update().where(_R.c.id == ref.id).values(erased_at=change.now, sealed=None))
