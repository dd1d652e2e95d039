"""Every notification any shipped SOP sends renders, in every language of that SOP, with
exactly the context the runtime gives it."""

from __future__ import annotations

import pytest

from notifications.render import render
from tests.shipped import shipped_library

LIBRARY = shipped_library()

TRANSITION: dict[str, object] = {
    "case_code": "R7KQ-M2XD-9PTA",
    "event": "refer",
    "state": "s",
    "service": "care",
    "ask": "Acknowledge the referral",
    "due_at": "2027-02-01T03:00:00+00:00",
    "reason": None,
    "outcome": None,
}
ESCALATION: dict[str, object] = {
    "case_code": "R7KQ-M2XD-9PTA",
    "event": "escalation",
    "state": "s",
    "deadline": "acknowledge",
    "level": 2,
    "ask": "Acknowledge the referral",
    "due_at": "2027-02-01T03:00:00+00:00",
}


def _usages() -> list[tuple[str, str, str, dict[str, object]]]:
    found: dict[tuple[str, str, str, str], dict[str, object]] = {}
    for sop in LIBRARY:
        spec = sop.spec
        for t in spec.transitions:
            for n in t.notify:
                for lang in spec.languages:
                    found[(spec.ref, n.template, lang, "transition")] = TRANSITION
        for state in spec.states.values():
            for d in state.deadlines.values():
                for lv in d.escalation:
                    for lang in spec.languages:
                        found[(spec.ref, lv.template, lang, "escalation")] = ESCALATION
    return [(ref, tpl, lang, ctx) for (ref, tpl, lang, _), ctx in sorted(found.items())]


USAGES = _usages()


def test_the_library_sends_notifications() -> None:
    assert len({u[1] for u in USAGES}) >= 5


@pytest.mark.parametrize(
    ("sop", "template", "language", "context"),
    USAGES,
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_every_notification_of_every_sop_renders(
    sop: str, template: str, language: str, context: dict[str, object]
) -> None:
    timezone = LIBRARY.get_ref(sop).spec.timezone or "UTC"
    message = render(template, language, context, timezone=timezone)
    assert message.subject
    assert "\n" not in message.subject
    assert "R7KQ-M2XD-9PTA" in message.subject + message.body
