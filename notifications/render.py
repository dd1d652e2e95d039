"""Render an outbox row into a message in the recipient's language and time zone.

The outbox context carries only a case code and what the SOP asks (see
``catalogue.CONTEXT_KEYS``); the renderer passes templates only those keys, so a template
cannot show anything else even if a caller adds it. ``due_at`` (ISO 8601, UTC) reaches the
template as ``due_local``, a date-time in the recipient's time zone such as
``2026-03-03 08:30 (UTC+07:00)``, or None when nothing is due by a set time: each template
says "as soon as possible" in its own language then.

Undefined variables are errors (``StrictUndefined``): a template that refers to a key its
sender does not send fails with ``jinja2.UndefinedError`` rather than sending a gap.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, TemplateNotFound

from notifications.catalogue import FALLBACK_LANGUAGE, TEMPLATES_DIR, review_status

__all__ = ["CONTEXT_VARIABLES", "RenderedMessage", "Renderer", "due_local", "render"]

CONTEXT_VARIABLES = frozenset(
    {
        "case_code",
        "event",
        "state",
        "service",
        "ask",
        "deadline",
        "level",
        "scope",
        "reason",
        "outcome",
    }
)
"""The outbox context keys a template may read, besides ``due_local``. Others are dropped."""

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_LANGUAGE = re.compile(r"[a-z]{2,3}")


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """A message ready for a channel: ``subject`` is one line of plain text; ``body`` is plain
    text, or escaped HTML when rendered with ``html=True``. ``language`` is the language
    actually used (English when the recipient's has no translation); ``needs_review`` is True
    when that translation still awaits a native speaker's review."""

    subject: str
    body: str
    language: str
    needs_review: bool


class Renderer:
    """Renders the templates under one folder (by default the shipped ones)."""

    def __init__(self, root: Path = TEMPLATES_DIR) -> None:
        self.root = root
        self._text = _environment(root, html=False)
        self._html = _environment(root, html=True)

    def render(
        self,
        template: str,
        language: str,
        context: Mapping[str, Any],
        *,
        timezone: str = "UTC",
        html: bool = False,
    ) -> RenderedMessage:
        """Render ``template`` for a recipient who reads ``language`` in ``timezone``.

        ``language`` may be a tag such as ``th-TH``; its primary subtag picks the file.
        Raises ``ValueError`` for a malformed template name, ``jinja2.TemplateNotFound``
        when the template has no English file, ``jinja2.UndefinedError`` when the context
        lacks a key the template uses, and ``zoneinfo.ZoneInfoNotFoundError`` for an
        unknown time zone.
        """
        if not _NAME.fullmatch(template):
            raise ValueError(f"not a template name: {template!r}")
        used = self._language(template, _primary_subtag(language))
        variables = {k: v for k, v in context.items() if k in CONTEXT_VARIABLES}
        variables["due_local"] = due_local(context.get("due_at"), timezone)
        path = f"{template}/{used}.j2"
        subject = " ".join(_block(self._text.get_template(path), "subject", variables).split())
        if not subject:
            raise ValueError(f"{self.root / path}: the subject renders empty")
        body = _block((self._html if html else self._text).get_template(path), "body", variables)
        if html:
            # The autoescaped body is safe HTML already; keep its line breaks visible.
            body = "<br>\n".join(body.strip().splitlines())
        return RenderedMessage(
            subject=subject,
            body=body.strip(),
            language=used,
            needs_review=review_status(template, used, self.root).needs_review,
        )

    def _language(self, template: str, wanted: str) -> str:
        if (self.root / template / f"{wanted}.j2").is_file():
            return wanted
        if (self.root / template / f"{FALLBACK_LANGUAGE}.j2").is_file():
            return FALLBACK_LANGUAGE
        raise TemplateNotFound(f"{template}/{FALLBACK_LANGUAGE}.j2")


def render(
    template: str,
    language: str,
    context: Mapping[str, Any],
    *,
    timezone: str = "UTC",
    html: bool = False,
) -> RenderedMessage:
    """Render one of the shipped templates; see ``Renderer.render``."""
    return _default().render(template, language, context, timezone=timezone, html=html)


def due_local(due_at: str | datetime | None, timezone: str) -> str | None:
    """``due_at`` as ``YYYY-MM-DD HH:MM (UTC±HH:MM)`` in ``timezone``; None stays None.

    Numeric and with its offset, so that agencies on both sides of a border read the same
    moment. A time without an offset is taken as UTC, the outbox's convention.
    """
    zone = ZoneInfo(timezone)  # a recipient's unknown zone is an error even with no due time
    if due_at is None:
        return None
    moment = datetime.fromisoformat(due_at) if isinstance(due_at, str) else due_at
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone(zone)
    offset = local.utcoffset()
    minutes = int(offset.total_seconds()) // 60 if offset is not None else 0
    sign = "+" if minutes >= 0 else "-"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{local:%Y-%m-%d %H:%M} (UTC{sign}{hours:02d}:{minutes:02d})"


def _primary_subtag(language: str) -> str:
    """``th-TH`` and ``th_TH`` read as ``th``; anything unreadable as English."""
    primary = re.split(r"[-_]", language.strip(), maxsplit=1)[0].lower()
    return primary if _LANGUAGE.fullmatch(primary) else FALLBACK_LANGUAGE


def _block(template: Template, name: str, variables: Mapping[str, Any]) -> str:
    try:
        block = template.blocks[name]
    except KeyError:
        raise ValueError(f"{template.filename}: no {{% block {name} %}}") from None
    return "".join(block(template.new_context(dict(variables))))


@cache
def _environment(root: Path, *, html: bool) -> Environment:
    return Environment(
        loader=FileSystemLoader(root, encoding="utf-8"),
        undefined=StrictUndefined,
        # Plain text must stay plain: escaping would show a reader "&amp;" for "&".
        autoescape=html,  # noqa: S701
        trim_blocks=True,
        lstrip_blocks=True,
    )


@cache
def _default() -> Renderer:
    return Renderer()
