"""What a receiving agency may read of a referral: exactly the fields disclosed to it, while
the basis of each disclosure still stands.

A disclosure (a row of ``disclosures``: the agency, the fields with their values as
disclosed, a consent grant or an override) stays readable while

- its grant is neither withdrawn nor expired, or
- it was made under an override (no grant to withdraw: life at risk, a mandated report).

The fields an agency may read are the union of those of its readable disclosures; fields
only ever disclosed under a withdrawn or expired grant are *withheld*. Each field shows
its value as it was disclosed (the newest readable disclosure of it), not as it is now: what
changed afterwards reaches the agency only by being disclosed again. Identifying fields
are decrypted with the case key; once the case is erased (its key deleted) they are withheld
too, whatever the basis. Every read, and every refused attempt, is written to the access log
once it is decided, before the answer leaves (see :mod:`sop_engine.runtime.access_log`).

Refusals:

- an agency that takes no part in the referral, or a case code that does not exist:
  :class:`~sop_engine.errors.NotFound` with the same message, so existence does not leak;
- an agency that takes part but was disclosed nothing: ``NotFound``;
- an agency whose every disclosure lost its grant (withdrawn or expired):
  :class:`DisclosureWithdrawn`, a :class:`~sop_engine.errors.ConsentMissing`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select

from sop_engine.crypto import open_sealed, unwrap_case_key
from sop_engine.errors import ConsentMissing, NotFound
from sop_engine.language.spec import BUILTIN_FIELDS, SopSpec
from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction
from sop_engine.runtime.access_log import append_access
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.change import SELECT_BY_CASE_CODE
from sop_engine.runtime.services import Services

__all__ = [
    "READ_ACTION",
    "DisclosedFields",
    "DisclosedView",
    "DisclosureBasis",
    "DisclosureWithdrawn",
    "as_disclosed",
    "disclosed_fields",
    "held_by",
    "is_identifying",
    "read_disclosed",
    "takes_part",
]

READ_ACTION = "disclosed.read"
"""The access log's action for a consent-scoped read."""

_D = tables.disclosures
_G = tables.consent_grants
_W = tables.consent_withdrawals
_K = tables.case_keys


class DisclosureWithdrawn(ConsentMissing):
    """Everything disclosed to the agency was disclosed under consent since withdrawn (or
    expired): it may no longer be read. ``fields`` names (never values) what was withheld."""

    def __init__(self, message: str, *, fields: Sequence[str] = ()) -> None:
        self.fields = tuple(fields)
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class DisclosureBasis:
    """One disclosure to the agency and whether it may still be read."""

    at: datetime
    fields: tuple[str, ...]
    grant_id: str | None
    override: bool
    readable: bool
    lapsed: str | None = None
    """Why it may no longer be read: ``withdrawn`` or ``expired``; None while readable."""
    values: Mapping[str, Any] | None = None
    """The non-identifying fields' values as disclosed (None: kept from before values were)."""
    sealed_values: bytes | None = None
    """The identifying fields' values as disclosed, sealed with the case key."""


@dataclass(frozen=True, slots=True)
class DisclosedFields:
    """The disclosures to one agency, and the field names it may and may not read."""

    disclosures: tuple[DisclosureBasis, ...]
    readable: frozenset[str]
    withheld: frozenset[str]
    """Fields disclosed only under grants since withdrawn or expired."""


@dataclass(frozen=True, slots=True)
class DisclosedView:
    """The answer to a consent-scoped read: field name -> value, disclosed fields only."""

    case_code: str
    sop_key: str
    sop_version: int
    state: str
    erased: bool
    fields: Mapping[str, Any]
    withheld: tuple[str, ...]
    """Names of fields disclosed to the agency that it may no longer read (withdrawn or
    expired consent, or identifying data of an erased case)."""
    disclosures: tuple[DisclosureBasis, ...]


def takes_part(ref: Row[Any], agency_id: str | None) -> bool:
    """Whether the agency manages the referral or fills one of its agency slots."""
    if agency_id is None:
        return False
    return agency_id == ref.owner_agency_id or agency_id in (ref.agencies or {}).values()


def is_identifying(spec: SopSpec, name: str) -> bool:
    """Whether a field is sealed with the case key (its own mark or its data category's)."""
    if name in BUILTIN_FIELDS:
        return False
    fact = spec.facts.get(name)
    if fact is None:
        return True  # unknown to this SOP: treat as the most protected kind
    category = spec.data_categories.get(fact.category or "")
    return fact.identifying or (category is not None and category.identifying)


def disclosed_fields(
    conn: Connection, referral_id: str, agency_id: str, now: datetime
) -> DisclosedFields:
    """The disclosures of a referral to ``agency_id``, oldest first, each judged readable or
    not at ``now`` (see the module docstring)."""
    rows = conn.execute(
        select(
            _D.c.at,
            _D.c.fields,
            _D.c.grant_id,
            _D.c.override,
            _D.c.field_values,
            _D.c.sealed_values,
            _G.c.expires_at,
            _W.c.withdrawn_at,
        )
        .select_from(
            _D.outerjoin(_G, _G.c.id == _D.c.grant_id).outerjoin(_W, _W.c.grant_id == _D.c.grant_id)
        )
        .where(_D.c.referral_id == referral_id, _D.c.agency_id == agency_id)
        .order_by(_D.c.id)
    ).all()
    bases = []
    for r in rows:
        lapsed = None
        if not r.override:
            if r.grant_id is None or r.withdrawn_at is not None:
                lapsed = "withdrawn"
            elif r.expires_at is not None and r.expires_at <= now:
                lapsed = "expired"
        fields = tuple(r.fields or ())
        bases.append(
            DisclosureBasis(
                r.at,
                fields,
                r.grant_id,
                bool(r.override),
                lapsed is None,
                lapsed,
                r.field_values,
                r.sealed_values,
            )
        )
    readable = frozenset(f for b in bases if b.readable for f in b.fields)
    withheld = frozenset(f for b in bases if not b.readable for f in b.fields) - readable
    return DisclosedFields(tuple(bases), readable, withheld)


def held_by(services: Services, case_code: str, agency_id: str) -> DisclosedFields:
    """:func:`disclosed_fields` by case code, now; NotFound for an unknown code."""
    with read_transaction(services.db) as conn:
        ref = conn.execute(SELECT_BY_CASE_CODE, {"p_code": case_code}).first()
        if ref is None:
            raise NotFound(f"no referral {case_code}")
        return disclosed_fields(conn, ref.id, agency_id, services.clock.now())


def read_disclosed(services: Services, case_code: str, actor: Actor) -> DisclosedView:
    """The fields of ``case_code`` disclosed to the actor's agency, identifying ones
    decrypted, in one read-only transaction, then written to the access log; refusals are
    logged too (see the module docstring)."""
    now = services.clock.now()
    refusal: NotFound | DisclosureWithdrawn | None = None
    with read_transaction(services.db) as conn:
        ref = conn.execute(SELECT_BY_CASE_CODE, {"p_code": case_code}).first()
        referral_id = ref.id if ref is not None else None
        try:
            view = _read(conn, services, ref, case_code=case_code, actor=actor, now=now)
        except (NotFound, DisclosureWithdrawn) as exc:
            refusal = exc
    if refusal is not None:
        fields = refusal.fields if isinstance(refusal, DisclosureWithdrawn) else ()
        append_access(services, now, actor, READ_ACTION, referral_id=referral_id, fields=fields,
                      outcome="refused")  # fmt: skip
        raise refusal
    append_access(services, now, actor, READ_ACTION, referral_id=referral_id,
                  fields=list(view.fields))  # fmt: skip
    return view


def _read(
    conn: Connection,
    services: Services,
    ref: Row[Any] | None,
    *,
    case_code: str,
    actor: Actor,
    now: datetime,
) -> DisclosedView:
    if ref is None or actor.agency_id is None or not takes_part(ref, actor.agency_id):
        raise NotFound(f"no referral {case_code}")
    held = disclosed_fields(conn, ref.id, actor.agency_id, now)
    if not held.disclosures:
        raise NotFound(f"nothing of referral {case_code} was disclosed to your agency")
    if not held.readable:
        lapsed = " or ".join(sorted({b.lapsed for b in held.disclosures if b.lapsed}))
        raise DisclosureWithdrawn(
            f"the consent under which referral {case_code} was disclosed to your agency was "
            f"{lapsed}: its data may no longer be read",
            fields=sorted(held.withheld),
        )
    spec = services.sop(ref.sop_key, ref.sop_version).spec
    erased = ref.erased_at is not None
    shown = sorted(f for f in held.readable if not (erased and is_identifying(spec, f)))
    grants = [b.grant_id for b in held.disclosures if b.readable and b.grant_id]
    builtin = {"case_code": ref.case_code, "consent_reference": grants[-1] if grants else None}
    values = as_disclosed(conn, services, ref, held.disclosures, spec)
    values = {f: builtin[f] if f in BUILTIN_FIELDS else values.get(f) for f in shown}
    return DisclosedView(
        case_code=ref.case_code,
        sop_key=ref.sop_key,
        sop_version=ref.sop_version,
        state=ref.state,
        erased=erased,
        fields=values,
        withheld=tuple(sorted(held.withheld | (held.readable - set(shown)))),
        disclosures=held.disclosures,
    )


def as_disclosed(
    conn: Connection,
    services: Services,
    ref: Row[Any],
    disclosures: Sequence[DisclosureBasis],
    spec: SopSpec,
) -> dict[str, Any]:
    """Field -> its value as last disclosed under a basis that still stands: a value changed
    after its disclosure is not shown until it is disclosed again. Disclosures kept before
    values were (``values`` None) show the value as it is now. Identifying values are
    opened with the case key; once the case is erased they are gone."""
    readable = [b for b in disclosures if b.readable]
    case_key = None
    if any(b.sealed_values for b in readable) or any(b.values is None for b in readable):
        case_key = _case_key(conn, services, ref)
    current: dict[str, Any] | None = None
    values: dict[str, Any] = {}
    for b in readable:  # oldest first: the newest disclosure of a field wins
        if b.values is None:
            if current is None:
                current = {**(ref.facts or {}), **_opened(ref, case_key, ref.sealed)}
            values.update((f, current.get(f)) for f in b.fields)
            continue
        values.update((f, v) for f, v in b.values.items() if f in b.fields)
        secret = _opened(ref, case_key, b.sealed_values)
        values.update((f, v) for f, v in secret.items() if f in b.fields)
        for f in b.fields:
            if is_identifying(spec, f) and f not in secret:
                values.pop(f, None)
    return values


def _case_key(conn: Connection, services: Services, ref: Row[Any]) -> bytes | None:
    key = conn.execute(select(_K).where(_K.c.referral_id == ref.id)).first()
    if key is None:
        return None
    return unwrap_case_key(services.keyring, key.master_key_id, key.wrapped_key)


def _opened(ref: Row[Any], case_key: bytes | None, sealed: bytes | None) -> dict[str, Any]:
    if case_key is None or not sealed:
        return {}
    opened: dict[str, Any] = open_sealed(case_key, sealed, associated_data=ref.id.encode())
    return opened
