"""Every SOP shipped in sop_definitions/ compiles, with every template it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifications.catalogue import template_names
from sop_engine.language.compiler import SOP_SUFFIX, compile_with_library

DEFINITIONS = Path(__file__).resolve().parents[1] / "sop_definitions"
FILES = sorted(DEFINITIONS.rglob(f"*{SOP_SUFFIX}"))


def test_there_are_sop_files() -> None:
    assert FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_sop_file_compiles(path: Path) -> None:
    """The file with the SOPs it extends (the whole library compiles in ``tests/shipped.py``)."""
    compiled, problems = compile_with_library([path], [DEFINITIONS], template_names())
    assert [str(p) for p in problems] == []
    assert [c.spec.file for c in compiled] == [str(path)]


def test_the_examples_use_every_key_of_the_language() -> None:
    """The example SOPs are the language's tour: a key nobody uses is a key nobody tested."""
    from typing import Any

    from sop_engine.language.build import KEYS
    from sop_engine.language.source import load_source

    used: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            used.update(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted((DEFINITIONS / "examples").glob(f"*{SOP_SUFFIX}")):
        walk(load_source(path).data)
    every = set().union(*KEYS.values())
    assert every - used == set()
