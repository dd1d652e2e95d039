"""Identity never leaves the database in clear, and erasing a case's key erases it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from sop_engine.clock import ManualClock
from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.errors import TamperedData, TransitionNotAllowed
from sop_engine.language.compiler import SopLibrary
from sop_engine.persistence.models import CaseKey, Referral, table
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime

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
    runtime = Runtime(sqlite_engine, library, keyring, clock)
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
    r = table(Referral)
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
    r = table(Referral)
    with runtime.db.begin() as conn:
        blob = conn.execute(select(r.c.sealed).where(r.c.case_code == first)).scalar_one()
        conn.execute(r.update().where(r.c.case_code == second).values(sealed=blob))
    with pytest.raises(TamperedData):
        runtime.read_referral(second, reveal_identifying=True)


def test_erasing_the_case_key_makes_the_case_unreadable(
    runtime: Runtime, caseworker: Actor
) -> None:
    code = _sensitive_referral(runtime, caseworker)
    view = runtime.read_referral(code)
    r, k = table(Referral), table(CaseKey)
    with runtime.db.connect() as conn:
        sealed_before = conn.execute(select(r.c.sealed).where(r.c.case_code == code)).scalar_one()
    runtime.erase(code, caseworker)
    with runtime.db.connect() as conn:
        assert conn.execute(select(k).where(k.c.referral_id == view.id)).first() is None
    after = runtime.read_referral(code, reveal_identifying=True)
    assert after.erased
    assert after.identifying == {}
    # Even a copy of the ciphertext kept elsewhere (a backup) no longer opens with any key the
    # engine has: the case key is gone, and the master key alone cannot open it.
    from sop_engine.crypto import open_sealed

    with pytest.raises(TamperedData):
        open_sealed(bytes(32), sealed_before, associated_data=view.id.encode())
    with pytest.raises(TransitionNotAllowed, match="was erased"):
        runtime.fire(code, "record_consent", caseworker)
    assert runtime.verify_timeline(code)[0].ok


def test_another_master_key_cannot_read(
    runtime: Runtime, caseworker: Actor, library: SopLibrary, clock: ManualClock
) -> None:
    code = _sensitive_referral(runtime, caseworker)
    other = Runtime(runtime.db, library, MasterKeyring(MasterKey.generate("test")), clock)
    with pytest.raises(TamperedData):
        other.read_referral(code, reveal_identifying=True)
