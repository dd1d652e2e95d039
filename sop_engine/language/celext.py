"""The CEL extension module, imported without its package's command-line interface.

``common-expression-language`` ships its Rust extension as ``cel.cel``, but the package's
``__init__`` also imports ``cel.cli``, an interactive REPL built on prompt_toolkit, rich,
typer and pygments: about 0.8 s of CPU that every ``sop-engine`` command and every process
compiling an SOP would pay for nothing. :func:`load` imports the extension file alone and
registers it as ``cel.cel``, so that a later ``import cel`` elsewhere reuses the same
module instead of initialising the extension twice.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["load"]

_NAME = "cel.cel"


def load() -> ModuleType:
    """The ``cel.cel`` extension module (``compile``, ``evaluate``, ``Context``)."""
    known = sys.modules.get(_NAME)
    if known is not None:
        return known
    package = importlib.util.find_spec("cel")
    folders = list(package.submodule_search_locations or ()) if package is not None else []
    for folder in folders:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(folder) / f"cel{suffix}"
            if path.is_file():
                spec = importlib.util.spec_from_file_location(_NAME, path)
                if spec is None or spec.loader is None:  # pragma: no cover - a broken install
                    break
                module = importlib.util.module_from_spec(spec)
                sys.modules[_NAME] = module
                spec.loader.exec_module(module)
                return module
    # Not the layout we know (another release): the ordinary import, REPL and all.
    import cel  # noqa: PLC0415

    return sys.modules.get(_NAME, cel)
