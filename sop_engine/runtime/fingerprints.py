"""Fingerprints of requests made with an idempotency key: what a retry must repeat.

An idempotency record keeps a fingerprint of its first request so that the same key sent
with another request is refused. A plain SHA-256 of the request would let anyone reading
the table confirm a guess of what it carried (a referral's identifying facts, a locality,
an age), so the fingerprint is an **HMAC-SHA256 under a server key**, derived from the
master key with HKDF (:func:`sop_engine.crypto.derive_key`, purpose :data:`PURPOSE`).

Why derived, not a setting of its own: every deployment already keeps the master key in its
secret store, and production refuses to start without it; a second secret would be one
more to lose. Derivation is deterministic, so fingerprints match in every API process and
after every restart. Master keys rotate: a fingerprint is made under the ring's current key
and matches under any key of the ring, so that records made before a rotation keep matching
until their master key is retired. (Once it is, a retry of such a key is refused as another
request: no request runs twice.)

Records written before migration 0006 hold :data:`RETIRED` instead of their old plain hash,
which the migration removed: such a record answers a retry with its first result without
comparing the request.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from sop_engine.crypto import MasterKeyring, derive_key
from sop_engine.timeline.chain import canonical_json

__all__ = ["PURPOSE", "RETIRED", "RequestFingerprint", "fingerprint"]

PURPOSE = "idempotency-request-mac/v1"
RETIRED = "retired:sha256"
"""What migration 0006 left in place of the plain hashes it removed."""


@cache
def _keys(ring: MasterKeyring) -> tuple[bytes, ...]:
    """The MAC keys of the ring, current first (cached: HKDF once per ring and process)."""
    return tuple(derive_key(k, PURPOSE) for k in ring.keys)


@dataclass(frozen=True, slots=True)
class RequestFingerprint:
    """A request's MAC under every key of the ring; :attr:`stored` is what a record keeps."""

    macs: tuple[str, ...]

    @property
    def stored(self) -> str:
        """The MAC under the ring's current key (64 hex digits)."""
        return self.macs[0]

    def matches(self, recorded: str) -> bool:
        """Whether a record's fingerprint is this request's (or predates fingerprints)."""
        if recorded == RETIRED:
            return True
        return any(hmac.compare_digest(recorded, mac) for mac in self.macs)


def fingerprint(ring: MasterKeyring, request: Mapping[str, Any]) -> RequestFingerprint:
    """The fingerprint of ``request`` (JSON values), through its canonical JSON."""
    body = canonical_json(dict(request))
    return RequestFingerprint(
        tuple(hmac.new(key, body, hashlib.sha256).hexdigest() for key in _keys(ring))
    )
