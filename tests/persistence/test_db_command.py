"""``sop-engine db upgrade`` and ``sop-engine db current`` as an operator uses them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import cli
from sop_engine.persistence.migrate import head_revision
from sop_engine.settings import get_settings


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """``get_settings`` is cached: read the environment each test gives, then forget it."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def run(*args: str, data_dir: Path, database_url: str | None = None) -> Result:
    environment = {
        "SOP_ENGINE_DATA_DIR": str(data_dir),
        "SOP_ENGINE_DATABASE_URL": database_url,
        "SOP_ENGINE_ENVIRONMENT": None,
    }
    get_settings.cache_clear()
    return CliRunner().invoke(cli, ["db", *args], env=environment)


def test_db_upgrade_creates_and_migrates_the_embedded_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    before = run("current", data_dir=data_dir)
    assert (before.exit_code, before.stdout) == (0, "none\n")
    assert "run 'sop-engine db upgrade'" in before.stderr

    upgraded = run("upgrade", data_dir=data_dir)
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.stdout == f"{head_revision()}\n"
    assert (data_dir / "sop_engine.sqlite3").exists()

    after = run("current", data_dir=data_dir)
    assert (after.exit_code, after.stdout, after.stderr) == (0, f"{head_revision()}\n", "")

    again = run("upgrade", data_dir=data_dir)
    assert (again.exit_code, again.stdout) == (0, f"{head_revision()}\n")


@pytest.mark.postgres
def test_db_upgrade_migrates_the_configured_postgresql_database(
    tmp_path: Path, postgres_url: str
) -> None:
    upgraded = run("upgrade", data_dir=tmp_path, database_url=postgres_url)
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.stdout == f"{head_revision()}\n"
    assert not list(tmp_path.iterdir())


def test_an_unsupported_database_url_is_reported_not_raised(tmp_path: Path) -> None:
    result = run("upgrade", data_dir=tmp_path, database_url="mysql://root:secret@localhost/sop")
    assert result.exit_code == 1
    assert "unsupported database 'mysql'" in result.stderr
    assert "secret" not in result.output


def test_an_unreachable_database_is_reported_in_one_line(tmp_path: Path) -> None:
    url = "postgresql://sop:secret@127.0.0.1:1/sop"
    result = run("current", data_dir=tmp_path, database_url=url)
    assert result.exit_code == 1
    assert result.stderr.startswith("cannot use the database at postgresql+psycopg://sop:***@")
    assert "secret" not in result.output
