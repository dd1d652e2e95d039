"""Idempotency records keep an HMAC of their request under a key derived from the master key,
never a plain hash: whoever reads the table cannot confirm a guess of the identifying facts a
request carried. Retries still match after a restart and across a master key rotation; on
SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
from importlib import import_module
from typing import Any

import pytest
from sqlalchemy import select, update

from sop_engine.crypto import MasterKey, MasterKeyring, derive_key
from sop_engine.errors import IdempotencyKeyReused
from sop_engine.persistence import tables
from sop_engine.runtime import fingerprints
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from sop_engine.runtime.fingerprints import PURPOSE, RETIRED, fingerprint
from sop_engine.runtime.idempotency import run_once
from sop_engine.timeline.chain import canonical_json

from .conftest import NewReferral

_I = tables.idempotency_keys

SURVIVOR = "Synthetic Survivor Dara 4410"


def creation(**changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "sop_key": "example.corridor",
        "sop_version": 1,
        "origin_country": "TH",
        "destination_country": "LA",
        "incident_at": None,
        "disclosed_at": None,
        "facts": {"survivor_age": 30, "survivor_name": SURVIVOR},
        "agencies": {},
    }
    request.update(changes)
    return request


def create(runtime: Runtime, actor: Actor, key: str, request: dict[str, Any]) -> str:
    return runtime.create_referral(actor=actor, idempotency_key=key, **request).case_code


def recorded(runtime: Runtime) -> dict[str, str]:
    with runtime.db.connect() as conn:
        return {r.key: r.request_hash for r in conn.execute(select(_I.c.key, _I.c.request_hash))}


def another_runtime(runtime: Runtime, ring: MasterKeyring) -> Runtime:
    """What another process, or the same after a restart, would build from its settings."""
    fingerprints._keys.cache_clear()
    return Runtime(runtime.db, runtime.library, ring, runtime.clock)


def test_a_creation_keeps_an_hmac_under_the_derived_key_not_a_plain_hash(
    runtime: Runtime, caseworker: Actor, keyring: MasterKeyring
) -> None:
    request = creation()
    create(runtime, caseworker, "k-1", request)
    [stored] = recorded(runtime).values()
    body = canonical_json(request)
    assert stored != hashlib.sha256(body).hexdigest()  # the old, guessable fingerprint
    key = derive_key(keyring.current, PURPOSE)
    assert stored == hmac.new(key, body, hashlib.sha256).hexdigest()
    assert key != keyring.current.material
    # Someone holding the table and a guess, but another key, gets another value.
    assert fingerprint(MasterKeyring(MasterKey.generate("x")), request).stored != stored


def test_fire_and_consent_records_keep_hmacs_too(
    runtime: Runtime, caseworker: Actor, corridor_referral: NewReferral
) -> None:
    code = corridor_referral(survivor_age=30).case_code
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    payload = {"facts": {"safe_contact_method": "text_message"}}
    runtime.fire(code, "record_consent", caseworker, payload, idempotency_key="f-1")
    request = {"scope": "health_referral"}
    run_once(
        runtime.services,
        caseworker,
        "c-1",
        operation="consent.grant",
        case_code=code,
        request=request,
        run=lambda: {"id": "g"},
    )
    stored = recorded(runtime)
    fire_body = {"case_code": code, "event": "record_consent", "payload": payload}
    consent_body = {"operation": "consent.grant", "case_code": code, "request": request}
    plain = {hashlib.sha256(canonical_json(b)).hexdigest() for b in (fire_body, consent_body)}
    assert len(stored) == 2
    assert not plain & set(stored.values())
    ring = runtime.services.keyring
    assert stored["f-1"] == fingerprint(ring, fire_body).stored
    assert fingerprint(ring, consent_body).stored in stored.values()
    again = runtime.fire(code, "record_consent", caseworker, payload, idempotency_key="f-1")
    assert again.replayed


def test_a_retry_matches_after_a_restart(
    runtime: Runtime, caseworker: Actor, keyring: MasterKeyring
) -> None:
    request = creation()
    first = create(runtime, caseworker, "k-1", request)
    restarted = another_runtime(runtime, MasterKeyring.from_setting(keyring.to_setting()))
    assert create(restarted, caseworker, "k-1", request) == first
    with pytest.raises(IdempotencyKeyReused):
        create(restarted, caseworker, "k-1", creation(facts={"survivor_age": 31}))


def test_a_retry_matches_after_the_master_key_is_rotated_until_the_old_one_is_retired(
    runtime: Runtime, caseworker: Actor, keyring: MasterKeyring
) -> None:
    request = creation()
    first = create(runtime, caseworker, "k-1", request)
    rotated = MasterKeyring(MasterKey.generate("next"), (keyring.current,))
    after = another_runtime(runtime, rotated)
    assert create(after, caseworker, "k-1", request) == first
    second = create(after, caseworker, "k-2", request)
    assert recorded(after)["referral.create:" + _sha("k-2")] == fingerprint(rotated, request).stored
    retired = another_runtime(runtime, MasterKeyring(rotated.current))
    assert create(retired, caseworker, "k-2", request) == second
    with pytest.raises(IdempotencyKeyReused):  # refused, never run twice
        create(retired, caseworker, "k-1", request)


def test_a_record_whose_plain_hash_the_migration_retired_replays_its_first_result(
    runtime: Runtime, caseworker: Actor
) -> None:
    request = creation()
    first = create(runtime, caseworker, "k-1", request)
    with runtime.db.begin() as conn:
        conn.execute(update(_I).values(request_hash=RETIRED))
    assert create(runtime, caseworker, "k-1", request) == first


def test_the_migration_writes_the_marker_the_runtime_knows() -> None:
    migration = import_module("sop_engine.persistence.migrations.versions.0006_accounts")
    assert migration.RETIRED == RETIRED
    assert len(RETIRED) <= 64  # the column's length
    assert not all(c in "0123456789abcdef" for c in RETIRED)  # never mistaken for a MAC


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
