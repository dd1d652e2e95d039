"""A schema fault no longer hides the file's other faults, and pruning adds no noise.

The compiler prunes what the schema refuses from a copy of the document and runs the later
stages on the rest (see :mod:`sop_engine.language.salvage`); a coordinator sees every fault
in one round, and none that only the pruning caused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifications.catalogue import template_names
from sop_engine.errors import Problem
from sop_engine.language import compiler
from sop_engine.language.compiler import compile_paths
from sop_engine.language.salvage import salvage
from sop_engine.language.schema import validator
from sop_engine.language.source import parse_source

FIXTURES = Path(__file__).parent / "fixtures"
MINIMAL = FIXTURES / "valid" / "minimal.sop.yaml"
SIX = FIXTURES / "salvage" / "six_mistakes.sop.yaml"
EXPECT = re.compile(r"^# expect: (\d+): (.+)$", re.MULTILINE)


def problems_of(tmp_path: Path, text: str, *, parent: bool = False) -> list[Problem]:
    """Compile ``text`` as one file (beside the valid minimal SOP when ``parent``) and return
    that file's problems, after checking that nothing compiled from it."""
    path = tmp_path / "sop.sop.yaml"
    path.write_text(text, encoding="utf-8")
    compiled, problems = compile_paths([*([MINIMAL] if parent else []), path], template_names())
    assert all(c.spec.file != str(path) for c in compiled), "a file with faults must not compile"
    return [p for p in problems if p.file == str(path)]


def minimal(*edits: tuple[str, str]) -> str:
    text = MINIMAL.read_text("utf-8")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    return text


def messages(problems: list[Problem]) -> list[str]:
    return [p.message for p in problems]


def test_one_compile_lists_faults_of_every_stage_at_their_lines() -> None:
    expected = [(int(line), message) for line, message in EXPECT.findall(SIX.read_text("utf-8"))]
    assert len(expected) == 6
    compiled, problems = compile_paths([SIX], template_names())
    assert compiled == []
    rendered = [(p.line, str(p).split(": ", 1)[1]) for p in problems]
    for line, message in expected:
        assert any(ln == line and message in text for ln, text in rendered), (
            f"expected at line {line}: {message}\ngot:\n" + "\n".join(map(str, problems))
        )
    assert len(problems) == 6, "\n".join(map(str, problems))


def test_a_state_pruned_whole_gives_no_unknown_state_nor_graph_faults(tmp_path: Path) -> None:
    found = problems_of(tmp_path, minimal(("  referred: {}", "  referred: sent to the clinic")))
    assert messages(found) == ["states.referred: 'sent to the clinic' is not of type 'object'"]


def test_a_bad_key_inside_a_state_prunes_only_that_key(tmp_path: Path) -> None:
    text = minimal(
        ("  referred: {}", "  referred: {descripton: sent}"),
        ("roles: [caseworker]}", "roles: [cw]}"),
    )
    found = problems_of(tmp_path, text)
    assert messages(found) == [
        "unknown key 'descripton' in states.referred",
        "transition 'close': unknown role 'cw'",
    ]


def test_a_badly_named_state_is_pruned_without_follow_on_faults(tmp_path: Path) -> None:
    text = minimal(
        ("  referred: {}", "  Referred: {}"),
        ("    to: referred", "    to: Referred"),
        ("[open, referred]", "[open, Referred]"),
    )
    found = problems_of(tmp_path, text)
    assert found[0].message.startswith("states: 'Referred' is not of the expected form")
    # The references to it are refused by the schema too; nothing later adds to them.
    assert all(m.startswith("transitions.") for m in messages(found)[1:]), messages(found)
    assert not any("unknown" in m or "unreachable" in m or "trap" in m for m in messages(found))


def test_a_transition_pruned_whole_skips_the_graph_checks(tmp_path: Path) -> None:
    """Without 'refer', 'referred' would be unreachable: that is the pruning's doing."""
    found = problems_of(tmp_path, minimal(("    roles: [caseworker]\n", "    roles: caseworker\n")))
    assert messages(found) == ["transitions.refer.roles: 'caseworker' is not of type 'array'"]


def test_a_malformed_ladder_does_not_read_as_a_missing_one(tmp_path: Path) -> None:
    text = minimal(
        (
            "        escalation:\n          - {after: 0h, notify: [supervisor], template: "
            "deadline_escalated}\n",
            "        escalation: tell the supervisor\n",
        )
    )
    found = problems_of(tmp_path, text)
    assert messages(found) == [
        "states.open.deadlines.assign.escalation: 'tell the supervisor' is not of type 'array'"
    ]


def test_a_malformed_category_does_not_read_as_a_missing_one(tmp_path: Path) -> None:
    text = minimal(("category: case_basic}", "category: [case_basic]}"))
    found = problems_of(tmp_path, text)
    assert len(found) == 1
    assert found[0].message.startswith("facts.risk_level.category: ['case_basic'] is not of type")


def test_a_missing_required_section_gives_no_unknown_references(tmp_path: Path) -> None:
    text = minimal(
        ("roles:\n  caseworker: {}\n  supervisor: {}\n", ""), ("review: 2027-01-01\n", "")
    )
    found = problems_of(tmp_path, text)
    assert messages(found) == [
        "(top level): 'review' is a required property",
        "(top level): 'roles' is a required property",
    ]


EXAMPLES = Path(__file__).resolve().parents[2] / "sop_definitions" / "examples"


def corridor_problems(tmp_path: Path, old: str, new: str) -> list[Problem]:
    """The example corridor with one edit, compiled beside its baseline."""
    text = (EXAMPLES / "example.corridor.sop.yaml").read_text("utf-8")
    assert text.count(old) == 1, old
    path = tmp_path / "corridor.sop.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    compiled, problems = compile_paths([EXAMPLES / "example.baseline.sop.yaml", path])
    assert [c.key for c in compiled] == ["example.baseline"]
    return [p for p in problems if p.file == str(path)]


def test_a_malformed_handoff_consent_is_not_read_as_a_missing_one(tmp_path: Path) -> None:
    """The transition entering the handoff discloses under the handoff's consent."""
    found = corridor_problems(
        tmp_path,
        "      consent: cross_border_return\n      service:",
        "      consent: [cross_border]\n      service:",
    )
    assert len(found) == 1
    assert found[0].message.startswith("states.return_referral.handoff.consent: ")


def test_a_malformed_corridor_does_not_misplace_its_agencies(tmp_path: Path) -> None:
    """Without its origin the SOP is no corridor, where 'destination' means nothing."""
    found = corridor_problems(tmp_path, "  origin: TH\n", "  origin: 12\n")
    assert messages(found) == ["jurisdiction.origin: 12 is not of type 'string'"]


def test_an_extension_with_schema_faults_reports_its_other_faults(tmp_path: Path) -> None:
    child = tmp_path / "child.sop.yaml"
    child.write_text(
        "key: test.child\nversion: 1\nextends: test.minimal@1\ntitel: Child\n"
        "transitions:\n  close: {from: [open, referred], to: closed, roles: [cw]}\n",
        encoding="utf-8",
    )
    grandchild = tmp_path / "grandchild.sop.yaml"
    grandchild.write_text(
        "key: test.grandchild\nversion: 1\nextends: test.child@1\n", encoding="utf-8"
    )
    compiled, problems = compile_paths([MINIMAL, child, grandchild])
    assert [c.key for c in compiled] == ["test.minimal"]
    assert [(Path(p.file).name, p.line, p.message) for p in problems] == [
        ("child.sop.yaml", 4, "unknown key 'titel' in (top level)"),
        ("child.sop.yaml", 6, "transition 'close': unknown role 'cw'"),
        ("grandchild.sop.yaml", 3, "extends test.child@1, which has errors"),
    ]


def test_the_descendants_of_a_broken_sop_are_found_in_any_order(tmp_path: Path) -> None:
    """Regression: a grandchild read before its child was told its child is unknown."""
    parent = tmp_path / "parent.sop.yaml"
    parent.write_text(minimal(("title: Minimal", "titel: Minimal")), encoding="utf-8")
    child = tmp_path / "child.sop.yaml"
    child.write_text("key: a.child\nversion: 1\nextends: test.minimal@1\n", encoding="utf-8")
    grandchild = tmp_path / "a.grandchild.sop.yaml"
    grandchild.write_text("key: a.grand\nversion: 1\nextends: a.child@1\n", encoding="utf-8")
    _, problems = compile_paths([parent, grandchild, child])
    assert [(Path(p.file).name, p.message) for p in problems if p.file != str(parent)] == [
        ("a.grandchild.sop.yaml", "extends a.child@1, which has errors"),
        ("child.sop.yaml", "extends test.minimal@1, which has errors"),
    ]


def test_if_the_pruned_spec_cannot_be_built_the_schema_faults_stand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def surprised(doc: Any) -> Any:
        raise TypeError("the builder met something it did not expect")

    monkeypatch.setattr(compiler, "build_spec", surprised)
    found = problems_of(tmp_path, SIX.read_text("utf-8"))
    assert len(found) == 2
    assert all("unknown key" in m or "is not of type" in m for m in messages(found))


def test_salvage_leaves_the_document_alone() -> None:
    doc = parse_source(SIX.read_text("utf-8"), "six.yaml")
    before = yaml.safe_dump(doc.data)
    rescue = salvage(doc, partial=False)
    assert rescue is not None
    assert yaml.safe_dump(doc.data) == before
    assert list(validator().iter_errors(rescue.doc.data)) == []
    assert ("states", "referred", "descripton") in rescue.pruned
    assert "assign" in rescue.names
    assert rescue.graph_intact


def test_nothing_is_salvaged_without_an_identity() -> None:
    doc = parse_source(minimal(("version: 1\n", "version: one\n")), "m.yaml")
    assert salvage(doc, partial=False) is None
    assert salvage(parse_source("- a list\n", "l.yaml"), partial=False) is None


values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(
                st.sampled_from(["after", "to", "from", "initial", "type"]), st.text(max_size=6)
            ),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _paths(v, (*prefix, i))
    return found


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    node = doc
    try:
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        return


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_whatever_is_salvaged_validates(data: st.DataObject) -> None:
    """Random damage to a valid SOP: salvage never raises, and what it keeps validates (but
    for required top-level keys, which the builder does without)."""
    doc = parse_source(MINIMAL.read_text("utf-8"))
    for path in data.draw(st.lists(st.sampled_from(_paths(doc.data)), min_size=1, max_size=3)):
        _set(doc.data, path, data.draw(values))
    partial = data.draw(st.booleans())
    rescue = salvage(doc, partial=partial)
    if rescue is not None:
        left = validator(partial).iter_errors(rescue.doc.data)
        assert [e.message for e in left if e.validator != "required" or e.path] == []
