"""Whatever a coordinator types, the compiler answers with a definition error, nothing worse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sop_engine.errors import DefinitionError, Problem
from sop_engine.language.compiler import compile_text
from sop_engine.language.source import parse_source

MINIMAL = (Path(__file__).parent / "fixtures" / "valid" / "minimal.sop.yaml").read_text("utf-8")
KEYWORDS = [
    "key",
    "version",
    "states",
    "transitions",
    "from",
    "to",
    "roles",
    "initial",
    "final",
    "handoff",
    "guard",
    "extends",
    "deadlines",
    "escalation",
    "after",
    "on",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(KEYWORDS),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYWORDS), st.text(max_size=8)), inner, max_size=5
        ),
    ),
    max_leaves=30,
)


def compiles_or_refuses(text: str) -> None:
    """Compiling either succeeds or raises DefinitionError with located problems; any other
    exception escapes and fails the test."""
    problems: tuple[Problem, ...] = ()
    try:
        compile_text(text, "random.sop.yaml")
    except DefinitionError as exc:
        problems = exc.problems
        assert problems, "a DefinitionError must say what is wrong"
    for problem in problems:
        assert problem.line >= 1
        assert problem.message


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_random_text(text: str) -> None:
    compiles_or_refuses(text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_random_yaml_structures(data: Any) -> None:
    compiles_or_refuses(yaml.safe_dump(data, allow_unicode=True))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutations_of_a_valid_sop(data: st.DataObject) -> None:
    doc = parse_source(MINIMAL).data
    path_keys = data.draw(st.lists(st.sampled_from(sorted(_paths(doc))), min_size=1, max_size=3))
    for path in path_keys:
        _set(doc, path, data.draw(values))
    compiles_or_refuses(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=len(MINIMAL)), st.text(max_size=5))
def test_random_edits_of_a_valid_sop(at: int, insert: str) -> None:
    compiles_or_refuses(MINIMAL[:at] + insert + MINIMAL[at:])


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> set[tuple[Any, ...]]:
    found = {prefix} if prefix else set()
    if isinstance(node, dict):
        for k, v in node.items():
            found |= _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found |= _paths(v, (*prefix, i))
    return found


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    node = doc
    for part in path[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return
    try:
        node[path[-1]] = value
    except (IndexError, TypeError):
        return
