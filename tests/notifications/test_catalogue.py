"""Reading the review flag a native speaker clears."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from notifications.catalogue import MalformedReviewFlag, ReviewStatus, review_status

BODY = "{% block subject %}Case {{ case_code }}{% endblock %}{% block body %}x{% endblock %}\n"


def write(root: Path, lang: str, first_line: str) -> None:
    (root / "case_closed").mkdir(exist_ok=True)
    (root / "case_closed" / f"{lang}.j2").write_text(first_line + "\n" + BODY, encoding="utf-8")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{# review: pending native-speaker review #}", ReviewStatus("pending")),
        ("{#  review:  pending native-speaker review  #}", ReviewStatus("pending")),
        ("{# review: done by KP on 2026-04-01 #}", ReviewStatus("done", "KP", date(2026, 4, 1))),
        (
            "{# review: done by ntt on 2026-12-31 #}",
            ReviewStatus("done", "NTT", date(2026, 12, 31)),
        ),
        ("{% block subject %}no flag at all{% endblock %}", ReviewStatus("pending")),
    ],
)
def test_review_flags_are_read(tmp_path: Path, line: str, expected: ReviewStatus) -> None:
    write(tmp_path, "th", line)
    assert review_status("case_closed", "th", tmp_path) == expected


@pytest.mark.parametrize(
    "line",
    [
        "{# review: done #}",
        "{# review: done by Kanya Phommachanh on 2026-04-01 #}",
        "{# review: done by KP on 01/04/2026 #}",
        "{# review: done by KP on 2026-13-01 #}",
        "{# review: pnding native-speaker review #}",
        "{# reviewed by KP #}",
    ],
)
def test_a_flag_that_cannot_be_read_is_refused(tmp_path: Path, line: str) -> None:
    """A typo must never clear a translation."""
    write(tmp_path, "lo", line)
    with pytest.raises(MalformedReviewFlag, match=r"lo\.j2:1"):
        review_status("case_closed", "lo", tmp_path)


def test_english_is_the_source(tmp_path: Path) -> None:
    write(tmp_path, "en", "{% block subject %}Case{% endblock %}")
    assert review_status("case_closed", "en", tmp_path) == ReviewStatus("source")
    assert not ReviewStatus("source").needs_review


def test_an_english_file_with_a_flag_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "en", "{# review: pending native-speaker review #}")
    with pytest.raises(MalformedReviewFlag, match="English is the source"):
        review_status("case_closed", "en", tmp_path)
