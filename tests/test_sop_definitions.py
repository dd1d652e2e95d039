"""Every SOP shipped in sop_definitions/ compiles, with every template it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifications.catalogue import template_names
from sop_engine.language.compiler import SOP_SUFFIX, compile_paths

DEFINITIONS = Path(__file__).resolve().parents[1] / "sop_definitions"
FILES = sorted(DEFINITIONS.rglob(f"*{SOP_SUFFIX}"))


def test_there_are_sop_files() -> None:
    assert FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_sop_file_compiles(path: Path) -> None:
    compiled, problems = compile_paths([DEFINITIONS], template_names())
    assert [str(p) for p in problems] == []
    assert any(c.spec.file == str(path) for c in compiled)
