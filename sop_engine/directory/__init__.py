"""The service directory: which agencies, hotlines and border points exist, as data.

Coordinators keep the directory in YAML under ``sop_definitions/directory/`` (one file per
country, and the corridors); :func:`load_directory` reads and checks it, and a
:class:`ServiceDirectory` answers who can receive a referral: by country, service, agency
type, corridor and language, and for an SOP's agency slot (:meth:`~ServiceDirectory.
candidates_for`). Real bodies are entered only where a public source names them, and carry
no personal contact data; everything else is marked synthetic. See
``docs/service-directory.md``.

Stages, each its own module: ``loader`` (the files, read with positions), ``schema`` (the
published JSON Schema), ``entries`` (one entry's own checks), ``checks`` (across files),
``model`` (the objects and their queries), ``vocabulary`` (the closed lists of words).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sop_engine.directory.vocabulary import (
    AGENCY_TYPES,
    CONTACT_CHANNELS,
    CORRIDOR_ROLES,
    COUNTRIES,
    LANGUAGES,
    SERVICES,
)
from sop_engine.lazy import lazy_exports

__all__ = [
    "AGENCY_TYPES",
    "CONTACT_CHANNELS",
    "CORRIDOR_ROLES",
    "COUNTRIES",
    "LANGUAGES",
    "SERVICES",
    "Agency",
    "BorderPoint",
    "Corridor",
    "Hotline",
    "ServiceDirectory",
    "directory_files",
    "directory_schema",
    "load_directory",
]

if TYPE_CHECKING:
    from sop_engine.directory.loader import directory_files, load_directory
    from sop_engine.directory.model import (
        Agency,
        BorderPoint,
        Corridor,
        Hotline,
        ServiceDirectory,
    )
    from sop_engine.directory.schema import directory_schema

__getattr__ = lazy_exports(
    globals(),
    {
        "directory_files": "sop_engine.directory.loader",
        "load_directory": "sop_engine.directory.loader",
        "Agency": "sop_engine.directory.model",
        "BorderPoint": "sop_engine.directory.model",
        "Corridor": "sop_engine.directory.model",
        "Hotline": "sop_engine.directory.model",
        "ServiceDirectory": "sop_engine.directory.model",
        "directory_schema": "sop_engine.directory.schema",
    },
)
"""Imported on first use: the loader and its JSON Schema cost a tenth of a second, which
commands that only need the vocabularies (a help text) should not pay."""
