"""What stands behind a disclosure: a covering consent grant, or an override with a written
justification and a sign-off; and the sealing of identifying data with the case key."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select

from sop_engine.crypto import open_sealed, seal, unwrap_case_key
from sop_engine.errors import ConsentMissing, InvalidInput
from sop_engine.language.spec import BUILTIN_FIELDS, SopSpec, TransitionSpec
from sop_engine.persistence import tables
from sop_engine.runtime import consent
from sop_engine.runtime.change import Change, handoff_stage
from sop_engine.runtime.choice import EventRequest
from sop_engine.runtime.recipients import find_recipient
from sop_engine.runtime.services import Services

__all__ = [
    "MIN_JUSTIFICATION",
    "categories_of",
    "check_override",
    "disclosed_values",
    "handoff_grant_withdrawn",
    "seal_facts",
    "sealed_note",
]

MIN_JUSTIFICATION = 20
"""Characters: a written justification is a sentence, not a tick box."""

_D = tables.disclosures
_W = tables.consent_withdrawals
_K = tables.case_keys


def check_override(t: TransitionSpec, request: EventRequest) -> dict[str, Any]:
    o = request.override
    assert t.override is not None
    if o is None:
        raise ConsentMissing(
            f"{t.event!r} shares data without consent: it needs an override with a reason "
            f"({', '.join(t.override.reasons)}), a written justification and the sign-off of a "
            f"{t.override.sign_off}"
        )
    if o.get("reason") not in t.override.reasons:
        raise InvalidInput(
            f"override.reason must be one of {', '.join(t.override.reasons)}",
            field="override.reason",
        )
    justification = o.get("justification")
    if not isinstance(justification, str) or len(justification.strip()) < MIN_JUSTIFICATION:
        raise InvalidInput(
            "override.justification must be a written justification of at least "
            f"{MIN_JUSTIFICATION} characters",
            field="override.justification",
        )
    signer, signer_role = o.get("signed_off_by"), o.get("signed_off_role")
    if not isinstance(signer, str) or not signer or signer_role != t.override.sign_off:
        raise InvalidInput(
            f"override needs the sign-off of a {t.override.sign_off} "
            "(signed_off_by, signed_off_role)",
            field="override.signed_off_by",
        )
    if signer == request.actor.id:
        raise InvalidInput("the person who signs off an override cannot be the one who asks for it",
                           field="override.signed_off_by")  # fmt: skip
    return {"reason": o["reason"], "signed_off_by": signer, "signed_off_role": signer_role}


def handoff_grant_withdrawn(
    conn: Connection,
    services: Services,
    spec: SopSpec,
    ref: Row[Any],
    now: datetime,
    *,
    region: str | None = None,
) -> str | None:
    """When the referral waits in a handoff sent under a grant since withdrawn (and no other
    grant covers it), the handoff's name; only revoke and decline are then allowed. The
    handoff is the one the case's state is a stage of, or parallel handoff ``region``."""
    at = (ref.handoffs or {}).get(region) if region is not None else ref.state
    stage = handoff_stage(spec, at) if at is not None else None
    if stage is None:
        return None
    h = spec.handoffs[stage[0]]
    sent = conn.execute(
        select(_D.c.grant_id, _D.c.override)
        .where(_D.c.referral_id == ref.id, _D.c.agency_slot == h.to)
        .order_by(_D.c.id.desc())
        .limit(1)
    ).first()
    if sent is None or sent.override or sent.grant_id is None:
        return None
    withdrawn = conn.execute(select(_W.c.grant_id).where(_W.c.grant_id == sent.grant_id)).first()
    if withdrawn is None or h.consent is None:
        return None
    scope = spec.consent_scopes[h.consent]
    agency_id = (ref.agencies or {}).get(h.to)
    still = consent.covering_grant(
        conn,
        referral_id=ref.id,
        scope=scope,
        recipient=find_recipient(conn, services.directory, agency_id) if agency_id else None,
        categories=categories_of(spec, h.dataset),
        now=now,
    )
    return None if still is not None else h.name


def categories_of(spec: SopSpec, fields: tuple[str, ...]) -> set[str]:
    cats = set()
    for f in fields:
        if f in BUILTIN_FIELDS:
            continue
        category = spec.facts[f].category
        if category is not None:
            cats.add(category)
    return cats


def seal_facts(
    conn: Connection, services: Services, change: Change, identifying: Mapping[str, Any]
) -> None:
    key_row = conn.execute(select(_K).where(_K.c.referral_id == change.ref.id)).first()
    if key_row is None:
        raise InvalidInput(
            "this case was erased: identifying facts can no longer be recorded", field="facts"
        )
    case_key = unwrap_case_key(services.keyring, key_row.master_key_id, key_row.wrapped_key)
    aad = change.ref.id.encode()
    current = open_sealed(case_key, change.sealed, associated_data=aad) if change.sealed else {}
    current.update(identifying)
    change.sealed = seal(case_key, current, associated_data=aad)
    change.sealed_fields = sorted(k for k, v in current.items() if v is not None)


def disclosed_values(
    conn: Connection, services: Services, change: Change, fields: tuple[str, ...]
) -> tuple[dict[str, Any], bytes | None]:
    """The values of ``fields`` as they are now, to keep with the disclosure: the plain ones
    as they are, the identifying ones sealed with the case key (None when there are none)."""
    spec = change.spec
    plain = {f: change.facts.get(f) for f in fields if f in spec.facts and f in change.facts}
    secret = [f for f in fields if f in change.sealed_fields]
    if not secret or change.sealed is None:
        return plain, None
    key_row = conn.execute(select(_K).where(_K.c.referral_id == change.ref.id)).first()
    if key_row is None:
        return plain, None
    case_key = unwrap_case_key(services.keyring, key_row.master_key_id, key_row.wrapped_key)
    aad = change.ref.id.encode()
    opened = open_sealed(case_key, change.sealed, associated_data=aad)
    for f in secret:
        plain.pop(f, None)
    snapshot = {f: opened.get(f) for f in secret}
    return plain, seal(case_key, snapshot, associated_data=aad)


def sealed_note(conn: Connection, services: Services, change: Change, text: str) -> str:
    """Free text (an override's justification) sealed with the case key, as hex."""
    key_row = conn.execute(select(_K).where(_K.c.referral_id == change.ref.id)).first()
    if key_row is None:
        raise InvalidInput("this case was erased", field="override")
    case_key = unwrap_case_key(services.keyring, key_row.master_key_id, key_row.wrapped_key)
    return seal(case_key, {"text": text}, associated_data=change.ref.id.encode()).hex()
