"""Every check the directory loader makes has a folder that breaks it, and says where.

Each folder in ``fixtures/invalid`` is a small directory. Its files start with
``# expect: LINE: MESSAGE`` lines; the test loads the folder and asserts that each expected
message is reported at its line in that file (the message includes its "did you mean"),
and that nothing else is reported.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from sop_engine.directory import load_directory
from sop_engine.errors import DefinitionError

FIXTURES = Path(__file__).parent / "fixtures" / "invalid"
CASES = sorted(p for p in FIXTURES.iterdir() if p.is_dir())
EXPECT = re.compile(r"^# expect: (\d+): (.+)$")
TODAY = date(2026, 6, 1)


def expectations(folder: Path) -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(folder.glob("*.yaml")):
        for line in path.read_text(encoding="utf-8").splitlines():
            match = EXPECT.match(line)
            if match:
                found.append((path.name, int(match.group(1)), match.group(2)))
    return found


def test_there_is_a_folder_per_check() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("folder", CASES, ids=lambda p: p.name)
def test_invalid_directory_is_refused_at_its_line(folder: Path) -> None:
    expected = expectations(folder)
    assert expected, f"{folder.name} has no '# expect:' line"
    with pytest.raises(DefinitionError) as refused:
        load_directory(folder, today=TODAY)
    got = [(Path(p.file).name, p.line, str(p).split(": ", 1)[1]) for p in refused.value.problems]
    for name, line, message in expected:
        assert any(g[:2] == (name, line) and message in g[2] for g in got), (
            f"expected {name}:{line}: {message}\ngot:\n" + refused.value.report()
        )
    assert len(got) == len(expected), "unexpected extra problems:\n" + refused.value.report()


def test_every_problem_of_every_file_is_reported_at_once(tmp_path: Path) -> None:
    for case in ("unknown_service", "future_last_verified", "unquoted_hotline_number"):
        text = (FIXTURES / case / "th.yaml").read_text("utf-8")
        (tmp_path / f"{case}.yaml").write_text(text.replace("TH-SYN-A", f"TH-SYN-{len(case)}"))
    with pytest.raises(DefinitionError) as refused:
        load_directory(tmp_path, today=TODAY)
    files = {Path(p.file).name for p in refused.value.problems}
    assert files == {
        "unknown_service.yaml",
        "future_last_verified.yaml",
        "unquoted_hotline_number.yaml",
    }


def test_a_definition_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown service"):
        load_directory(FIXTURES / "unknown_service", today=TODAY)


def test_a_missing_or_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="no directory files"):
        load_directory(tmp_path)
    with pytest.raises(DefinitionError, match="not a folder"):
        load_directory(tmp_path / "th.yaml")
