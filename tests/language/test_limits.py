"""The language's bounds: each refuses what is over it with the bound and the line, and the
largest documents the bench checks (``bench/sop_check.py``) are accepted and at the bounds.

How long those take is the bench's to measure, never a test's."""

from __future__ import annotations

import pytest

from bench.sop_check import PARENT, _chain, shape_texts
from sop_engine.errors import DefinitionError, Problem
from sop_engine.language.compiler import compile_documents
from sop_engine.language.limits import (
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_ENTRIES,
    MAX_EXTENDS,
    MAX_FILE_BYTES,
    MAX_GUARD_CHARS,
    MAX_STATES,
    MAX_TRANSITIONS,
    MAX_VALUES,
    count_values,
)
from sop_engine.language.source import parse_source
from tests.shipped import shipped_documents

HEAD = f"key: t.limits\nversion: 1\nextends: {PARENT}\ntitle: t\n"


def problems_of(text: str, *parents: str) -> list[Problem]:
    """Every problem of ``text`` as an upload of it would get them (parents: the shipped
    library and ``parents``, in order)."""
    known = dict(shipped_documents())
    for i, parent in enumerate(parents):
        doc = parse_source(parent, f"parent{i}.sop.yaml")
        known[f"{doc.data['key']}@{doc.data['version']}"] = doc
    doc = parse_source(text, "upload.sop.yaml")
    compiled, problems = compile_documents([doc], parents=list(known.values()))
    assert compiled or problems
    return problems


def refused(text: str) -> Problem:
    with pytest.raises(DefinitionError) as caught:
        parse_source(text, "upload.sop.yaml")
    (problem,) = caught.value.problems
    return problem


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 329, 1_000, 100_000])
@pytest.mark.parametrize("style", ["flow", "block"])
def test_any_depth_of_nesting_is_a_definition_error_with_its_line(levels: int, style: str) -> None:
    """Regression: 329 levels and more were a RecursionError (PyYAML's composer recurses)."""
    if style == "flow":
        text = "key: " + "[" * levels + "]" * levels + "\n"
    else:  # as deep as fits in a file (about 1,000 levels)
        fit = next(i for i in range(1, MAX_FILE_BYTES) if i * (i + 3) > MAX_FILE_BYTES) - 2
        depth = min(levels, fit)
        text = "".join("  " * i + "a:\n" for i in range(depth)) + "  " * depth + "b: 1\n"
        assert len(text) <= MAX_FILE_BYTES
    problem = refused(text)
    assert problem.file == "upload.sop.yaml"
    if style == "block":
        assert problem.message == f"refused: nesting deeper than {MAX_DEPTH} levels"
        assert problem.line == MAX_DEPTH + 1
    else:
        assert "nesting" in problem.message
        assert problem.line == 1


def test_nesting_at_the_bound_is_read() -> None:
    # The top mapping is level 0, its value level 1.
    text = "a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n"
    assert parse_source(text).data["a"] is not None


def test_an_alias_of_its_own_ancestor_is_refused() -> None:
    problem = refused("a: &a [x, *a]\n")
    assert problem.message == f"refused: nesting deeper than {MAX_DEPTH} levels"


def test_too_many_values_are_refused_before_any_other_stage() -> None:
    per_list = MAX_ENTRIES
    lists = MAX_VALUES // per_list + 1
    text = "".join(f"l{i}: [{', '.join(['x'] * per_list)}]\n" for i in range(lists))
    problem = refused(text)
    assert f"more than {MAX_VALUES} values" in problem.message


@pytest.mark.parametrize(
    ("text", "what", "line"),
    [
        (
            "a: 1\nbig:\n" + "".join(f"  k{i}: 1\n" for i in range(MAX_ENTRIES + 1)),
            "keys in one mapping",
            2,
        ),
        (
            "a: 1\nb: 2\nbig: [" + ", ".join(["x"] * (MAX_ENTRIES + 1)) + "]\n",
            "items in one list",
            3,
        ),
    ],
)
def test_too_many_entries_in_one_mapping_or_list_are_refused(
    text: str, what: str, line: int
) -> None:
    problem = refused(text)
    assert problem.message == f"refused: more than {MAX_ENTRIES} {what} ({MAX_ENTRIES + 1})"
    assert problem.line == line


def test_the_60000_key_sop_of_the_report_is_refused_at_its_line() -> None:
    """Regression: 60,000 keys under the size limit cost 17-21 s of server time."""
    text = HEAD + "states:\n  intake:\n" + "".join(f"    k{i}: 1\n" for i in range(60_000))
    problem = refused(text)
    # Composing stops as soon as the nodes are more than the values allowed can be.
    assert problem.message == f"refused: document holds more than {MAX_VALUES} values"
    assert 6 < problem.line < 60_000


def test_aliases_are_bounded() -> None:
    text = "a: &a 1\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n"
    assert refused(text).message == f"refused: more than {MAX_ALIASES} aliases"


def _states(n: int, prefix: str = "s") -> str:
    return "states:\n" + "".join(f"  {prefix}{i}: {{description: x}}\n" for i in range(n))


def test_states_are_bounded_with_what_the_sop_extends() -> None:
    parent_states = len(shipped_documents()[PARENT].data["states"])
    (problem,) = [
        p
        for p in problems_of(HEAD + _states(MAX_STATES - parent_states + 1))
        if "at most" in p.message
    ]
    assert problem.message == (
        f"the SOP with what it extends has {MAX_STATES + 1} states; "
        f"at most {MAX_STATES} are allowed"
    )
    # At the first state the upload adds, not at the parent's states.
    assert (problem.file, problem.line) == ("upload.sop.yaml", 6)
    assert problem.sop == "t.limits"
    # One fewer: no bound is reached (the states have other faults: unreachable ones).
    assert not [
        p for p in problems_of(HEAD + _states(MAX_STATES - parent_states)) if "at most" in p.message
    ]


def test_transitions_are_bounded() -> None:
    text = (
        HEAD
        + "transitions:\n"
        + "".join(
            f"  t{i}: {{from: intake, to: closed, roles: [caseworker]}}\n"
            for i in range(MAX_TRANSITIONS + 1)
        )
    )
    parent_transitions = len(shipped_documents()[PARENT].data["transitions"])
    messages = [p.message for p in problems_of(text) if "at most" in p.message]
    assert messages == [
        f"the SOP with what it extends has {MAX_TRANSITIONS + 1 + parent_transitions} transitions; "
        f"at most {MAX_TRANSITIONS} are allowed"
    ]


def test_a_guard_is_bounded_in_length() -> None:
    long = " || ".join(["risk_level == 'high'"] * (MAX_GUARD_CHARS // 20))
    assert len(long) > MAX_GUARD_CHARS
    text = HEAD + "transitions:\n  close:\n    guard: " + long + "\n"
    (problem,) = [p for p in problems_of(text) if "at most" in p.message]
    assert problem.message == (
        f"transition 'close': the guard has {len(long)} characters; "
        f"at most {MAX_GUARD_CHARS} are allowed"
    )
    assert problem.line == 7


def _extending(key: str, parent: str) -> str:
    return f"key: {key}\nversion: 1\nextends: {parent}\ntitle: {key}\n"


def test_the_chain_of_extends_is_bounded() -> None:
    chain = []
    parent = PARENT
    for level in range(MAX_EXTENDS):
        chain.append(_extending(f"t.level{level}", parent))
        parent = f"t.level{level}@1"
    assert problems_of(_extending("t.last", PARENT)) == []
    # PARENT and MAX_EXTENDS - 1 levels above the upload: allowed; one more: refused.
    assert problems_of(_extending("t.last", "t.level2@1"), *chain) == []
    (problem,) = problems_of(_extending("t.last", parent), *chain)
    assert problem.message.startswith(f"extends a chain of more than {MAX_EXTENDS} SOPs")
    assert (problem.file, problem.line) == ("upload.sop.yaml", 3)


def test_count_values_counts_every_value_without_recursion() -> None:
    assert count_values({"a": [1, {"b": None}], "c": "x"}) == 6
    deep: list[object] = []
    node = deep
    for _ in range(100_000):
        node.append([])
        node = node[0]  # type: ignore[assignment]
    assert count_values(deep) == 100_001


def test_the_bench_shapes_are_accepted_and_at_the_bounds() -> None:
    """The documents whose cost ``python -m bench`` measures must be ones the bounds let
    through, and as large as they allow: else the figure would prove nothing."""
    files = shipped_documents()
    parent_values = count_values(files[PARENT].data)
    shapes = dict(shape_texts(parent_values))
    assert set(shapes) == {"graph", "unknown_keys", "unknown_names", "faults"}
    for name, text in shapes.items():
        doc = parse_source(text, "upload.sop.yaml")
        values = count_values(doc.data) + parent_values
        assert 0.85 * MAX_VALUES < values <= MAX_VALUES, (name, values)
        problems = problems_of(text)
        over = [p for p in problems if "at most" in p.message or "refused" in p.message]
        assert over == [], (name, over[:3])
        if name == "graph":
            assert problems == [], problems[:5]
            assert len(doc.data["states"]) > 0.75 * MAX_STATES
        else:
            assert len(problems) > 1_000, name
    *published, last = _chain(parent_values)
    assert len(published) == MAX_EXTENDS - 1  # and PARENT above them
    assert problems_of(last, *published) == []
    total = parent_values + sum(count_values(parse_source(t).data) for t in (*published, last))
    assert 0.85 * MAX_VALUES < total <= MAX_VALUES


def test_values_are_bounded_with_what_the_sop_extends() -> None:
    """A child within the bounds (at parse) whose parent takes it over them."""
    target = MAX_VALUES - 50
    facts = [f"  f{i}: {{type: string, category: case_basic}}" for i in range(MAX_ENTRIES - 1)]
    categories = [f"  c{i}: {{description: x}}" for i in range(MAX_ENTRIES - 1)]
    left = (target - 3 * len(facts) - 2 * len(categories) - 10) // 2
    sources = ["  - {title: x}" for _ in range(left)]
    text = "\n".join(
        [HEAD, "facts:", *facts, "data_categories:", *categories, "sources:", *sources]
    )
    own = count_values(parse_source(text).data)
    assert MAX_VALUES - 100 < own <= MAX_VALUES
    (problem,) = [p for p in problems_of(text) if "at most" in p.message]
    parent_values = count_values(shipped_documents()[PARENT].data)
    assert problem.message.startswith("the SOP with what it extends holds ")
    assert problem.message.endswith(f"values; at most {MAX_VALUES} are allowed")
    assert int(problem.message.split()[7]) > MAX_VALUES
    assert int(problem.message.split()[7]) <= own + parent_values
    assert (problem.file, problem.line) == ("upload.sop.yaml", 3)
