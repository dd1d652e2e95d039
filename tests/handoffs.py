"""What tests send with a handoff's answers: a delivery reports its outcome."""

from __future__ import annotations

DELIVERED = {"outcome": "successful"}
"""The payload of a successful ``NAME.deliver``."""


def answer_payload(action: str) -> dict[str, str] | None:
    """The payload of the answer ``action`` (``deliver`` or ``NAME.deliver``) in a test that
    walks a handoff to its end: a successful delivery; nothing for the other answers."""
    return DELIVERED if action.rsplit(".", 1)[-1] == "deliver" else None
