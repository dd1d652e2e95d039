"""Master key fingerprints (:mod:`sop_engine.master_keys`) on SQLite and PostgreSQL: the first
start records its keys, a wrong key under a known id is refused in one line naming only the
id, a rotation's new key is recorded, two processes starting at once agree."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select

from sop_engine.crypto import MasterKey, MasterKeyring
from sop_engine.errors import ConfigurationError
from sop_engine.master_keys import check_keyring, fingerprint, mismatched
from sop_engine.persistence import tables

NOW = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
_F = tables.master_key_fingerprints


def _recorded(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(_F.c.key_id, _F.c.fingerprint)).all())


def test_the_first_start_records_the_key_and_the_same_key_starts_again(engine: Engine) -> None:
    key = MasterKey.generate("k1")
    check_keyring(engine, MasterKeyring(key), NOW)
    assert _recorded(engine) == {"k1": fingerprint(key)}
    check_keyring(engine, MasterKeyring(MasterKey.from_setting(key.to_setting())), NOW)
    assert mismatched(engine, MasterKeyring(key)) == []


def test_a_wrong_key_under_a_known_id_is_refused_naming_the_id_only(engine: Engine) -> None:
    check_keyring(engine, MasterKeyring(MasterKey.generate("k1")), NOW)
    wrong = MasterKey.generate("k1")
    with pytest.raises(ConfigurationError) as refused:
        check_keyring(engine, MasterKeyring(wrong), NOW)
    message = str(refused.value)
    assert message.startswith("SOP_ENGINE_MASTER_KEY: the key with id 'k1' is not the one")
    assert "\n" not in message
    assert wrong.to_setting().split(":")[1] not in message
    assert fingerprint(wrong) not in message
    assert mismatched(engine, MasterKeyring(wrong)) == ["k1"]


def test_a_rotation_records_the_new_key_and_still_checks_the_old(engine: Engine) -> None:
    old = MasterKey.generate("k1")
    check_keyring(engine, MasterKeyring(old), NOW)
    new = MasterKey.generate("k2")
    check_keyring(engine, MasterKeyring(new, (old,)), NOW)
    assert set(_recorded(engine)) == {"k1", "k2"}
    with pytest.raises(ConfigurationError, match="id 'k1'"):
        check_keyring(engine, MasterKeyring(new, (MasterKey.generate("k1"),)), NOW)


def test_the_fingerprint_is_stable_and_says_nothing_of_the_key() -> None:
    key = MasterKey.generate("k1")
    assert fingerprint(key) == fingerprint(MasterKey("other-id", key.material))
    assert len(fingerprint(key)) == 32
    assert fingerprint(key) != fingerprint(MasterKey.generate("k1"))
    assert key.material.hex()[:32] != fingerprint(key)


def test_two_processes_starting_at_once_with_different_keys_one_is_refused(
    engine: Engine,
) -> None:
    keys = [MasterKey.generate("k1"), MasterKey.generate("k1")]
    start = threading.Barrier(2)
    refused: list[str] = []

    def run(key: MasterKey) -> None:
        start.wait()
        try:
            check_keyring(engine, MasterKeyring(key), NOW)
        except ConfigurationError as error:
            refused.append(str(error))

    threads = [threading.Thread(target=run, args=(k,)) for k in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(refused) == 1
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(_F)) == 1


def test_serve_refuses_to_start_with_another_key_than_the_databases(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    from cli.serve import ServeError, build_app
    from sop_engine.settings import get_settings

    monkeypatch.setenv("SOP_ENGINE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("SOP_ENGINE_MASTER_KEY", MasterKey.generate("k1").to_setting())
    get_settings.cache_clear()
    try:
        app = build_app()  # the first start records its key
        app.state.runtime.db.dispose()
        monkeypatch.setenv("SOP_ENGINE_MASTER_KEY", MasterKey.generate("k1").to_setting())
        get_settings.cache_clear()
        with pytest.raises(ServeError, match="the key with id 'k1' is not the one this database"):
            build_app()
    finally:
        get_settings.cache_clear()
