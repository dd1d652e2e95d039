"""The SQLite database's files are private to the user running the engine: a new data folder
is 0700, the database file and its ``-wal`` and ``-shm`` files are 0600, whatever the umask,
and files left open to others are tightened; a folder the operator made open is left as it is
and named in a warning."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from sop_engine.persistence.db import make_engine
from sop_engine.persistence.files import make_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask: whatever the engine makes private, it makes so itself."""
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("open_umask")
def test_a_new_data_folder_and_every_database_file_are_the_owners_alone(tmp_path: Path) -> None:
    database = tmp_path / "data" / "sop_engine.sqlite3"
    engine = make_engine(f"sqlite:///{database}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        with engine.connect() as conn:  # open: the write-ahead log and its index exist
            conn.execute(text("SELECT * FROM t")).all()
            files = {p.name: mode(p) for p in database.parent.iterdir()}
    finally:
        engine.dispose()
    assert mode(database.parent) == 0o700
    assert files == {
        "sop_engine.sqlite3": 0o600,
        "sop_engine.sqlite3-wal": 0o600,
        "sop_engine.sqlite3-shm": 0o600,
    }


def test_files_left_open_to_others_are_tightened_and_said_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o700)
    database = folder / "sop_engine.sqlite3"
    for path in (database, folder / "sop_engine.sqlite3-wal", folder / "sop_engine.sqlite3-shm"):
        path.touch()
        path.chmod(0o664)
    with caplog.at_level(logging.WARNING, logger="sop_engine.persistence.files"):
        make_private(database)
    assert {p.name: mode(p) for p in folder.iterdir()} == {
        "sop_engine.sqlite3": 0o600,
        "sop_engine.sqlite3-wal": 0o600,
        "sop_engine.sqlite3-shm": 0o600,
    }
    assert len(caplog.records) == 3
    assert all(
        "was open to other users (mode 0664); made it 0600" in r.message for r in caplog.records
    )


def test_a_folder_the_operator_opened_is_left_and_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o750)
    database = folder / "sop_engine.sqlite3"
    with caplog.at_level(logging.WARNING, logger="sop_engine.persistence.files"):
        engine = make_engine(f"sqlite:///{database}")
        engine.dispose()
    assert mode(folder) == 0o750
    assert mode(database) == 0o600
    assert [r.message for r in caplog.records] == [
        f"the data folder {folder} is open to other users (mode 0750); the database files "
        "in it are made 0600, but consider chmod 700 on the folder"
    ]


def test_a_private_folder_and_files_say_nothing_and_keep_their_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "data" / "sop_engine.sqlite3"
    engine = make_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (7)"))
    engine.dispose()
    with caplog.at_level(logging.WARNING, logger="sop_engine.persistence.files"):
        again = make_engine(f"sqlite:///{database}")
        with again.connect() as conn:
            assert conn.execute(text("SELECT x FROM t")).scalar() == 7
        again.dispose()
    assert caplog.records == []
