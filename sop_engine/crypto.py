"""Per-case encryption, so that a referral's sensitive data can be crypto-shredded.

Every referral gets its own random 32-byte **case key**. Its sensitive fields are sealed with
that key (:func:`seal`, AES-256-GCM) and the case key itself is stored only *wrapped* under a
long-lived **master key** that lives in the settings, never in the database
(:func:`wrap_case_key`). Destroying the one wrapped-key row makes every sealed blob of that
referral unreadable, wherever copies of the blobs went. Copies of the wrapped key in database
backups stay readable with the master key until those backups expire; retention of backups is
therefore part of the shredding promise.

Master keys carry an id so that they can be rotated: a :class:`MasterKeyring` wraps new keys
under its current key and still unwraps with the previous ones, and :func:`rewrap_case_key`
moves a wrapped key onto the current master key so that an old one can be retired.

Choices, and why:

- Case keys are wrapped with **AES key wrap** (RFC 3394), not AES-GCM. Key wrap is made for
  exactly this job: it is deterministic, needs no nonce (so there is no nonce-reuse risk under
  a master key that wraps keys for years), and carries its own 64-bit integrity check, so a
  wrong master key or a changed wrapped key is detected. The wrapped key is bound to its
  master key id only through that check, which is all the binding it needs.
- Sealed blobs use **AES-256-GCM** with a fresh random 12-byte nonce per seal. Each case key
  seals a handful of blobs in its life, far below the 2**32 seals per key where random nonces
  start to risk a collision.
- The **associated data** (the referral id) is authenticated but not stored: a blob copied
  onto another referral fails to open. The format version byte is authenticated too.

- Other keys the engine needs (the key of the idempotency records' request MACs) are
  **derived** from a master key with HKDF-SHA256 (RFC 5869), one ``info`` label per purpose
  (:func:`derive_key`), so that no second secret has to be kept, and a key derived for one
  purpose says nothing about the master key or any other purpose's key.

Sealed blob layout: ``version (1 byte, 0x01) || nonce (12 bytes) || ciphertext and tag``.

Nothing here logs or prints, and no error message carries plaintext or key material.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from sop_engine.errors import ConfigurationError, MissingMasterKey, TamperedData
from sop_engine.jsonvalues import plain_json

__all__ = [
    "KEY_BYTES",
    "MasterKey",
    "MasterKeyring",
    "derive_key",
    "new_case_key",
    "open_sealed",
    "rewrap_case_key",
    "seal",
    "unwrap_case_key",
    "wrap_case_key",
]

KEY_BYTES = 32
"""Length of master keys and case keys: AES-256."""

_SEAL_VERSION = 1
_NONCE_BYTES = 12
_TAG_BYTES = 16
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_ENCODED_KEY_CHARS = 43  # ceil(32 * 8 / 6), without padding
_SETTING_FORMAT = f"KEYID:BASE64URL, the key being {KEY_BYTES} bytes"


@dataclass(frozen=True, slots=True)
class MasterKey:
    """A named AES-256 key that wraps case keys. Its ``repr`` never shows the key bytes."""

    key_id: str
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or not _KEY_ID.fullmatch(self.key_id):
            raise ConfigurationError(
                "a master key id must be 1 to 64 letters, digits, '.', '_' or '-'"
            )
        if not isinstance(self.material, bytes) or len(self.material) != KEY_BYTES:
            raise ConfigurationError(f"a master key must be exactly {KEY_BYTES} bytes")

    @classmethod
    def generate(cls, key_id: str = "k1") -> MasterKey:
        """A fresh random master key, e.g. for ``sop-engine`` to print once at setup."""
        return cls(key_id, secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_setting(cls, text: str) -> MasterKey:
        """Parse ``KEYID:BASE64URL``; padding ``=`` is optional, surrounding spaces ignored.

        :raises ConfigurationError: with a message that never repeats any of ``text``.
        """
        key_id, colon, encoded = text.strip().partition(":")
        if not colon:
            raise ConfigurationError(
                f"the master key setting has no key id; expected {_SETTING_FORMAT}"
            )
        if not _KEY_ID.fullmatch(key_id):
            raise ConfigurationError(
                "the master key id must be 1 to 64 letters, digits, '.', '_' or '-'; "
                f"expected {_SETTING_FORMAT}"
            )
        encoded = encoded.rstrip("=")
        if not _BASE64URL.fullmatch(encoded):
            raise ConfigurationError(
                f"the master key is not base64url (A-Z a-z 0-9 - _); expected {_SETTING_FORMAT}"
            )
        if len(encoded) != _ENCODED_KEY_CHARS:
            raise ConfigurationError(
                f"the master key must be {_ENCODED_KEY_CHARS} base64url characters "
                f"({KEY_BYTES} bytes), not {len(encoded)}; expected {_SETTING_FORMAT}"
            )
        material = base64.urlsafe_b64decode(encoded + "=")
        if _encode(material) != encoded:
            raise ConfigurationError(
                "the master key's last character is not canonical base64url; was it mistyped?"
            )
        return cls(key_id, material)

    def to_setting(self) -> str:
        """The ``KEYID:BASE64URL`` form (unpadded) that :meth:`from_setting` reads."""
        return f"{self.key_id}:{_encode(self.material)}"


@dataclass(frozen=True, slots=True)
class MasterKeyring:
    """The current master key, which wraps, and previous ones, which still unwrap."""

    current: MasterKey
    previous: tuple[MasterKey, ...] = ()

    def __post_init__(self) -> None:
        ids = [self.current.key_id, *(key.key_id for key in self.previous)]
        if len(set(ids)) != len(ids):
            raise ConfigurationError("two master keys in the keyring share a key id")

    @classmethod
    def from_setting(cls, text: str) -> MasterKeyring:
        """Parse comma-separated ``KEYID:BASE64URL`` entries; the first is current.

        :raises ConfigurationError: naming the entry's position, never its text.
        """
        entries = [entry.strip() for entry in text.split(",")]
        if entries == [""]:
            raise ConfigurationError(f"the master key setting is empty; expected {_SETTING_FORMAT}")
        keys: list[MasterKey] = []
        for position, entry in enumerate(entries, start=1):
            if not entry:
                raise ConfigurationError(f"entry {position} of the master key setting is empty")
            try:
                keys.append(MasterKey.from_setting(entry))
            except ConfigurationError as exc:
                raise ConfigurationError(
                    f"entry {position} of the master key setting: {exc}"
                ) from None
        return cls(keys[0], tuple(keys[1:]))

    @property
    def keys(self) -> tuple[MasterKey, ...]:
        """Every key of the ring, the current one first."""
        return (self.current, *self.previous)

    def to_setting(self) -> str:
        """The comma-separated form that :meth:`from_setting` reads."""
        return ",".join(key.to_setting() for key in self.keys)

    def find(self, key_id: str) -> MasterKey | None:
        """The key with this id, or ``None`` if the ring does not hold it."""
        for key in self.keys:
            if key.key_id == key_id:
                return key
        return None


def derive_key(master: MasterKey, purpose: str) -> bytes:
    """A 32-byte key for ``purpose`` (such as ``"idempotency-request-mac/v1"``), derived from
    ``master`` with HKDF-SHA256: the same master key and purpose give the same key in every
    process and after every restart. No salt: the master key is already uniformly random,
    which is the case RFC 5869 (section 3.1) lets go without one."""
    if not purpose:
        raise ValueError("a derived key needs a purpose")
    info = b"sop-engine/" + purpose.encode("ascii")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(
        master.material
    )


def new_case_key() -> bytes:
    """A fresh random 32-byte key for one referral."""
    return secrets.token_bytes(KEY_BYTES)


def wrap_case_key(ring: MasterKeyring, case_key: bytes) -> tuple[str, bytes]:
    """Wrap ``case_key`` under the ring's current master key; store both values returned.

    :returns: ``(master key id, wrapped key)``; the wrapped key is 40 bytes.
    """
    _check_case_key(case_key)
    return ring.current.key_id, aes_key_wrap(ring.current.material, case_key)


def unwrap_case_key(ring: MasterKeyring, key_id: str, wrapped: bytes) -> bytes:
    """Recover a case key wrapped under the master key ``key_id``.

    :raises MissingMasterKey: the ring holds no key with that id (a rotation under way, or
        a key retired too early).
    :raises TamperedData: the wrapped key was changed, or wrapped under another key.
    """
    master = ring.find(key_id)
    if master is None:
        raise MissingMasterKey(
            f"no master key with id {key_id!r} in the keyring; "
            "keep retired keys in the setting until every case key is rewrapped"
        )
    try:
        case_key = aes_key_unwrap(master.material, wrapped)
    except InvalidUnwrap:
        raise TamperedData(
            f"the wrapped case key failed its integrity check under master key {key_id!r}"
        ) from None
    if len(case_key) != KEY_BYTES:
        raise TamperedData(f"the wrapped case key does not hold a {KEY_BYTES}-byte key")
    return case_key


def rewrap_case_key(ring: MasterKeyring, key_id: str, wrapped: bytes) -> tuple[str, bytes]:
    """Move a wrapped case key onto the ring's current master key, for key rotation."""
    return wrap_case_key(ring, unwrap_case_key(ring, key_id, wrapped))


def seal(case_key: bytes, plaintext_obj: dict[str, Any], *, associated_data: bytes) -> bytes:
    """Encrypt the canonical JSON of ``plaintext_obj`` under ``case_key``.

    ``associated_data`` (the referral id) must be given again to open the blob. Tuples and
    other mappings open as lists and dicts.

    :raises TypeError: a value is not a JSON type, or a key is not a string.
    :raises ValueError: a float is NaN or infinite, or ``associated_data`` is empty.
    """
    _check_case_key(case_key)
    if not isinstance(plaintext_obj, dict):
        raise TypeError(f"only a dict can be sealed, not {type(plaintext_obj).__name__}")
    if not associated_data:
        raise ValueError("associated_data must name what the blob belongs to (the referral id)")
    plaintext = json.dumps(
        plain_json(plaintext_obj, "$"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")
    header = bytes([_SEAL_VERSION])
    nonce = secrets.token_bytes(_NONCE_BYTES)
    ciphertext = AESGCM(case_key).encrypt(nonce, plaintext, header + associated_data)
    return header + nonce + ciphertext


def open_sealed(case_key: bytes, blob: bytes, *, associated_data: bytes) -> dict[str, Any]:
    """Decrypt a blob made by :func:`seal` with the same key and associated data.

    :raises TamperedData: the blob is malformed, was changed, belongs to other associated
        data, or was sealed under another key.
    """
    _check_case_key(case_key)
    blob = bytes(blob)
    if len(blob) < 1 + _NONCE_BYTES + _TAG_BYTES:
        raise TamperedData("the sealed blob is too short to be one")
    if blob[0] != _SEAL_VERSION:
        raise TamperedData(f"the sealed blob has unknown format version {blob[0]}")
    header, nonce, ciphertext = blob[:1], blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
    try:
        plaintext = AESGCM(case_key).decrypt(nonce, ciphertext, header + associated_data)
    except InvalidTag:
        raise TamperedData(
            "the sealed blob failed authentication: changed, sealed under another key, "
            "or belonging to another referral"
        ) from None
    try:
        opened = json.loads(plaintext.decode("utf-8"))
    except ValueError:
        opened = None
    if not isinstance(opened, dict):
        raise TamperedData("the sealed blob authenticated but does not hold a JSON object")
    return opened


def _encode(material: bytes) -> str:
    return base64.urlsafe_b64encode(material).rstrip(b"=").decode("ascii")


def _check_case_key(case_key: bytes) -> None:
    if not isinstance(case_key, bytes) or len(case_key) != KEY_BYTES:
        raise ValueError(f"a case key must be exactly {KEY_BYTES} bytes")
