"""Reading YAML safely: YAML 1.2 scalars, refused tags and keys, limits that hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from sop_engine.errors import DefinitionError
from sop_engine.language import source
from sop_engine.language.limits import MAX_FILE_BYTES, MAX_VALUES
from sop_engine.language.source import load_source, parse_source

FIXTURES = Path(__file__).parent / "fixtures"


def test_on_off_yes_no_and_dates_stay_strings() -> None:
    doc = parse_source("a: on\nb: off\nc: yes\nd: 2026-01-01\ne: true\nf: ~\ng: 0x1F\n")
    assert doc.data == {
        "a": "on",
        "b": "off",
        "c": "yes",
        "d": "2026-01-01",
        "e": True,
        "f": None,
        "g": 31,
    }


def test_quoted_scalars_are_strings() -> None:
    assert parse_source("a: 'true'\nb: \"12\"\n").data == {"a": "true", "b": "12"}


def test_every_value_knows_its_line() -> None:
    doc = parse_source("top:\n  list:\n    - x\n    - y\n  key: v\n", "f.yaml")
    assert doc.where(("top", "list", 1)) == ("f.yaml", 4)
    assert doc.line(("top", "key")) == 5
    assert doc.line(("top", "missing", "deeper")) == 1  # falls back to the nearest ancestor


def test_duplicate_keys_are_refused_not_overwritten() -> None:
    with pytest.raises(DefinitionError, match=r"f.yaml:3: duplicate key 'a'"):
        parse_source("a: 1\nb: 2\na: 3\n", "f.yaml")


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object/apply:os.system ['true']\n",
        "a: !!python/name:os.system\n",
        "a: !custom 1\n",
        "a: !!binary aGVsbG8=\n",
        "a: !!set {x, y}\n",
    ],
)
def test_tags_are_refused(text: str) -> None:
    with pytest.raises(DefinitionError, match="is not allowed in an SOP"):
        parse_source(text)


def test_merge_keys_are_refused() -> None:
    with pytest.raises(DefinitionError, match="merge keys"):
        parse_source("base: &b {x: 1}\nother:\n  <<: *b\n")


def test_a_few_aliases_are_fine() -> None:
    doc = parse_source("ladder: &l [{after: 0h}]\nother: *l\n")
    assert doc.data["other"] == [{"after": "0h"}]


def test_alias_bomb_is_refused_fast() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    # A billion values if expanded; the count stops at the limit, whatever the clock says.
    with pytest.raises(DefinitionError, match=f"more than {MAX_VALUES} values \\(alias bomb"):
        parse_source("\n".join(lines))


def test_too_many_aliases_are_refused() -> None:
    text = "a: &a 1\nb: [" + ", ".join(["*a"] * 500) + "]\n"
    with pytest.raises(DefinitionError, match="more than 200 aliases"):
        parse_source(text)


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(DefinitionError, match="nesting deeper"):
        parse_source("a: " + "[" * 100 + "]" * 100)


def test_a_50_mb_file_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.sop.yaml"
    with big.open("wb") as f:
        f.truncate(50 * 1024 * 1024)

    def never(*_args: object, **_kwargs: object) -> str:
        raise AssertionError("the file was read")

    monkeypatch.setattr(Path, "read_text", never)
    monkeypatch.setattr(Path, "read_bytes", never)
    with pytest.raises(DefinitionError, match="larger than"):
        load_source(big)


def test_large_text_is_refused_too() -> None:
    with pytest.raises(DefinitionError, match="larger than"):
        parse_source("a: " + "x" * (MAX_FILE_BYTES + 1))


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_source("a: 1\nb: [1, 2\nc: 3\n", "f.yaml")
    (problem,) = caught.value.problems
    assert problem.file == "f.yaml"
    assert problem.line == 3
    assert "YAML syntax error" in problem.message


def test_empty_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="empty"):
        parse_source("# nothing\n")
    bad = tmp_path / "latin1.sop.yaml"
    bad.write_bytes("title: caf\xe9\n".encode("latin-1"))
    with pytest.raises(DefinitionError, match="not UTF-8"):
        load_source(bad)


def test_definition_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        parse_source("a: 1\na: 2\n")


def test_control_characters_are_a_definition_error() -> None:
    """Regression: a control character escaped as a raw yaml ReaderError."""
    with pytest.raises(DefinitionError, match=r"f.yaml:2: character 0x001f is not allowed"):
        parse_source("a: 1\nb: \x1f\n", "f.yaml")


def _every_sop_text() -> list[Path]:
    root = Path(__file__).resolve().parents[2]
    return sorted([*(root / "sop_definitions").rglob("*.sop.yaml"), *FIXTURES.rglob("*.sop.yaml")])


@pytest.mark.parametrize("path", _every_sop_text(), ids=lambda p: p.name)
def test_libyaml_and_pure_python_read_every_file_alike(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With libyaml the scanner and parser are C (seven times faster); the documents, their
    locations and the refusals must be what PyYAML's own reader gives."""
    text = path.read_text("utf-8")

    def read() -> object:
        try:
            doc = parse_source(text, path.name)
        except DefinitionError as exc:
            return [(p.line, p.message.split(":")[0]) for p in exc.problems]
        return (doc.data, doc.locations)

    fast = read()
    monkeypatch.setattr(source, "_LOADER", source._Loader)
    assert read() == fast


def test_a_control_character_after_other_scripts_is_placed_on_its_line() -> None:
    text = "title: ການສົ່ງຕໍ່\ndescription: ส่งต่อ\nkey: a\x1fb\n"
    with pytest.raises(DefinitionError, match=r"f.yaml:3: character 0x001f is not allowed"):
        parse_source(text, "f.yaml")
