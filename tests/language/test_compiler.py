"""Compiling SOPs: specs are frozen, extensions override named parts, handoffs expand,
and each SOP version gets exactly one cached state machine."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from sop_engine.errors import DefinitionError, NotFound
from sop_engine.language.compiler import SopLibrary, compile_paths, compile_text
from sop_engine.language.machine import trigger
from sop_engine.language.source import parse_source

FIXTURES = Path(__file__).parent / "fixtures"
MINIMAL = FIXTURES / "valid" / "minimal.sop.yaml"
CHILD = FIXTURES / "valid" / "child.sop.yaml"
EXAMPLES = Path(__file__).resolve().parents[2] / "sop_definitions" / "examples"


@pytest.fixture(scope="module")
def library() -> SopLibrary:
    return SopLibrary.load([FIXTURES / "valid", EXAMPLES])


def test_spec_is_immutable(library: SopLibrary) -> None:
    spec = library.get("test.minimal").spec
    with pytest.raises(dataclasses.FrozenInstanceError):
        # The refused writes are what is under test.
        spec.title = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.states["new"] = spec.states["open"]  # type: ignore[index]


def test_extension_overrides_only_what_it_names(library: SopLibrary) -> None:
    parent = library.get("test.minimal").spec
    child = library.get("test.child").spec
    assert parent.states["open"].deadlines["assign"].after == timedelta(hours=3)
    assert child.states["open"].deadlines["assign"].after == timedelta(hours=1)
    # The ladder is inherited unchanged, from the parent's file.
    assert child.states["open"].deadlines["assign"].escalation == (
        parent.states["open"].deadlines["assign"].escalation
    )
    assert child.title == "Child"
    assert child.extends == "test.minimal@1"
    assert child.roles == parent.roles


def test_corridor_replaces_jurisdiction_whole(library: SopLibrary) -> None:
    corridor = library.get("example.corridor").spec
    assert corridor.jurisdiction.countries == ()
    assert (corridor.jurisdiction.origin, corridor.jurisdiction.destination) == ("TH", "LA")
    assert corridor.jurisdiction.is_corridor


def test_handoff_is_written_once_and_expands_to_four_stages(library: SopLibrary) -> None:
    spec = library.get("example.baseline").spec
    stages = [s.name for s in spec.states.values() if s.handoff == "health_referral"]
    assert stages == [
        "health_referral.sent",
        "health_referral.acknowledged",
        "health_referral.accepted",
    ]
    events = {t.event for t in spec.transitions if t.handoff == "health_referral"}
    assert events == {
        f"health_referral.{a}" for a in ("acknowledge", "accept", "decline", "deliver", "revoke")
    }
    # Entering the handoff sends it: the dataset is disclosed under the handoff's consent.
    (refer,) = [t for t in spec.transitions if t.id == "refer_for_health_care"]
    assert refer.target == "health_referral.sent"
    assert refer.consent == "health_referral"
    assert refer.discloses is not None
    assert refer.discloses.to == "health_provider"
    assert "consent_reference" in refer.discloses.fields
    # An override entry keeps its own basis instead of the handoff's consent.
    (emergency,) = [t for t in spec.transitions if t.id == "emergency_health_referral"]
    assert emergency.consent is None
    assert emergency.override is not None
    assert emergency.override.sign_off == "supervisor"
    # Leaving "from: health_referral" means from any of its stages.
    (withdraw,) = [t for t in spec.transitions if t.id == "withdraw_consent"]
    assert set(stages) <= set(withdraw.sources)
    # Each waiting stage has its task for the receiving agency, and its deadline.
    sent = spec.states["health_referral.sent"]
    assert sent.tasks["acknowledge"].agency == "health_provider"
    assert sent.deadlines["acknowledge"].after == timedelta(hours=1)


def test_the_same_handoff_is_reused_by_the_corridor(library: SopLibrary) -> None:
    corridor = library.get("example.corridor").spec
    assert set(corridor.handoffs) == {"health_referral", "counselling_referral", "return_referral"}
    assert corridor.states["return_referral.sent"].deadlines["acknowledge"].after == timedelta(
        days=1
    )


def test_one_machine_per_sop_version(library: SopLibrary) -> None:
    a = library.get("test.minimal", 1)
    assert library.get("test.minimal") is a
    assert library.get_ref("test.minimal@1").machine is a.machine
    assert a.machine.models == []  # never holds referrals


def test_machine_moves_a_state_holder_without_keeping_it(library: SopLibrary) -> None:
    sop = library.get("example.baseline")

    class Holder:
        state = "health_referral.sent"

    holder = Holder()
    ran = trigger(sop.machine, holder, "health_referral.acknowledge", lambda _tid: True)
    assert ran == "health_referral.acknowledge"
    assert holder.state == "health_referral.acknowledged"
    # A refused transition leaves the holder where it was.
    assert trigger(sop.machine, holder, "health_referral.accept", lambda _tid: False) is None
    assert holder.state == "health_referral.acknowledged"
    assert sop.machine.models == []


def test_machine_tries_guarded_alternatives_in_order(library: SopLibrary) -> None:
    sop = library.get("example.baseline")

    class Holder:
        state = "action_plan"

    holder = Holder()
    ran = trigger(
        sop.machine,
        holder,
        "emergency_health_referral",
        lambda tid: tid == "emergency_health_referral",
    )
    assert ran == "emergency_health_referral"
    assert holder.state == "health_referral.sent"


def test_guards_compile_once_and_evaluate(library: SopLibrary) -> None:
    sop = library.get("example.baseline")
    guard = sop.guards["close"]
    assert guard.evaluate({"safety_plan_agreed": True}) is True
    assert guard.evaluate({"safety_plan_agreed": False}) is False


def test_library_lookup_errors_say_what_exists(library: SopLibrary) -> None:
    with pytest.raises(NotFound, match=r"no SOP test.minmal \(did you mean 'test.minimal'\?\)"):
        library.get("test.minmal")
    with pytest.raises(NotFound, match=r"no SOP test\.minimal@7"):
        library.get("test.minimal", 7)
    with pytest.raises(LookupError):
        library.get_ref("test.minimal@x")


def test_a_published_version_cannot_change(library: SopLibrary, tmp_path: Path) -> None:
    changed = tmp_path / "m.sop.yaml"
    changed.write_text(MINIMAL.read_text("utf-8").replace("title: Minimal", "title: Other"))
    (sop,), problems = compile_paths([changed])
    assert problems == []
    with pytest.raises(DefinitionError, match="already published with other content"):
        library.add(sop)


def test_child_of_a_broken_parent_is_reported_once(tmp_path: Path) -> None:
    parent = tmp_path / "parent.sop.yaml"
    parent.write_text(MINIMAL.read_text("utf-8").replace("roles: [caseworker]}", "roles: [cw]}"))
    child = tmp_path / "child.sop.yaml"
    child.write_text(CHILD.read_text("utf-8"))
    compiled, problems = compile_paths([parent, child])
    assert compiled == []
    child_problems = [p for p in problems if p.file == str(child)]
    assert [p.message for p in child_problems] == ["extends test.minimal@1, which has errors"]
    assert all(p.sop == "test.minimal" for p in problems if p.file == str(parent))


def test_duplicate_definition_is_reported(tmp_path: Path) -> None:
    copy = tmp_path / "copy.sop.yaml"
    copy.write_text(MINIMAL.read_text("utf-8"))
    _, problems = compile_paths([MINIMAL, copy])
    assert any("test.minimal@1 is defined twice" in p.message for p in problems)


def test_extends_cycle_is_reported() -> None:
    a = parse_source("key: a\nversion: 1\nextends: b@1\n", "a.yaml")
    with pytest.raises(DefinitionError, match="extends cycle"):
        compile_text("key: b\nversion: 1\nextends: a@1\n", "b.yaml", parents=[a])


def test_every_problem_is_reported_at_once() -> None:
    text = (
        MINIMAL.read_text("utf-8")
        .replace("roles: [caseworker]}", "roles: [cw]}")
        .replace("notify: [supervisor]", "notify: [boss]")
    )
    with pytest.raises(DefinitionError) as caught:
        compile_text(text, "m.yaml")
    messages = [p.message for p in caught.value.problems]
    assert any("unknown role 'boss'" in m for m in messages)
    assert any("unknown role 'cw'" in m for m in messages)


def test_templates_are_checked_only_when_known() -> None:
    text = MINIMAL.read_text("utf-8")
    assert compile_text(text, "m.yaml").key == "test.minimal"
    with pytest.raises(DefinitionError, match="unknown template 'deadline_escalated'"):
        compile_text(text, "m.yaml", templates={"deadline_reminder"})


def test_sop_keeps_its_sources(library: SopLibrary) -> None:
    """Regression: a transition's 'from' list once overwrote the SOP's list of sources."""
    spec = library.get("example.baseline").spec
    assert spec.sources[0].title.startswith("Inter-Agency Gender-Based Violence")
    assert all(isinstance(s.title, str) for s in spec.sources)
