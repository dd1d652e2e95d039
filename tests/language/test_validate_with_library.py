"""Checking named files against a library reads only their ancestors, and finds exactly
what compiling them with the whole library finds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from notifications.catalogue import template_names
from sop_engine.errors import Problem
from sop_engine.language import parents
from sop_engine.language.compiler import (
    CompiledSop,
    compile_paths,
    compile_with_library,
    discover,
)
from sop_engine.language.parents import header_ref
from sop_engine.language.source import parse_source

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "sop_definitions"
FIXTURES = Path(__file__).parent / "fixtures"
MINIMAL = FIXTURES / "valid" / "minimal.sop.yaml"
CHILD = FIXTURES / "valid" / "child.sop.yaml"
INVALID = sorted((FIXTURES / "invalid").glob("*.sop.yaml"))
TEMPLATES = template_names()

Result = tuple[list[tuple[str, object]], list[Problem]]


def old_way(named: list[Path], library: list[Path]) -> Result:
    """What ``sop-engine validate FILE`` did: compile the named files with every other file
    of the library as a possible parent, then keep the named files' part."""
    files = discover(named)
    others = [p for p in discover(library) if p not in set(files)]
    compiled, problems = compile_paths([*files, *others], TEMPLATES)
    mine = {str(p) for p in files}
    return (
        _specs([c for c in compiled if c.spec.file in mine]),
        [p for p in problems if p.file in mine],
    )


def new_way(named: list[Path], library: list[Path]) -> Result:
    compiled, problems = compile_with_library(named, library, TEMPLATES)
    return _specs(compiled), problems


def _specs(compiled: list[CompiledSop]) -> list[tuple[str, object]]:
    return sorted(((c.ref, c.spec) for c in compiled), key=lambda item: item[0])


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the library files the parent search parses."""
    names: list[str] = []
    real = parse_source

    def spy(text: str, file: str = "<string>") -> object:
        names.append(Path(file).name)
        return real(text, file)

    monkeypatch.setattr(parents, "parse_source", spy)
    return names


@pytest.fixture(scope="module")
def whole_library() -> tuple[list[CompiledSop], list[Problem]]:
    return compile_paths([LIBRARY], TEMPLATES)


def test_the_library_has_no_duplicate_refs(
    whole_library: tuple[list[CompiledSop], list[Problem]],
) -> None:
    """Then compiling it in any order gives one answer, and the old way's result for each
    file is this one compile, filtered (saving a whole-library compile per file below)."""
    compiled, problems = whole_library
    assert problems == []
    assert len({c.ref for c in compiled}) == len(discover([LIBRARY]))


@pytest.mark.parametrize(
    "path", discover([LIBRARY]), ids=lambda p: p.name.removesuffix(".sop.yaml")
)
def test_every_library_sop_checked_alone_matches_the_whole_compile(
    path: Path,
    whole_library: tuple[list[CompiledSop], list[Problem]],
    parsed: list[str],
) -> None:
    compiled, _ = whole_library
    expected = _specs([c for c in compiled if c.spec.file == str(path)])
    assert new_way([path], [LIBRARY]) == (expected, [])
    assert path.name not in parsed, "a named file in the library must not be read twice"
    assert len(parsed) == len(set(parsed))


def test_only_ancestors_are_parsed(parsed: list[str]) -> None:
    national = LIBRARY / "mekong" / "national.kh.sop.yaml"
    compiled, problems = compile_with_library([national], [LIBRARY], TEMPLATES)
    assert problems == []
    assert [c.ref for c in compiled] == ["national.kh@1"]
    assert parsed == ["mekong.baseline.sop.yaml"]


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name.removesuffix(".sop.yaml"))
def test_every_invalid_fixture_gets_the_same_report(path: Path) -> None:
    library = [FIXTURES / "valid"]
    assert new_way([path], library) == old_way([path], library)


@pytest.fixture
def library(tmp_path: Path) -> Path:
    folder = tmp_path / "library"
    folder.mkdir()
    shutil.copy(MINIMAL, folder / "test.minimal.sop.yaml")
    return folder


def test_a_child_whose_parent_has_errors(library: Path, tmp_path: Path) -> None:
    parent = library / "test.minimal.sop.yaml"
    parent.write_text(parent.read_text("utf-8").replace("[caseworker]}", "[cw]}"), "utf-8")
    child = tmp_path / "child.sop.yaml"
    shutil.copy(CHILD, child)
    result = new_way([child], [library])
    assert result == old_way([child], [library])
    assert [p.message for p in result[1]] == ["extends test.minimal@1, which has errors"]


def test_a_child_whose_parent_has_schema_faults(library: Path, tmp_path: Path) -> None:
    parent = library / "test.minimal.sop.yaml"
    parent.write_text(parent.read_text("utf-8").replace("title:", "titel:"), "utf-8")
    child = tmp_path / "child.sop.yaml"
    shutil.copy(CHILD, child)
    result = new_way([child], [library])
    assert result == old_way([child], [library])
    assert [p.message for p in result[1]] == ["extends test.minimal@1, which has errors"]


def test_a_grandchild_whose_grandparent_has_errors(library: Path, tmp_path: Path) -> None:
    parent = library / "test.minimal.sop.yaml"
    parent.write_text(parent.read_text("utf-8").replace("[caseworker]}", "[cw]}"), "utf-8")
    shutil.copy(CHILD, library / "test.child.sop.yaml")
    grandchild = tmp_path / "grandchild.sop.yaml"
    grandchild.write_text("key: test.grandchild\nversion: 1\nextends: test.child@1\n", "utf-8")
    result = new_way([grandchild], [library])
    assert result == old_way([grandchild], [library])
    assert [p.message for p in result[1]] == ["extends test.child@1, which has errors"]


def test_an_unknown_parent_is_reported_with_its_hint(library: Path, parsed: list[str]) -> None:
    named = FIXTURES / "invalid" / "extends_unknown.sop.yaml"
    result = new_way([named], [library])
    assert result == old_way([named], [library])
    (problem,) = result[1]
    assert (problem.line, problem.message) == (4, "extends unknown SOP 'test.miniml@1'")
    assert problem.hint == "did you mean 'test.minimal@1'?"
    assert parsed == []


def test_an_unknown_version_of_a_known_parent(library: Path, tmp_path: Path) -> None:
    child = tmp_path / "child.sop.yaml"
    child.write_text(CHILD.read_text("utf-8").replace("test.minimal@1", "test.minimal@2"), "utf-8")
    result = new_way([child], [library])
    assert result == old_way([child], [library])
    assert [(p.message, p.hint) for p in result[1]] == [
        ("extends unknown SOP 'test.minimal@2'", "did you mean 'test.minimal@1'?")
    ]


def test_a_named_file_extending_another_named_file(library: Path, tmp_path: Path) -> None:
    """The named parent wins over the library's copy, which is not even read."""
    own = tmp_path / "mine"
    own.mkdir()
    shutil.copy(MINIMAL, own / "minimal.sop.yaml")
    (own / "child.sop.yaml").write_text(CHILD.read_text("utf-8").replace("1h", "2h"), "utf-8")
    for named in ([own], [own / "child.sop.yaml", own / "minimal.sop.yaml"]):
        result = new_way(named, [library])
        assert result == old_way(named, [library])
        assert [ref for ref, _ in result[0]] == ["test.child@1", "test.minimal@1"]


def test_a_named_file_inside_the_library_is_read_once(library: Path, parsed: list[str]) -> None:
    shutil.copy(CHILD, library / "child.sop.yaml")
    named = [library / "child.sop.yaml"]
    result = new_way(named, [library])
    assert result == old_way(named, [library])
    assert [ref for ref, _ in result[0]] == ["test.child@1"]
    assert parsed == ["test.minimal.sop.yaml"]


def test_a_parent_under_another_name_is_found_by_its_key_line(
    library: Path, tmp_path: Path, parsed: list[str]
) -> None:
    (library / "test.minimal.sop.yaml").rename(library / "baseline.sop.yaml")
    (library / "other.sop.yaml").write_text("key: test.other\nversion: 1\n", "utf-8")
    (library / "broken.sop.yaml").write_text("key: [unclosed\n", "utf-8")
    child = tmp_path / "child.sop.yaml"
    shutil.copy(CHILD, child)
    result = new_way([child], [library])
    assert result == old_way([child], [library])
    assert [ref for ref, _ in result[0]] == ["test.child@1"]
    assert parsed == ["baseline.sop.yaml"]


def test_a_parent_in_flow_style_is_still_found(library: Path, tmp_path: Path) -> None:
    data = parse_source(MINIMAL.read_text("utf-8")).data
    (library / "test.minimal.sop.yaml").unlink()
    (library / "flow.sop.yaml").write_text(yaml.safe_dump(data, default_flow_style=True))
    child = tmp_path / "child.sop.yaml"
    shutil.copy(CHILD, child)
    result = new_way([child], [library])
    assert result == old_way([child], [library])
    assert [ref for ref, _ in result[0]] == ["test.child@1"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key: a.b\nversion: 2\n", ("a.b", "2")),
        ("# c\nkey: 'a.b'  # the key\nversion: 1 # one\n", ("a.b", "1")),
        ('key: "a.b"\n', ("a.b", None)),
        ("{key: a.b, version: 1}\n", (None, None)),
        ("key: &k a.b\nversion: one\n", (None, None)),
        ("states:\n  key: a.b\n", (None, None)),
    ],
)
def test_header_ref_reads_top_level_lines_only(
    text: str, expected: tuple[str | None, str | None]
) -> None:
    assert header_ref(text) == expected
