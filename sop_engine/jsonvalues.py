"""Plain JSON values: what may be sealed or hashed must survive a round trip unchanged."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["plain_json"]


def plain_json(value: Any, path: str = "$") -> Any:
    """``value`` as plain JSON types, refusing anything JSON cannot carry faithfully.

    Tuples become lists and any mapping a dict, so that a value reads back the same after a
    database round trip. ``path`` names the place in error messages, such as ``$.at``.
    """
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: NaN and infinities are not JSON")
        return value
    if isinstance(value, list | tuple):
        return [plain_json(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, Mapping):
        plain: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: object keys must be strings, not {type(key).__name__}")
            plain[key] = plain_json(item, f"{path}.{key}")
        return plain
    raise TypeError(
        f"{path}: {type(value).__name__} is not a JSON type (give datetimes as ISO strings)"
    )
