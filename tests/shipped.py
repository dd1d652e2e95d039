"""The shipped SOP library (``sop_definitions/``), compiled at most once per test process:
the session fixture ``library`` and the modules that parametrize over its SOPs at collection
share it. Its files parsed, as an app's uploads read them, once too."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path

from sqlalchemy import create_engine

from notifications.catalogue import template_names
from sop_engine.language.compiler import SopLibrary
from sop_engine.language.published import PublishedSources
from sop_engine.language.source import SourceDocument

__all__ = ["shipped_documents", "shipped_library"]

ROOT = Path(__file__).resolve().parents[1]


@cache
def shipped_library() -> SopLibrary:
    """The library with the notification templates checked. Tests that publish into a library
    use a copy of it (``SopLibrary(list(library))``), so that it stays as shipped."""
    return SopLibrary.load([ROOT / "sop_definitions"], template_names())


@cache
def shipped_documents() -> Mapping[str, SourceDocument]:
    """``KEY@VERSION`` -> the parsed file, as :meth:`PublishedSources.file_documents` reads
    them on an app's first upload (two seconds of YAML each time otherwise)."""
    unused = create_engine("sqlite://")  # only the files are read, never the database
    return PublishedSources(unused, [ROOT / "sop_definitions"]).file_documents()
