"""Which notification templates exist, in which languages, what they may show, and whether
a native speaker has reviewed each translation.

Templates live in ``notifications/templates/NAME/LANG.j2``: one folder per notification,
one file per language. English (``en``) is required for every template; it is the fallback
when the recipient's language has none.

Every translation starts with a machine-readable review flag, a Jinja comment on the first
line. A machine translation or a first draft carries ``{# review: pending native-speaker
review #}``; a native speaker who has checked it replaces that line with ``{# review: done by
<INITIALS> on <YYYY-MM-DD> #}``. English files are the source text and carry no flag.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

__all__ = [
    "CONTEXT_KEYS",
    "FALLBACK_LANGUAGE",
    "LANGUAGES",
    "REVIEW_PENDING",
    "TEMPLATES_DIR",
    "MalformedReviewFlag",
    "ReviewStatus",
    "languages_of",
    "review_status",
    "template_names",
]

TEMPLATES_DIR = Path(__file__).parent / "templates"
FALLBACK_LANGUAGE = "en"

LANGUAGES = ("en", "th", "km", "lo", "my", "vi")
"""The languages every template is written in: English, Thai, Khmer, Lao, Burmese, Vietnamese."""

_TRANSITION = frozenset(
    {"case_code", "event", "state", "service", "ask", "due_at", "reason", "outcome"}
)
"""``reason`` and ``outcome``: a handoff answer's (decline, deliver); None on other
transitions. Structured codes from the SOP, never free text."""
_ESCALATION = frozenset({"case_code", "event", "state", "deadline", "level", "ask", "due_at"})
_WITHDRAWAL = frozenset({"case_code", "event", "state", "scope", "ask"})
_DELIVERY_FAILURE = frozenset({"case_code", "event", "state", "ask"})
_TRANSFER = frozenset({"case_code", "event", "state", "ask", "due_at", "reason"})
"""A case transfer's steps (``runtime.transfer``): ``reason`` is a decline's code from the
SOP; the transfer's agencies are never named in the text."""

CONTEXT_KEYS: Mapping[str, frozenset[str]] = {
    "task_assigned": _TRANSITION,
    "referral_received": _TRANSITION,
    "referral_acknowledged": _TRANSITION,
    "referral_accepted": _TRANSITION,
    "referral_delivered": _TRANSITION,
    "referral_declined": _TRANSITION,
    "referral_revoked": _TRANSITION,
    # A reminder is the first rung of an escalation ladder, but an SOP may also send it on a
    # transition: it may rely only on what both senders put in the context.
    "deadline_reminder": _TRANSITION & _ESCALATION,
    "deadline_escalated": _ESCALATION,
    "consent_withdrawn": _WITHDRAWAL,
    "case_closed": _TRANSITION,
    "feedback_received": _TRANSITION,
    # To the coordinators, when another notification kept failing: nothing is due by a set
    # time, and no service or deadline is named.
    "delivery_failed": _DELIVERY_FAILURE,
    "transfer_requested": _TRANSFER,
    "transfer_accepted": _TRANSFER,
    "transfer_declined": _TRANSFER,
    "transfer_cancelled": _TRANSFER,
}
"""For each notification, the outbox context keys its sender guarantees (transitions in
``runtime.fire``, escalations in ``runtime.deadlines``, withdrawals in ``runtime.ledger``,
failed deliveries in ``runtime.outbox``, transfers in ``runtime.transfer``).
A template uses only these, with ``due_local`` in place of ``due_at``."""

REVIEW_PENDING = "{# review: pending native-speaker review #}"
_PENDING_TEXT = "pending native-speaker review"
_FLAG = re.compile(r"\{#\s*review:(?P<text>.*?)#\}")
_DONE = re.compile(r"done by (?P<by>[A-Za-z]{2,6}) on (?P<on>\d{4}-\d{2}-\d{2})")


class MalformedReviewFlag(ValueError):
    """A template's first line is a review flag that neither says pending nor done properly.

    Refused rather than guessed, so that a typo can never clear a translation by accident.
    """


@dataclass(frozen=True, slots=True)
class ReviewStatus:
    """Where a template file stands: the English source, a pending translation, or a
    translation a native speaker has checked (``reviewer``'s initials, ``reviewed_on``)."""

    state: Literal["source", "pending", "done"]
    reviewer: str | None = None
    reviewed_on: date | None = None

    @property
    def needs_review(self) -> bool:
        return self.state == "pending"


def template_names(root: Path = TEMPLATES_DIR) -> frozenset[str]:
    """Names of the templates that have at least the fallback language."""
    if not root.is_dir():
        return frozenset()
    return frozenset(
        d.name for d in root.iterdir() if d.is_dir() and (d / f"{FALLBACK_LANGUAGE}.j2").is_file()
    )


def languages_of(name: str, root: Path = TEMPLATES_DIR) -> frozenset[str]:
    """The languages template ``name`` is written in."""
    folder = root / name
    return frozenset(p.name.removesuffix(".j2") for p in folder.glob("*.j2"))


def review_status(name: str, language: str, root: Path = TEMPLATES_DIR) -> ReviewStatus:
    """Read the review flag on the first line of ``NAME/LANGUAGE.j2``.

    A translation without a flag counts as pending: only a native speaker's ``done`` line
    clears it. Raises ``FileNotFoundError`` when there is no such file and
    ``MalformedReviewFlag`` when the flag cannot be read.
    """
    path = root / name / f"{language}.j2"
    with path.open(encoding="utf-8") as f:
        first = f.readline().strip()
    flag = _FLAG.fullmatch(first)
    if flag is None:
        if first.startswith("{#") and "review" in first:
            raise MalformedReviewFlag(f"{path}:1: cannot read the review flag {first!r}")
        return ReviewStatus("source" if language == FALLBACK_LANGUAGE else "pending")
    if language == FALLBACK_LANGUAGE:
        raise MalformedReviewFlag(f"{path}:1: English is the source text and takes no flag")
    text = " ".join(flag["text"].split())
    if text == _PENDING_TEXT:
        return ReviewStatus("pending")
    done = _DONE.fullmatch(text)
    if done is None:
        raise MalformedReviewFlag(
            f"{path}:1: expected {REVIEW_PENDING!r} or "
            f"'{{# review: done by <INITIALS> on <YYYY-MM-DD> #}}', found {first!r}"
        )
    try:
        on = date.fromisoformat(done["on"])
    except ValueError as exc:
        raise MalformedReviewFlag(f"{path}:1: {done['on']!r} is not a date") from exc
    return ReviewStatus("done", reviewer=done["by"].upper(), reviewed_on=on)
