"""Names of a package imported from its modules on first use (PEP 562).

A package that re-exports its modules' names would import all of them, and what they import,
as soon as any of it is used. :func:`lazy_exports` gives the package a ``__getattr__`` that
imports a name's module only when the name is first asked for, then keeps the name in the
package, so that commands pay only for what they use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(namespace: dict[str, Any], homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for the package whose ``globals()`` is ``namespace``: each
    name of ``homes`` comes from the module named beside it."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:  # noqa: N807 -- the module hook's own name
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(home), name)
        namespace[name] = value
        return value

    return __getattr__
