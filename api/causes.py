"""What a server error's log line says about its cause: enough to find the fault, and no
value of the request or of the data.

A bare "unhandled OperationalError" does not say which statement failed nor why; the
exception's own message often would, but may quote data: PostgreSQL's ``invalid input
syntax for type integer: "..."`` and ``Key (case_code)=(...) already exists`` echo the
parameter, a ``KeyError`` is the missing key itself. So :func:`cause_of` writes:

* the exception's class, and where it was raised (the innermost frame, and the innermost of
  this project's code when that is another): file, line and function;
* for a database error, the driver's exception class, its code (PostgreSQL's SQLSTATE and
  the constraint, table and column it names; SQLite's error name), and the SQL statement as
  SQLAlchemy sent it, whose parameters are placeholders (``%(case_code_1)s``, ``?``), never
  the driver's message;
* for an error of the engine's own tree, its message (the tree's messages never carry
  personal data: see :mod:`sop_engine.errors`);
* for anything else, its message with every quoted part, number, name or other word that
  might be a value replaced by ``…`` (the location says the rest);
* the same for the exception it was raised from, if any.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import CodeType, TracebackType

from sqlalchemy.exc import StatementError

from sop_engine.errors import SopEngineError

__all__ = ["cause_of"]

_ROOT = Path(__file__).resolve().parents[1]
"""The project's folder: its frames are the ones worth naming."""
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_SPACE = re.compile(r"\s+")
_PLAIN = re.compile(r"[a-z_]+[(),.:;]*|'…'[(),.:;]*|[(),.:;=-]+")
_MESSAGE_CHARS = 200
_SQL_CHARS = 400


def cause_of(exc: BaseException) -> str:
    """One line on ``exc`` and what it was raised from, without values."""
    parts = [_one(exc)]
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    seen = {id(exc)}
    if isinstance(exc, StatementError):
        seen.add(id(exc.orig))  # described already, without the driver's message
    while cause is not None and id(cause) not in seen and len(parts) < 4:
        seen.add(id(cause))
        parts.append(f"from {_one(cause)}")
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return "; ".join(parts)


def _one(exc: BaseException) -> str:
    text = _name(type(exc))
    if isinstance(exc, StatementError):
        text += _database(exc)
    elif isinstance(exc, SopEngineError):
        text += f": {_short(str(exc), _MESSAGE_CHARS)}"
    elif str(exc):
        text += f": {_short(_redacted(str(exc)), _MESSAGE_CHARS)}"
    where = _where(exc.__traceback__)
    return f"{text} at {where}" if where else text


def _redacted(message: str) -> str:
    """``message`` with what might be a value replaced by ``…``: quoted parts, and every word
    but plain lower-case words (names, numbers, codes and anything capitalised may be data;
    "invalid literal for int() with base 10: 'x'" keeps its shape)."""
    unquoted = _QUOTED.sub("'…'", message)
    return " ".join(w if _PLAIN.fullmatch(w) else "…" for w in unquoted.split())


def _database(exc: StatementError) -> str:
    orig = exc.orig
    found = []
    if orig is not None:
        found.append(_name(type(orig)))
        code = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
        if isinstance(code, str):
            found.append(f"code {code}")
        diag = getattr(orig, "diag", None)
        for name in ("constraint_name", "table_name", "column_name"):
            value = getattr(diag, name, None) if diag is not None else None
            if isinstance(value, str):
                found.append(f"{name.removesuffix('_name')} {value}")
    if exc.statement:
        found.append(f"in SQL: {_short(exc.statement, _SQL_CHARS)}")
    return f" ({', '.join(found)})" if found else ""


def _where(tb: TracebackType | None) -> str:
    """The innermost frame, and the innermost of this project's code if it is another."""
    frames: list[tuple[CodeType, int]] = []
    while tb is not None:
        frames.append((tb.tb_frame.f_code, tb.tb_lineno))
        tb = tb.tb_next
    if not frames:
        return ""
    shown = [frames[-1]]
    ours = [f for f in frames if _is_ours(f[0].co_filename)]
    if ours and ours[-1] is not frames[-1]:
        shown.append(ours[-1])
    return ", called from ".join(f"{_file(c.co_filename)}:{n} in {c.co_name}" for c, n in shown)


def _is_ours(filename: str) -> bool:
    return _ROOT in Path(filename).parents and "site-packages" not in Path(filename).parts


def _file(filename: str) -> str:
    """The path from the project (``api/routes/referrals.py``) or from the installed
    packages (``sqlalchemy/engine/base.py``), not the machine's."""
    path = Path(filename)
    if "site-packages" in path.parts:
        return "/".join(path.parts[len(path.parts) - path.parts[::-1].index("site-packages") :])
    if _ROOT in path.parents:
        return path.relative_to(_ROOT).as_posix()
    return path.name


def _name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _short(text: str, limit: int) -> str:
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
