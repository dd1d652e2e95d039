"""Idempotency keys for the operations besides ``fire``: recording, withdrawing and
acknowledging consent, and the steps of a case transfer.

``fire`` keeps its key in its own transaction. The consent ledger's operations each open a
transaction of their own, so :func:`run_once` brackets one instead: it reserves the key
(actor, operation, key) first, runs the operation, then stores its result, which every retry
with the same key and the same request gets back. A retry while the first request is still
running is a conflict (``ConcurrentChange``: try again in a moment); the same key with a
different request is refused (``IdempotencyKeyReused``). An operation that fails frees the
key, so that the corrected request may use it again.

The reservation and the operation are two transactions: should the process die between the
operation and storing its result, the reservation is taken over once :data:`LEASE` has
passed and the operation runs again. For these operations that is benign: a second grant
records the same consent twice on the timeline, and a second withdrawal or acknowledgement
is refused (422, 404) rather than repeated, as is a second step of a transfer (a second
request while the first is pending, an answer to a transfer already answered: 409).

Keys share the ``idempotency_keys`` table with ``fire``; each is stored as the operation's
name and the SHA-256 of the client's key, so that a key used for an event and for a consent
are two keys, and the stored key has a bounded length whatever the client sent. The request
is kept only as its HMAC under a server key (:mod:`sop_engine.runtime.fingerprints`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from sop_engine.errors import ConcurrentChange, IdempotencyKeyReused, NotFound
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.fingerprints import RequestFingerprint, fingerprint
from sop_engine.runtime.services import Services

__all__ = ["LEASE", "OPERATIONS", "run_once"]

_I = tables.idempotency_keys
_R = tables.referrals

OPERATIONS = (
    "consent.grant",
    "consent.withdraw",
    "withdrawal.acknowledge",
    "transfer.request",
    "transfer.accept",
    "transfer.decline",
    "transfer.cancel",
)
"""The operations whose keys this module keeps (``fire`` keeps its own)."""

LEASE = timedelta(minutes=5)
"""How long a reservation whose request never finished blocks its key."""

_PENDING = {"status": "pending"}


def _stored_key(operation: str, key: str) -> str:
    return f"{operation}:{hashlib.sha256(key.encode('utf-8')).hexdigest()}"


def run_once(
    services: Services,
    actor: Actor,
    key: str | None,
    *,
    operation: str,
    case_code: str,
    request: Mapping[str, Any],
    run: Callable[[], Mapping[str, Any]],
) -> tuple[dict[str, Any], bool]:
    """Run ``run`` once per (actor, operation, key); return its JSON result and whether it was
    replayed. ``request`` (JSON values) is what a retry must repeat; without a key, ``run``
    simply runs."""
    if operation not in OPERATIONS:
        raise ValueError(f"operation must be one of {OPERATIONS}")
    if key is None:
        return dict(run()), False
    stored = _stored_key(operation, key)
    request_mac = fingerprint(
        services.keyring, {"operation": operation, "case_code": case_code, "request": request}
    )
    replay = _reserve(services, actor, stored, case_code, request_mac)
    if replay is not None:
        return replay, True
    which = (_I.c.actor_id == actor.id, _I.c.key == stored)
    try:
        result = dict(run())
    except BaseException:
        with services.db.begin() as conn:
            conn.execute(delete(_I).where(*which))
        raise
    with services.db.begin() as conn:
        conn.execute(update(_I).where(*which).values(result={"status": "done", "result": result}))
    return result, False


def _reserve(
    services: Services, actor: Actor, stored: str, case_code: str, request_mac: RequestFingerprint
) -> dict[str, Any] | None:
    """Reserve the key; or return the result stored under it; or refuse."""
    busy = ConcurrentChange(
        "a request with this Idempotency-Key is still being processed; retry in a moment"
    )
    now = services.clock.now()
    which = (_I.c.actor_id == actor.id, _I.c.key == stored)
    try:
        with services.db.begin() as conn:
            referral_id = conn.execute(
                select(_R.c.id).where(_R.c.case_code == case_code)
            ).scalar_one_or_none()
            if referral_id is None:
                raise NotFound(f"no referral {case_code}")
            seen = conn.execute(select(_I).where(*which)).first()
            if seen is None:
                conn.execute(
                    _I.insert().values(
                        actor_id=actor.id,
                        key=stored,
                        referral_id=referral_id,
                        request_hash=request_mac.stored,
                        result=_PENDING,
                        created_at=now,
                    )
                )
                return None
            if not request_mac.matches(seen.request_hash):
                raise IdempotencyKeyReused(
                    "this idempotency key was already used for a different request",
                    field="Idempotency-Key",
                )
            if seen.result.get("status") == "done":
                return dict(seen.result["result"])
            if now - seen.created_at < LEASE:
                raise busy
            taken = conn.execute(
                update(_I).where(*which, _I.c.created_at == seen.created_at).values(created_at=now)
            ).rowcount
            if not taken:
                raise busy
            return None
    except IntegrityError:
        # Another request reserved the same key between our read and our insert.
        raise busy from None
