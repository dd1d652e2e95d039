"""The SQLite database's files are its owner's alone: they hold case data.

:func:`make_private` runs before the first connection to a SQLite file opens it:

- a **missing folder** is made 0700 (and its missing parents as the umask says);
- an **existing folder** that its group or others may read or enter is left as it is, and a
  warning names it: the operator made it, perhaps for a backup group, and changing it under
  them would surprise; the files in it are tightened all the same;
- a **missing database file** is created empty with mode 0600 before SQLite opens it (an
  empty file is an empty database), so that it is never, even for a moment, readable by
  others; SQLite then gives the ``-wal`` and ``-shm`` files it creates the database file's
  mode;
- an **existing database file**, ``-wal`` or ``-shm`` with any permission for its group or
  others is set to 0600, and a warning says so (left by an older version, or copied in).

Only permission bits for the group and others are judged; the owner's are left alone.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

__all__ = ["FILE_MODE", "FOLDER_MODE", "SIBLINGS", "make_private"]

log = logging.getLogger(__name__)

FOLDER_MODE = 0o700
FILE_MODE = 0o600
SIBLINGS = ("-wal", "-shm", "-journal")
"""The files SQLite keeps beside a database, named by suffix."""

_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def make_private(database: Path) -> None:
    """Make the folder, database file and siblings of ``database`` private (module
    docstring)."""
    folder = database.parent
    if not folder.exists():
        folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & _OTHERS:
        log.warning(
            "the data folder %s is open to other users (mode %04o); the database files in it "
            "are made 0600, but consider chmod 700 on the folder",
            folder,
            mode,
        )
    try:
        descriptor = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        pass
    else:
        os.close(descriptor)
    for path in (database, *(database.with_name(database.name + s) for s in SIBLINGS)):
        _tighten(path)


def _tighten(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & _OTHERS:
        private = mode & ~_OTHERS
        os.chmod(path, private)
        log.warning("%s was open to other users (mode %04o); made it %04o", path, mode, private)
