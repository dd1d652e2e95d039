"""Which master keys a database was used with: a one-way fingerprint of each, by key id,
recorded the first time a process starts with it and checked at every start after.

A well-formed but wrong master key (a typo'd secret, another environment's key under the
same id) used to go unnoticed: the process started, wrote case keys under it that the rest of
the cluster could not open, and those referrals answered 500. Now :func:`check_keyring`
refuses it in one line before anything is written; ``GET /ready`` asks :func:`mismatched`.

The fingerprint is HKDF-derived (:func:`sop_engine.crypto.derive_key`, its own purpose
label): it identifies the key and says nothing about it, nor about any other key derived
from it. A new key id (a rotation: the new key current, the old one still listed) is simply
recorded.

The same check refuses a ring that no longer lists a key id under which stored case keys are
still wrapped (an old key removed before ``sop-engine keys rotate`` moved its case keys onto
the current one, :mod:`sop_engine.key_rotation`): those referrals would otherwise answer 500
one by one. It costs one grouped count over ``case_keys`` (:func:`case_key_usage`, over the
index on ``master_key_id``), at start only. A process already running when another rotates
onto a key it lacks is told by ``GET /ready`` (:func:`missing_in_use`). :func:`key_status`
tells the operator, per key id, how many case keys it wraps and where the ring has it: a
previous key that wraps none can be removed from the setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from sop_engine.crypto import MasterKey, MasterKeyring, derive_key
from sop_engine.errors import ConfigurationError
from sop_engine.persistence import tables
from sop_engine.persistence.db import read_transaction

__all__ = [
    "KeyStatus",
    "case_key_usage",
    "check_keyring",
    "fingerprint",
    "key_status",
    "mismatched",
    "missing_in_use",
]

_F = tables.master_key_fingerprints
_K = tables.case_keys


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """One master key id: how many stored case keys it wraps, and its place in the ring."""

    key_id: str
    case_keys: int
    ring: Literal["current", "previous", "missing"]
    """``missing``: stored case keys use the id, the ring lacks it (processes refuse)."""
    fingerprint: Literal["ok", "differs", "unrecorded", "-"]
    """The ring's key against the one recorded under its id; ``-`` when the ring lacks it."""

    @property
    def retirable(self) -> bool:
        """A previous key that wraps no case key: it can leave the setting."""
        return self.ring == "previous" and self.case_keys == 0


def fingerprint(key: MasterKey) -> str:
    """32 hex characters naming ``key``; the same in every process."""
    return derive_key(key, "master-key-fingerprint/v1")[:16].hex()


def mismatched(db: Engine, keyring: MasterKeyring) -> list[str]:
    """The ids of the ring's keys whose fingerprint differs from the one recorded (none
    recorded for an id is no mismatch)."""
    stored = _recorded(db)
    return [
        k.key_id for k in keyring.keys if k.key_id in stored and stored[k.key_id] != fingerprint(k)
    ]


def missing_in_use(db: Engine, keyring: MasterKeyring) -> list[str]:
    """The ids of recorded master keys that the ring lacks and that stored case keys are
    wrapped under: another process started with a newer ring (and may have rotated onto it),
    so this one cannot open those referrals. One indexed lookup per such id (few: the keys a
    cluster ever used)."""
    absent = sorted(k for k in _recorded(db) if keyring.find(k) is None)
    if not absent:
        return []
    with read_transaction(db) as conn:
        return [
            key_id
            for key_id in absent
            if conn.execute(
                select(_K.c.referral_id).where(_K.c.master_key_id == key_id).limit(1)
            ).first()
            is not None
        ]


def check_keyring(db: Engine, keyring: MasterKeyring, now: datetime) -> None:
    """Refuse a ring holding a key that is not the one recorded under its id, or lacking a
    key id that stored case keys are still wrapped under; record the keys not seen before.

    :raises ConfigurationError: naming the key id (and how many case keys a missing one
        still wraps), never any key material.
    """
    stored = _recorded(db)  # one read: what is checked is what decides what to record
    for key in keyring.keys:
        if key.key_id in stored and stored[key.key_id] != fingerprint(key):
            raise _refusal(key.key_id)
    missing = {k: n for k, n in case_key_usage(db).items() if keyring.find(k) is None}
    if missing:
        raise _missing_refusal(missing)
    for key in keyring.keys:
        if key.key_id in stored:
            continue
        try:
            with db.begin() as conn:
                conn.execute(
                    _F.insert().values(
                        key_id=key.key_id, fingerprint=fingerprint(key), first_seen_at=now
                    )
                )
        except IntegrityError:  # another process recorded it meanwhile: check that one
            if _recorded(db)[key.key_id] != fingerprint(key):
                raise _refusal(key.key_id) from None


def case_key_usage(db: Engine) -> dict[str, int]:
    """How many stored case keys each master key id wraps (ids wrapping none are absent)."""
    with read_transaction(db) as conn:
        rows = conn.execute(
            select(_K.c.master_key_id, func.count()).group_by(_K.c.master_key_id)
        ).all()
    return {row[0]: row[1] for row in rows}


def key_status(db: Engine, keyring: MasterKeyring) -> list[KeyStatus]:
    """Every key id of the ring or of the stored case keys: the ring's keys in its order
    (the current one first), then the ids it lacks, by name. Reads only, records nothing."""
    usage = case_key_usage(db)
    stored = _recorded(db)
    found = [
        KeyStatus(
            key.key_id,
            usage.get(key.key_id, 0),
            "current" if key is keyring.current else "previous",
            _compared(stored.get(key.key_id), key),
        )
        for key in keyring.keys
    ]
    found.extend(
        KeyStatus(key_id, count, "missing", "-")
        for key_id, count in sorted(usage.items())
        if keyring.find(key_id) is None
    )
    return found


def _compared(recorded: str | None, key: MasterKey) -> Literal["ok", "differs", "unrecorded"]:
    if recorded is None:
        return "unrecorded"
    return "ok" if recorded == fingerprint(key) else "differs"


def _recorded(db: Engine) -> dict[str, str]:
    with read_transaction(db) as conn:
        rows = conn.execute(select(_F.c.key_id, _F.c.fingerprint)).all()
    return {row.key_id: row.fingerprint for row in rows}


def _refusal(key_id: str) -> ConfigurationError:
    return ConfigurationError(
        f"SOP_ENGINE_MASTER_KEY: the key with id {key_id!r} is not the one this database "
        "was used with (its fingerprint differs): this process would write case keys the "
        "others cannot open; use the cluster's key"
    )


def _missing_refusal(missing: dict[str, int]) -> ConfigurationError:
    rotate = "run `sop-engine keys rotate`"
    if len(missing) == 1:
        ((key_id, count),) = missing.items()
        return ConfigurationError(
            f"{_case_keys(count)} still wrapped under key {key_id!r}, which "
            f"SOP_ENGINE_MASTER_KEY no longer lists: put it back as a previous key and {rotate}"
        )
    each = ", ".join(f"{n} under {key_id!r}" for key_id, n in sorted(missing.items()))
    return ConfigurationError(
        f"{_case_keys(sum(missing.values()))} still wrapped under keys that "
        f"SOP_ENGINE_MASTER_KEY no longer lists ({each}): put them back as previous keys "
        f"and {rotate}"
    )


def _case_keys(count: int) -> str:
    return "1 case key is" if count == 1 else f"{count} case keys are"
