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
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from sop_engine.crypto import MasterKey, MasterKeyring, derive_key
from sop_engine.errors import ConfigurationError
from sop_engine.persistence.db import read_transaction
from sop_engine.persistence.models import MasterKeyFingerprint, table

__all__ = ["check_keyring", "fingerprint", "mismatched"]

_F = table(MasterKeyFingerprint)


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


def check_keyring(db: Engine, keyring: MasterKeyring, now: datetime) -> None:
    """Refuse a ring holding a key that is not the one recorded under its id; record the
    keys not seen before.

    :raises ConfigurationError: naming the key id, never any key material.
    """
    stored = _recorded(db)  # one read: what is checked is what decides what to record
    for key in keyring.keys:
        if key.key_id in stored:
            if stored[key.key_id] != fingerprint(key):
                raise _refusal(key.key_id)
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
