"""The timeline's hash chain: each entry's hash covers its content and the previous hash.

Every timeline entry stores ``prev_hash`` (the hash of the entry before it, or
:data:`GENESIS` for the first) and its own hash, :func:`entry_hash` of ``prev_hash`` and the
entry's canonical JSON. :func:`verify_chain` walks a referral's entries in sequence order and
names the first one that does not fit.

What a valid chain proves, and what it does not:

- It proves that no entry was **changed, removed or reordered** between the first entry and
  the last one verified: any such edit breaks a hash or a link, and hiding it means
  rewriting the hash of every later entry.
- It does **not** prove that entries were not cut off the **end**: a truncated chain is still
  a valid chain. Nor does it stop someone with write access from rewriting the whole chain
  from the edit onwards. Both need the head hash (the last entry's hash) anchored outside the
  database: sent in a notification, written to an append-only log, or countersigned by
  another agency, and compared with the chain's head when verifying.
- It says nothing about whether an entry was true when written; only that it has not
  changed since.

Canonical JSON here means sorted keys, no whitespace, UTF-8 without ``\\u`` escapes, and
only JSON types: datetimes must already be ISO strings. Tuples hash like lists and any
mapping like a dict, so an entry hashes the same before and after a database round trip.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from sop_engine.jsonvalues import plain_json

__all__ = [
    "GENESIS",
    "HASH_MISMATCH",
    "PREV_HASH_MISMATCH",
    "ChainBreak",
    "canonical_json",
    "entry_hash",
    "verify_chain",
]

GENESIS: Final = "0" * 64
"""The ``prev_hash`` of a referral's first timeline entry."""

PREV_HASH_MISMATCH: Final = "prev_hash does not match the previous entry's hash"
"""Reason of a :class:`ChainBreak` where an entry was removed, inserted or moved."""

HASH_MISMATCH: Final = "hash does not match the entry's content"
"""Reason of a :class:`ChainBreak` where an entry's content or stored hash was changed."""

_HEX_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first timeline entry that does not fit the chain, and why."""

    index: int
    """Position in the sequence given to :func:`verify_chain`, from 0."""
    entry_id: Any
    reason: str
    """:data:`PREV_HASH_MISMATCH` or :data:`HASH_MISMATCH`."""


def canonical_json(obj: Any) -> bytes:
    """Deterministic UTF-8 JSON: sorted keys, no whitespace, non-ASCII kept as is.

    :raises TypeError: a value is not a JSON type (a datetime, bytes, a set…), or an object
        key is not a string.
    :raises ValueError: a float is NaN or infinite.
    """
    return json.dumps(
        plain_json(obj, "$"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")


def entry_hash(prev_hash: str, entry: Mapping[str, Any]) -> str:
    """SHA-256 hex of ``prev_hash``, a newline, and the entry's canonical JSON.

    :raises ValueError: ``prev_hash`` is not 64 lowercase hex digits.
    """
    if not isinstance(prev_hash, str) or not _HEX_HASH.fullmatch(prev_hash):
        raise ValueError("prev_hash must be 64 lowercase hex digits")
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + canonical_json(entry)).hexdigest()


def verify_chain(
    entries: Iterable[tuple[Any, Mapping[str, Any], str, str]],
) -> ChainBreak | None:
    """The first entry that breaks the chain, or ``None`` if every entry fits.

    ``entries`` are ``(entry_id, content, prev_hash, stored_hash)`` in sequence order,
    starting with the referral's first entry. An empty timeline verifies. A ``None`` result
    does not rule out a cut-off tail: compare the last stored hash with an anchored head.
    """
    expected_prev = GENESIS
    for index, (entry_id, content, prev_hash, stored_hash) in enumerate(entries):
        if prev_hash != expected_prev:
            return ChainBreak(index, entry_id, PREV_HASH_MISMATCH)
        if entry_hash(prev_hash, content) != stored_hash:
            return ChainBreak(index, entry_id, HASH_MISMATCH)
        expected_prev = stored_hash
    return None
