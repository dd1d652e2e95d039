"""The Mermaid diagram shows states, handoffs, consent, deadlines and escalations."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from sop_engine.language.compiler import SopLibrary
from sop_engine.language.diagram import format_duration, mermaid

EXAMPLES = Path(__file__).resolve().parents[2] / "sop_definitions" / "examples"


@pytest.fixture(scope="module")
def text() -> str:
    return mermaid(SopLibrary.load([EXAMPLES]).get("example.corridor").spec)


def test_is_a_state_diagram_with_start_and_end(text: str) -> None:
    assert "\nstateDiagram-v2\n" in text
    assert "    [*] --> intake\n" in text
    assert "    closed --> [*]\n" in text


def test_handoffs_are_composite_states_with_their_stages(text: str) -> None:
    assert (
        'state "return_referral — handoff to receiving_focal_point (consent '
        'cross_border_return)" as return_referral {'
    ) in text
    assert "        return_referral__acknowledged: acknowledged\n" in text
    assert "action_plan --> return_referral__sent: refer_for_return" in text


def test_deadlines_and_ladders_are_notes(text: str) -> None:
    assert "note right of assessment\n        ⏱ pep_window 72h from incident_at\n" in text
    assert "⏱ assign 1h\n          L1 at due → caseworker\n          L2 +1h → supervisor" in text
    assert "L2 +72h → supervisor, fires flag_for_review" in text


def test_case_clocks_are_one_note_beside_the_start(text: str) -> None:
    assert (
        "note left of intake\n        case clocks, in every state\n"
        "        ⏲ medical_follow_up 2w from health_care_at, blocks closure\n"
        "          L1 48h before → caseworker\n"
        "          L2 at due → caseworker\n"
        "          L3 +72h → supervisor, fires flag_for_review\n"
        "          stops when has(facts.medical_follow_up_at)\n"
    ) in text


def test_overrides_stand_out(text: str) -> None:
    assert "⚠ override (life_at_risk#59; sign-off supervisor)" in text


def test_labels_cannot_break_the_diagram(text: str) -> None:
    for line in text.splitlines():
        if "-->" in line and ": " in line:
            label = re.sub(r"#\w+;", "", line.split(": ", 1)[1])
            assert '"' not in label
            assert ";" not in label
            assert ":" not in label


def test_diagram_is_deterministic() -> None:
    library = SopLibrary.load([EXAMPLES])
    again = SopLibrary.load([EXAMPLES])
    for sop in library:
        assert mermaid(sop.spec) == mermaid(again.get(sop.key, sop.version).spec)


@pytest.mark.parametrize(
    ("hours", "text"),
    [(72, "72h"), (120, "120h"), (0.5, "30m"), (24 * 14, "2w"), (24 * 10, "10d"), (0, "0m")],
)
def test_durations_read_as_coordinators_write_them(hours: float, text: str) -> None:
    assert format_duration(timedelta(hours=hours)) == text
