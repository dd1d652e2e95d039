"""Every notification renders in every language, shows the case code, what is asked and by
when, and nothing that could identify a survivor."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from jinja2 import Environment, UndefinedError, meta

from notifications.catalogue import (
    CONTEXT_KEYS,
    FALLBACK_LANGUAGE,
    LANGUAGES,
    TEMPLATES_DIR,
    languages_of,
    review_status,
    template_names,
)
from notifications.render import Renderer, render

NOTIFICATIONS = (
    "task_assigned",
    "referral_received",
    "referral_acknowledged",
    "referral_accepted",
    "referral_declined",
    "referral_delivered",
    "referral_revoked",
    "deadline_reminder",
    "deadline_escalated",
    "consent_withdrawn",
    "case_closed",
    "feedback_received",
    "delivery_failed",
    "transfer_requested",
    "transfer_accepted",
    "transfer_declined",
    "transfer_cancelled",
)
EVERY_FILE = [(name, lang) for name in NOTIFICATIONS for lang in LANGUAGES]
TRANSLATION_FILES = [(name, lang) for name, lang in EVERY_FILE if lang != FALLBACK_LANGUAGE]

CASE_CODE = "R7KQ-M2XD-9PTA"
FULL_CONTEXT: dict[str, Any] = {
    "case_code": CASE_CODE,
    "event": "send_to_health",
    "state": "health_referral",
    "service": "health care",
    "ask": "Acknowledge, then accept or decline the referral",
    "due_at": "2026-03-03T01:30:00+00:00",
    "deadline": "acknowledge",
    "level": 2,
    "scope": "health_referral",
    "reason": "survivor_did_not_attend",
    "outcome": "unsuccessful",
}
PERSONAL = re.compile(
    r"name|phone|mobile|email|address|incident|village|district|province|location|gps"
    r"|birth|dob|age|survivor|victim|perpetrator|nationality|passport|id_number",
    re.IGNORECASE,
)


def source(name: str, lang: str) -> str:
    return (TEMPLATES_DIR / name / f"{lang}.j2").read_text(encoding="utf-8")


def variables(name: str, lang: str) -> set[str]:
    return set(meta.find_undeclared_variables(Environment().parse(source(name, lang))))


def ids(case: tuple[str, str]) -> str:
    return "/".join(case)


# -- the set of files -------------------------------------------------------------------------


def test_the_catalogue_lists_exactly_the_known_notifications() -> None:
    assert template_names() == set(NOTIFICATIONS)
    assert set(CONTEXT_KEYS) == set(NOTIFICATIONS)


@pytest.mark.parametrize("name", NOTIFICATIONS)
def test_every_notification_is_written_in_all_six_languages(name: str) -> None:
    assert languages_of(name) == set(LANGUAGES)


# -- rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "lang"), EVERY_FILE, ids=ids)
@pytest.mark.parametrize("due_at", ["2026-03-03T01:30:00+00:00", None], ids=["due", "asap"])
def test_every_template_renders_in_every_language(name: str, lang: str, due_at: str | None) -> None:
    message = render(name, lang, {**FULL_CONTEXT, "due_at": due_at}, timezone="Asia/Bangkok")

    assert message.language == lang
    assert message.subject.strip()
    assert "\n" not in message.subject
    assert message.subject == message.subject.strip()
    assert CASE_CODE in message.subject + message.body
    assert "None" not in message.subject + message.body
    assert "{" not in message.body
    if due_at is not None and "due_at" in CONTEXT_KEYS[name]:
        assert "2026-03-03 08:30 (UTC+07:00)" in message.body


@pytest.mark.parametrize(("name", "lang"), EVERY_FILE, ids=ids)
def test_every_template_renders_with_only_what_its_sender_puts_in_the_outbox(
    name: str, lang: str
) -> None:
    """The engine's senders differ: escalations send no service, withdrawals no due_at."""
    context = {k: v for k, v in FULL_CONTEXT.items() if k in CONTEXT_KEYS[name]}
    message = render(name, lang, context)
    assert CASE_CODE in message.subject + message.body


@pytest.mark.parametrize(("name", "lang"), EVERY_FILE, ids=ids)
def test_templates_read_only_the_context_their_sender_guarantees(name: str, lang: str) -> None:
    allowed = (CONTEXT_KEYS[name] - {"due_at"}) | {"due_local"}
    assert variables(name, lang) <= allowed


@pytest.mark.parametrize(("name", "lang"), TRANSLATION_FILES, ids=ids)
def test_translations_show_what_english_shows(name: str, lang: str) -> None:
    assert variables(name, lang) == variables(name, FALLBACK_LANGUAGE)


def test_an_empty_ask_and_service_leave_no_empty_labels() -> None:
    message = render("referral_received", "en", {**FULL_CONTEXT, "ask": "", "service": ""})
    assert "What is asked" not in message.body
    assert "Service" not in message.body
    assert "Due: 2026-03-03 01:30 (UTC+00:00)" in message.body


def test_without_a_due_time_each_language_says_as_soon_as_possible() -> None:
    context = {**FULL_CONTEXT, "due_at": None}
    assert "Due: as soon as possible" in render("task_assigned", "en", context).body
    assert "โดยเร็วที่สุด" in render("task_assigned", "th", context).body
    assert "càng sớm càng tốt" in render("task_assigned", "vi", context).body


def test_the_escalation_level_is_shown() -> None:
    message = render("deadline_escalated", "en", {**FULL_CONTEXT, "level": 3})
    assert message.subject == f"Overdue (level 3): case {CASE_CODE}"


def test_a_missing_case_code_is_an_error_not_a_gap() -> None:
    context = {k: v for k, v in FULL_CONTEXT.items() if k != "case_code"}
    with pytest.raises(UndefinedError):
        render("case_closed", "en", context)


def test_a_template_that_refers_to_an_unknown_variable_fails(tmp_path: Path) -> None:
    """StrictUndefined, and unknown context keys are dropped: even a caller who puts a name in
    the context cannot get it into a message."""
    (tmp_path / "leaky").mkdir()
    (tmp_path / "leaky" / "en.j2").write_text(
        "{% block subject %}Case {{ case_code }}{% endblock %}"
        "{% block body %}For {{ survivor_name }}{% endblock %}",
        encoding="utf-8",
    )
    with pytest.raises(UndefinedError, match="survivor_name"):
        Renderer(tmp_path).render("leaky", "en", {**FULL_CONTEXT, "survivor_name": "X"})


# -- nothing identifying ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "lang"), EVERY_FILE, ids=ids)
def test_no_template_has_a_placeholder_for_personal_data(name: str, lang: str) -> None:
    text = source(name, lang)
    found = {v for v in variables(name, lang) if PERSONAL.search(v)}
    inside_tags = re.findall(r"\{[{%](.*?)[}%]\}", text, flags=re.DOTALL)
    found |= {tag.strip() for tag in inside_tags if PERSONAL.search(tag)}
    assert found == set()


@pytest.mark.parametrize(("name", "lang"), EVERY_FILE, ids=ids)
def test_no_template_turns_off_escaping(name: str, lang: str) -> None:
    assert not re.search(r"\|\s*safe\b|autoescape\s+false", source(name, lang))


def test_the_personal_data_scan_catches_a_name() -> None:
    assert PERSONAL.search("survivor_name")
    assert PERSONAL.search("contact_phone")
    assert not any(PERSONAL.search(key) for key in FULL_CONTEXT)


# -- review flags -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "lang"), TRANSLATION_FILES, ids=ids)
def test_every_translation_carries_the_review_flag_on_its_first_line(name: str, lang: str) -> None:
    first = source(name, lang).splitlines()[0]
    assert re.fullmatch(r"\{# review: .+ #\}", first)
    status = review_status(name, lang)
    assert status.state in {"pending", "done"}
    assert render(name, lang, FULL_CONTEXT).needs_review is status.needs_review


@pytest.mark.parametrize("name", NOTIFICATIONS)
def test_english_is_the_source_and_carries_no_flag(name: str) -> None:
    assert "review:" not in source(name, "en")
    assert review_status(name, "en").state == "source"
    assert render(name, "en", FULL_CONTEXT).needs_review is False


def test_a_native_speakers_done_line_clears_the_flag(tmp_path: Path) -> None:
    shutil.copytree(TEMPLATES_DIR / "case_closed", tmp_path / "case_closed")
    path = tmp_path / "case_closed" / "lo.j2"
    rest = path.read_text(encoding="utf-8").split("\n", 1)[1]
    path.write_text("{# review: done by KP on 2026-04-01 #}\n" + rest, encoding="utf-8")

    status = review_status("case_closed", "lo", tmp_path)
    message = Renderer(tmp_path).render("case_closed", "lo", FULL_CONTEXT)

    assert (status.state, status.reviewer, str(status.reviewed_on)) == ("done", "KP", "2026-04-01")
    assert message.needs_review is False
    assert message.language == "lo"


# -- language and time zone ---------------------------------------------------------------------


def test_a_language_without_a_translation_falls_back_to_english() -> None:
    message = render("task_assigned", "hmn", FULL_CONTEXT)  # Hmong: spoken at borders, no file
    assert message.language == "en"
    assert message.subject == f"New task on case {CASE_CODE}"
    assert message.needs_review is False


def test_a_template_missing_one_translation_falls_back_to_english(tmp_path: Path) -> None:
    shutil.copytree(TEMPLATES_DIR / "case_closed", tmp_path / "case_closed")
    (tmp_path / "case_closed" / "km.j2").unlink()
    message = Renderer(tmp_path).render("case_closed", "km", FULL_CONTEXT)
    assert message.language == "en"
    assert message.subject == f"Case {CASE_CODE} closed"


def test_due_local_is_in_the_recipients_time_zone() -> None:
    """Myanmar is six and a half hours ahead of UTC, its neighbours seven."""
    context = {**FULL_CONTEXT, "due_at": "2026-03-03T02:00:00Z"}
    yangon = render("task_assigned", "my", context, timezone="Asia/Yangon")
    bangkok = render("task_assigned", "th", context, timezone="Asia/Bangkok")
    assert "2026-03-03 08:30 (UTC+06:30)" in yangon.body
    assert "2026-03-03 09:00 (UTC+07:00)" in bangkok.body
    assert "2026-03-03T02:00" not in yangon.body + bangkok.body


# -- HTML ---------------------------------------------------------------------------------------


def test_html_escapes_what_the_sop_asks() -> None:
    context = {**FULL_CONTEXT, "ask": "<script>alert(1)</script>"}
    html = render("task_assigned", "en", context, html=True)
    text = render("task_assigned", "en", context)
    assert "<script>" not in html.body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html.body
    assert "<br>" in html.body
    assert "<script>alert(1)</script>" in text.body
    assert html.subject == text.subject
