"""Every check the compiler makes has a fixture that breaks it, and says where.

Each file in ``fixtures/invalid`` starts with ``# expect: LINE: MESSAGE`` lines. The file is
compiled beside the valid minimal SOP (which most of them extend); the test asserts that each
expected message is reported at its line in that file, and that nothing else is reported.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from notifications.catalogue import template_names
from sop_engine.language.compiler import compile_paths

FIXTURES = Path(__file__).parent / "fixtures"
INVALID = sorted((FIXTURES / "invalid").glob("*.sop.yaml"))
EXPECT = re.compile(r"^# expect: (\d+): (.+)$")


def expectations(path: Path) -> list[tuple[int, str]]:
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = EXPECT.match(line)
        if match:
            found.append((int(match.group(1)), match.group(2)))
    return found


def test_there_is_a_fixture_per_check() -> None:
    assert len(INVALID) >= 35


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name.removesuffix(".sop.yaml"))
def test_invalid_definition_is_refused_at_its_line(path: Path) -> None:
    expected = expectations(path)
    assert expected, f"{path.name} has no '# expect:' line"
    compiled, problems = compile_paths(
        [FIXTURES / "valid" / "minimal.sop.yaml", path], template_names()
    )
    mine = [p for p in problems if Path(p.file).name == path.name]
    assert [p for p in problems if p not in mine] == [], "the valid parent must stay valid"
    assert all(c.key == "test.minimal" for c in compiled)
    rendered = [(p.line, str(p).split(": ", 1)[1]) for p in mine]
    for line, message in expected:
        assert any(ln == line and message in text for ln, text in rendered), (
            f"expected at line {line}: {message}\ngot:\n" + "\n".join(str(p) for p in mine)
        )
    assert len(mine) == len(expected), "unexpected extra problems:\n" + "\n".join(
        str(p) for p in mine
    )
