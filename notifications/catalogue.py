"""Which notification templates exist, and in which languages.

Templates live in ``notifications/templates/NAME/LANG.j2``: one folder per notification,
one file per language. English (``en``) is required for every template; it is the fallback
when the recipient's language has none.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["FALLBACK_LANGUAGE", "TEMPLATES_DIR", "languages_of", "template_names"]

TEMPLATES_DIR = Path(__file__).parent / "templates"
FALLBACK_LANGUAGE = "en"


def template_names(root: Path = TEMPLATES_DIR) -> frozenset[str]:
    """Names of the templates that have at least the fallback language."""
    if not root.is_dir():
        return frozenset()
    return frozenset(
        d.name for d in root.iterdir() if d.is_dir() and (d / f"{FALLBACK_LANGUAGE}.j2").is_file()
    )


def languages_of(name: str, root: Path = TEMPLATES_DIR) -> frozenset[str]:
    """The languages template ``name`` is written in."""
    folder = root / name
    return frozenset(p.name.removesuffix(".j2") for p in folder.glob("*.j2"))
