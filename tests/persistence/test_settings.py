"""Settings for the database and the master key: laptop defaults that just work, and a
production mode that refuses to run without a real key."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from sop_engine.crypto import MasterKey
from sop_engine.errors import ConfigurationError
from sop_engine.settings import Settings


@pytest.fixture(autouse=True)
def no_engine_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the settings they give, not the machine's SOP_ENGINE_* variables."""
    for name in ("ENVIRONMENT", "DATA_DIR", "DATABASE_URL", "MASTER_KEY"):
        monkeypatch.delenv(f"SOP_ENGINE_{name}", raising=False)


def test_the_database_defaults_to_sqlite_in_the_data_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_database_url() == f"sqlite:///{tmp_path}/sop_engine.sqlite3"


def test_a_database_url_from_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOP_ENGINE_DATABASE_URL", "postgresql://sop@db.internal/sop")
    assert Settings().resolved_database_url() == "postgresql://sop@db.internal/sop"


def test_an_unknown_environment_is_refused() -> None:
    with pytest.raises(ValidationError, match="environment"):
        # An environment outside the Literal is the mistake under test.
        Settings(environment="staging")  # type: ignore[arg-type]


def test_the_master_keyring_is_read_from_the_environment_current_key_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    current, previous = MasterKey.generate("2025-06"), MasterKey.generate("2024-01")
    setting = f"{current.to_setting()}, {previous.to_setting()}"
    monkeypatch.setenv("SOP_ENGINE_MASTER_KEY", setting)
    monkeypatch.setenv("SOP_ENGINE_ENVIRONMENT", "production")

    settings = Settings()
    ring = settings.keyring()

    assert ring.current == current
    assert ring.previous == (previous,)
    assert setting not in repr(settings)
    assert current.to_setting().split(":")[1] not in repr(settings)


def test_a_malformed_master_key_is_refused_without_repeating_it() -> None:
    setting = "k1:" + "A" * 20
    with pytest.raises(ConfigurationError, match="entry 1 of the master key setting") as info:
        # Plain text, as the environment gives it; pydantic makes it a SecretStr.
        Settings(master_key=setting).keyring()  # type: ignore[arg-type]
    assert "A" * 20 not in str(info.value)


def test_development_makes_a_private_key_file_once_and_reuses_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir)

    first = settings.keyring()
    key_file = data_dir / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.current.key_id == "dev1"
    assert first.previous == ()

    second = Settings(data_dir=data_dir).keyring()
    assert second == first
    assert [path.name for path in data_dir.iterdir()] == ["master.key"]


def test_a_damaged_development_key_file_is_reported_by_path(tmp_path: Path) -> None:
    (tmp_path / "master.key").write_text("dev1:too-short\n")
    with pytest.raises(ConfigurationError, match=r"development key file .*master\.key"):
        Settings(data_dir=tmp_path).keyring()


def test_production_without_a_master_key_refuses_to_start(tmp_path: Path) -> None:
    settings = Settings(environment="production", data_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="SOP_ENGINE_MASTER_KEY must be set in production"):
        settings.keyring()
    assert not (tmp_path / "master.key").exists()


def test_production_ignores_a_development_key_file(tmp_path: Path) -> None:
    Settings(data_dir=tmp_path).keyring()
    with pytest.raises(ConfigurationError, match="SOP_ENGINE_MASTER_KEY"):
        Settings(environment="production", data_dir=tmp_path).keyring()


@pytest.mark.parametrize("value", ["4", "3601", "a minute"])
def test_a_timer_lease_too_short_too_long_or_not_a_number_is_refused(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under 5 s a sweep would lose its claims between two renewals; over an hour a dead
    # sweep's escalations would wait that long.
    monkeypatch.setenv("SOP_ENGINE_TIMER_LEASE_SECONDS", value)
    with pytest.raises(ValidationError, match="timer_lease_seconds"):
        Settings()


def test_the_timer_lease_defaults_to_a_minute() -> None:
    assert Settings().timer_lease_seconds == 60


def test_production_refuses_the_implicit_sqlite_database(tmp_path: Path) -> None:
    settings = Settings(environment="production", data_dir=tmp_path)
    with pytest.raises(
        ConfigurationError, match="SOP_ENGINE_DATABASE_URL must be set in production"
    ):
        settings.resolved_database_url()


def test_production_accepts_sqlite_named_explicitly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sop_engine.sqlite3"
    assert Settings(environment="production", database_url=url).resolved_database_url() == url
