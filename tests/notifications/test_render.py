"""The renderer's contract beyond the templates: language tags, time formats, bad input."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfoNotFoundError

import pytest
from jinja2 import TemplateNotFound

import notifications.render
from notifications.render import RenderedMessage, due_local, render

CONTEXT = {
    "case_code": "R7KQ-M2XD-9PTA",
    "event": "close",
    "state": "closed",
    "service": "",
    "ask": "",
    "due_at": None,
}


def test_the_public_surface() -> None:
    assert notifications.render.__all__ == [
        "CONTEXT_VARIABLES",
        "RenderedMessage",
        "Renderer",
        "due_local",
        "render",
    ]


def test_a_rendered_message_is_frozen() -> None:
    message = render("case_closed", "en", CONTEXT)
    assert message == RenderedMessage(
        subject="Case R7KQ-M2XD-9PTA closed",
        body="Case R7KQ-M2XD-9PTA has been closed.\nNo further action is asked of you.",
        language="en",
        needs_review=False,
    )
    with pytest.raises(AttributeError):
        message.subject = "changed"  # type: ignore[misc]  # the refused write under test


@pytest.mark.parametrize("tag", ["vi", "vi-VN", "vi_VN", "VI", " vi "])
def test_a_language_tag_is_read_by_its_primary_subtag(tag: str) -> None:
    assert render("case_closed", tag, CONTEXT).language == "vi"


@pytest.mark.parametrize("tag", ["", "x", "../en", "12"])
def test_an_unreadable_language_gets_english(tag: str) -> None:
    assert render("case_closed", tag, CONTEXT).language == "en"


@pytest.mark.parametrize("name", ["../case_closed", "Case_Closed", "case_closed/en", ""])
def test_a_malformed_template_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a template name"):
        render(name, "en", CONTEXT)


def test_an_unknown_template_is_not_found() -> None:
    with pytest.raises(TemplateNotFound):
        render("referral_teleported", "th", CONTEXT)


def test_an_unknown_time_zone_is_an_error() -> None:
    with pytest.raises(ZoneInfoNotFoundError):
        render("case_closed", "en", CONTEXT, timezone="Asia/Atlantis")


def test_due_local_formats() -> None:
    assert due_local(None, "Asia/Yangon") is None
    assert due_local("2026-03-03T02:00:00+00:00", "UTC") == "2026-03-03 02:00 (UTC+00:00)"
    assert due_local("2026-03-03T02:00:00", "Asia/Yangon") == "2026-03-03 08:30 (UTC+06:30)"
    assert due_local("2026-03-02T20:00:00Z", "Asia/Ho_Chi_Minh") == "2026-03-03 03:00 (UTC+07:00)"
    moment = datetime(2026, 3, 3, 2, 0, tzinfo=UTC)
    assert due_local(moment, "America/Caracas") == "2026-03-02 22:00 (UTC-04:00)"
