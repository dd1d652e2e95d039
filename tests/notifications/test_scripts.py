"""Every notification template is written in its language's script: a Thai file in Thai, a
Khmer file in Khmer, and so on; English, the source, in Latin letters only. An English copy
saved as ``th.j2``, or a Lao text saved as ``th.j2``, is refused.

What is measured is the prose a recipient reads: the text outside Jinja markup, plus the
quoted strings inside it (``{{ due_local or "โดยเร็วที่สุด" }}`` shows its fallback text).
Jinja comments, variable names, tags, URLs, e-mail addresses, case codes and other ASCII
placeholders are left out."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import pytest

from notifications.catalogue import FALLBACK_LANGUAGE, TEMPLATES_DIR, languages_of, template_names


@dataclass(frozen=True, slots=True)
class Script:
    """A writing system, by the Unicode blocks its letters and marks come from."""

    name: str
    blocks: tuple[range, ...]

    def __contains__(self, char: str) -> bool:
        return any(ord(char) in block for block in self.blocks)


THAI = Script("Thai", (range(0x0E00, 0x0E80),))
LAO = Script("Lao", (range(0x0E80, 0x0F00),))
KHMER = Script("Khmer", (range(0x1780, 0x1800), range(0x19E0, 0x1A00)))
MYANMAR = Script("Myanmar", (range(0x1000, 0x10A0), range(0xAA60, 0xAA80), range(0xA9E0, 0xAA00)))
SCRIPTS = {"th": THAI, "lo": LAO, "km": KHMER, "my": MYANMAR}
"""The languages written in a script of their own."""

LATIN_LANGUAGES = frozenset({"en", "vi"})

OWN_SCRIPT_SHARE = 0.9
"""At least this share of a file's letters are in its language's own script."""
VIETNAMESE_SHARE = 0.2
"""At least this share of a Vietnamese file's letters carry Vietnamese diacritics (about a
third do in the shipped files); English prose has next to none."""
ENGLISH_VIETNAMESE_SHARE = 0.05
"""At most this share of an English file's letters may carry such diacritics."""
MIN_LETTERS = 20
"""A template shorter than this says too little to be measured, and is refused."""

_VIETNAMESE_MARKS = frozenset(
    {
        "\u0300",  # grave (huyền)
        "\u0301",  # acute (sắc)
        "\u0303",  # tilde (ngã)
        "\u0309",  # hook above (hỏi)
        "\u0323",  # dot below (nặng)
        "\u0302",  # circumflex: â ê ô
        "\u0306",  # breve: ă
        "\u031b",  # horn: ơ ư
    }
)
_JINJA = re.compile(r"\{#.*?#\}|\{%.*?%\}|\{\{.*?\}\}", re.DOTALL)
_QUOTED = re.compile(r"\"([^\"]*)\"|'([^']*)'")
_PLACEHOLDERS = re.compile(
    r"https?://\S+"  # URLs
    r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"  # e-mail addresses
    r"|\b[A-Z0-9]+(?:-[A-Z0-9]+)+\b"  # case codes such as R7KQ-M2XD-9PTA, agency ids
    r"|\b[A-Za-z0-9]+(?:_[A-Za-z0-9]+)+\b",  # snake_case names of states and events
    re.ASCII,
)


def prose(template: str) -> str:
    """The text of ``template`` a recipient reads, without markup or placeholders."""

    def shown(markup: re.Match[str]) -> str:
        if markup.group().startswith("{#"):
            return " "
        quoted = (double or single for double, single in _QUOTED.findall(markup.group()))
        return " " + " ".join(quoted) + " "

    text = unicodedata.normalize("NFC", _JINJA.sub(shown, template))
    return _PLACEHOLDERS.sub(" ", text)


def is_latin(char: str) -> bool:
    return unicodedata.name(char, "").startswith(("LATIN ", "COMBINING "))


def is_vietnamese(char: str) -> bool:
    """A Latin letter with a Vietnamese vowel or tone mark, or đ."""
    if char in "đĐ":
        return True
    return is_latin(char) and any(
        mark in _VIETNAMESE_MARKS for mark in unicodedata.normalize("NFD", char)
    )


def script_problems(template: str, language: str) -> list[str]:
    """Why ``template`` is not written in ``language``'s script; empty when it is."""
    letters = [c for c in prose(template) if unicodedata.category(c)[0] in "LM"]
    if len(letters) < MIN_LETTERS:
        return [f"only {len(letters)} letters of prose, fewer than {MIN_LETTERS}"]
    problems = []
    for other_language, script in SCRIPTS.items():
        if other_language == language:
            continue
        strays = sorted({c for c in letters if c in script})
        if strays:
            problems.append(f"{script.name} letters {''.join(strays)!r} in a {language} file")
    own = SCRIPTS.get(language)
    foreign = sorted(
        {c for c in letters if not is_latin(c) and not any(c in s for s in SCRIPTS.values())}
    )
    if foreign:
        problems.append(f"letters of no expected script: {''.join(foreign)!r}")
    if own is not None:
        share = sum(c in own for c in letters) / len(letters)
        if share < OWN_SCRIPT_SHARE:
            problems.append(
                f"{share:.0%} of the letters are {own.name}, fewer than {OWN_SCRIPT_SHARE:.0%}"
            )
    elif language in LATIN_LANGUAGES:
        share = sum(is_vietnamese(c) for c in letters) / len(letters)
        if language == "vi" and share < VIETNAMESE_SHARE:
            problems.append(
                f"{share:.0%} of the letters carry Vietnamese diacritics, "
                f"fewer than {VIETNAMESE_SHARE:.0%}: is this Vietnamese?"
            )
        if language == "en" and share > ENGLISH_VIETNAMESE_SHARE:
            problems.append(
                f"{share:.0%} of the letters carry Vietnamese diacritics: is this English?"
            )
    else:
        problems.append(f"no script is known for language {language!r}")
    return problems


TEMPLATE_FILES = sorted(
    (name, language) for name in template_names() for language in languages_of(name)
)


@pytest.mark.parametrize(
    ("name", "language"),
    TEMPLATE_FILES,
    ids=[f"{name}/{language}" for name, language in TEMPLATE_FILES],
)
def test_every_template_is_written_in_its_languages_script(name: str, language: str) -> None:
    template = (TEMPLATES_DIR / name / f"{language}.j2").read_text(encoding="utf-8")
    assert script_problems(template, language) == []


def test_the_shipped_templates_are_all_measured() -> None:
    assert len(TEMPLATE_FILES) > len(template_names())
    assert {language for _, language in TEMPLATE_FILES} == {*SCRIPTS, *LATIN_LANGUAGES}
    assert FALLBACK_LANGUAGE in LATIN_LANGUAGES


@pytest.mark.parametrize("name", sorted(template_names()))
def test_each_shipped_text_saved_under_another_language_is_refused(name: str) -> None:
    """An English copy saved as ``th.j2``, a Lao text saved as ``th.j2``, and every other
    swap of two of a notification's files."""
    texts = {
        language: (TEMPLATES_DIR / name / f"{language}.j2").read_text(encoding="utf-8")
        for language in languages_of(name)
    }
    for written_in, text in texts.items():
        for saved_as in texts.keys() - {written_in}:
            assert script_problems(text, saved_as), f"{written_in} text passes as {saved_as}"


# -- the check itself, on synthetic texts -----------------------------------------------------

ENGLISH = (
    "{% block body %}Case {{ case_code }} was sent to you. Please acknowledge it.{% endblock %}"
)
THAI_TEXT = "{% block body %}เคส {{ case_code }} ถูกส่งถึงท่านแล้ว โปรดตอบรับเคสนี้{% endblock %}"
LAO_TEXT = "{% block body %}ກໍລະນີ {{ case_code }} ໄດ້ຖືກສົ່ງຫາທ່ານແລ້ວ ກະລຸນາຕອບຮັບ{% endblock %}"
KHMER_TEXT = "{% block body %}ករណី {{ case_code }} ត្រូវបានផ្ញើមកអ្នក។ សូមទទួលស្គាល់ករណីនេះ។{% endblock %}"
MYANMAR_TEXT = (
    "{% block body %}ကိစ္စရပ် {{ case_code }} ကို သင့်ထံ ပေးပို့ပြီးပါပြီ။ လက်ခံကြောင်း အကြောင်းပြန်ပါ။{% endblock %}"
)
VIETNAMESE = (
    "{% block body %}Hồ sơ {{ case_code }} đã được gửi đến bạn. Vui lòng xác nhận.{% endblock %}"
)
GOOD = {
    "en": ENGLISH,
    "th": THAI_TEXT,
    "lo": LAO_TEXT,
    "km": KHMER_TEXT,
    "my": MYANMAR_TEXT,
    "vi": VIETNAMESE,
}


@pytest.mark.parametrize("language", sorted(GOOD))
def test_a_text_in_its_own_script_passes(language: str) -> None:
    assert script_problems(GOOD[language], language) == []


@pytest.mark.parametrize(
    ("language", "text"),
    [
        pytest.param("th", LAO_TEXT, id="lao-as-th"),
        pytest.param("th", ENGLISH, id="english-as-th"),
        pytest.param("km", ENGLISH, id="english-as-km"),
        pytest.param("km", THAI_TEXT, id="thai-as-km"),
        pytest.param("lo", THAI_TEXT, id="thai-as-lo"),
        pytest.param("my", KHMER_TEXT, id="khmer-as-my"),
        pytest.param("vi", ENGLISH, id="english-as-vi"),
        pytest.param("vi", THAI_TEXT, id="thai-as-vi"),
        pytest.param("en", VIETNAMESE, id="vietnamese-as-en"),
        pytest.param("en", MYANMAR_TEXT, id="myanmar-as-en"),
    ],
)
def test_a_text_in_another_script_is_refused(language: str, text: str) -> None:
    assert script_problems(text, language)


def test_a_few_letters_of_another_script_are_refused_even_in_a_mostly_right_text() -> None:
    mixed = THAI_TEXT.replace("โปรด", "ກະລຸນາ")  # one Lao word in a Thai text
    problems = script_problems(mixed, "th")
    assert problems
    assert "Lao letters" in problems[0]


def test_markup_urls_and_case_codes_are_not_measured() -> None:
    thai = (
        "{# a comment in English, for the translators #}\n"
        "{% block subject %}เคส {{ case_code }} R7KQ-M2XD-9PTA{% endblock %}\n"
        "{% block body %}{% if due_local %}ครบกำหนด {{ due_local }}{% endif %} "
        "ดูรายละเอียดที่ https://referrals.example.org/cases/R7KQ-M2XD-9PTA/timeline "
        "ในสถานะ return_referral หรือเขียนถึง focal.point@example.org{% endblock %}"
    )
    assert script_problems(thai, "th") == []
    assert prose(thai).split() == ["เคส", "ครบกำหนด", "ดูรายละเอียดที่", "ในสถานะ", "หรือเขียนถึง"]


def test_the_quoted_fallback_inside_markup_is_measured() -> None:
    untranslated = (
        "{% block body %}เคส {{ case_code }} ครบกำหนด "
        '{{ due_local or "as soon as possible, please, before the end of today" }}{% endblock %}'
    )
    assert "as soon as possible" in prose(untranslated)
    assert script_problems(untranslated, "th")


def test_a_template_with_almost_no_prose_is_refused() -> None:
    assert script_problems("{% block body %}{{ case_code }}{% endblock %}", "th")


def test_a_language_without_a_known_script_is_refused() -> None:
    assert script_problems(ENGLISH, "fr") == ["no script is known for language 'fr'"]
