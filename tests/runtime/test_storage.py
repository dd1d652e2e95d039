"""Identity never leaves the database in clear, and erasing a case's key erases it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring, open_sealed, unwrap_case_key
from sop_engine.errors import TamperedData, TransitionNotAllowed
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence import tables
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime
from tests.agencies import agency_directory

NAME = "Synthetic Survivor Zeta-7741"
CONTACT = "synthetic-contact-QX93-0000"


def _sensitive_referral(runtime: Runtime, caseworker: Actor) -> str:
    view = runtime.create_referral(
        sop_key="example.corridor",
        sop_version=1,
        actor=caseworker,
        origin_country="TH",
        destination_country="LA",
        incident_at=runtime.clock.now() - timedelta(hours=5),
        facts={"survivor_age": 27, "survivor_name": NAME, "safe_contact_details": CONTACT},
    )
    return view.case_code


def test_raw_database_file_holds_no_identifying_value(
    sqlite_url: str,
    sqlite_engine: Engine,
    library: SopLibrary,
    keyring: MasterKeyring,
    clock: ManualClock,
    caseworker: Actor,
) -> None:
    runtime = Runtime(sqlite_engine, library, keyring, clock, directory=agency_directory())
    code = _sensitive_referral(runtime, caseworker)
    runtime.grant_consent(code, scope="case_management", actor=caseworker, given_by="survivor")
    runtime.fire(
        code, "record_consent", caseworker, {"facts": {"safe_contact_method": "in_person"}}
    )
    # The values are readable through the engine, with the key...
    shown = runtime.read_referral(code, reveal_identifying=True).identifying
    assert shown is not None
    assert shown["survivor_name"] == NAME
    assert shown["safe_contact_method"] == "in_person"
    sqlite_engine.dispose()
    # ...and nowhere in the files on disk, WAL included.
    database = Path(sqlite_url.removeprefix("sqlite:///"))
    files = [p for p in database.parent.iterdir() if p.name.startswith(database.name)]
    assert files
    for path in files:
        raw = path.read_bytes()
        for secret in (NAME, CONTACT, "in_person"):
            assert secret.encode() not in raw, f"{secret!r} found in clear in {path.name}"
            assert secret.encode("utf-16-le") not in raw


def test_identifying_facts_are_listed_by_name_only(runtime: Runtime, caseworker: Actor) -> None:
    code = _sensitive_referral(runtime, caseworker)
    view = runtime.read_referral(code)
    assert view.sealed_fields == ("safe_contact_details", "survivor_name")
    assert view.identifying is None
    assert NAME not in str(view)
    assert view.facts == {"survivor_age": 27}


def test_tampered_ciphertext_is_refused(runtime: Runtime, caseworker: Actor) -> None:
    code = _sensitive_referral(runtime, caseworker)
    r = tables.referrals
    with runtime.db.begin() as conn:
        sealed = conn.execute(select(r.c.sealed).where(r.c.case_code == code)).scalar_one()
        flipped = bytes([sealed[0]]) + bytes([sealed[1] ^ 1]) + sealed[2:]
        conn.execute(r.update().where(r.c.case_code == code).values(sealed=flipped))
    with pytest.raises(TamperedData):
        runtime.read_referral(code, reveal_identifying=True)


def test_a_blob_moved_to_another_referral_does_not_open(
    runtime: Runtime, caseworker: Actor
) -> None:
    first = _sensitive_referral(runtime, caseworker)
    second = _sensitive_referral(runtime, caseworker)
    r = tables.referrals
    with runtime.db.begin() as conn:
        blob = conn.execute(select(r.c.sealed).where(r.c.case_code == first)).scalar_one()
        conn.execute(r.update().where(r.c.case_code == second).values(sealed=blob))
    with pytest.raises(TamperedData):
        runtime.read_referral(second, reveal_identifying=True)


def _keys_the_engine_holds(runtime: Runtime) -> list[bytes]:
    """Every key the engine can still obtain: each case key row unwrapped with its keyring,
    and the master keys themselves."""
    ring = runtime.services.keyring
    k = tables.case_keys
    with runtime.db.connect() as conn:
        rows = conn.execute(select(k.c.master_key_id, k.c.wrapped_key)).all()
    case_keys = [unwrap_case_key(ring, row.master_key_id, row.wrapped_key) for row in rows]
    return [*case_keys, *(master.material for master in (ring.current, *ring.previous))]


def _opens(key: bytes, blob: bytes, associated_data: bytes) -> bool:
    """Whether ``key`` opens the sealed ``blob``."""
    try:
        open_sealed(key, blob, associated_data=associated_data)
    except TamperedData:
        return False
    return True


def test_erasing_the_case_key_makes_the_case_unreadable(
    runtime: Runtime, caseworker: Actor
) -> None:
    code = _sensitive_referral(runtime, caseworker)
    _sensitive_referral(runtime, caseworker)  # a bystander, whose key stays
    view = runtime.read_referral(code)
    aad = view.id.encode()
    r, k = tables.referrals, tables.case_keys
    with runtime.db.connect() as conn:
        sealed_before = conn.execute(select(r.c.sealed).where(r.c.case_code == code)).scalar_one()
        key_row = conn.execute(select(k).where(k.c.referral_id == view.id)).one()
    # Before erasure the case key, unwrapped with the master key, opens the sealed facts.
    case_key = unwrap_case_key(runtime.services.keyring, key_row.master_key_id, key_row.wrapped_key)
    opened = open_sealed(case_key, sealed_before, associated_data=aad)
    assert opened == {"survivor_name": NAME, "safe_contact_details": CONTACT}
    assert any(_opens(key, sealed_before, aad) for key in _keys_the_engine_holds(runtime))

    runtime.erase(code, caseworker)
    with runtime.db.connect() as conn:
        assert conn.execute(select(k).where(k.c.referral_id == view.id)).first() is None
    after = runtime.read_referral(code, reveal_identifying=True)
    assert after.erased
    assert after.identifying == {}
    # Even a copy of the ciphertext kept elsewhere (a backup) no longer opens with any key the
    # engine has: the case key is gone, and neither another case's key nor a master key opens it.
    remaining = _keys_the_engine_holds(runtime)
    assert not any(_opens(key, sealed_before, aad) for key in remaining)
    assert len(remaining) == 2  # the bystander's case key and the one master key
    with pytest.raises(TransitionNotAllowed, match="was erased"):
        runtime.fire(code, "record_consent", caseworker)
    assert runtime.verify_timeline(code)[0].ok


def test_another_master_key_cannot_read(
    runtime: Runtime, caseworker: Actor, library: SopLibrary, clock: ManualClock
) -> None:
    code = _sensitive_referral(runtime, caseworker)
    other = Runtime(
        runtime.db,
        library,
        MasterKeyring(MasterKey.generate("test")),
        clock,
        directory=agency_directory(),
    )
    with pytest.raises(TamperedData):
        other.read_referral(code, reveal_identifying=True)
