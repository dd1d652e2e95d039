"""The shipped SOP library (``sop_definitions/``), compiled at most once per test process:
the session fixture ``library`` and the modules that parametrize over its SOPs at collection
share it."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from notifications.catalogue import template_names
from sop_engine.language.compiler import SopLibrary

__all__ = ["shipped_library"]

ROOT = Path(__file__).resolve().parents[1]


@cache
def shipped_library() -> SopLibrary:
    """The library with the notification templates checked. Tests that publish into a library
    use a copy of it (``SopLibrary(list(library))``), so that it stays as shipped."""
    return SopLibrary.load([ROOT / "sop_definitions"], template_names())
