"""An SOP version's dates: no referral starts on a version not yet in effect, and one due
for review says so.

``effective`` and ``review`` are dates in the SOP's own time zone (``timezone``, UTC when it
names none): a version is in effect from the start of its effective day there, and due for
review once its review day has begun. A new referral without a version gets the latest
version in effect; one asking for a version not in effect yet is refused, naming the day it
takes effect. A version due for review still starts referrals, each warned (the warning is in
the answer and on the creation's timeline entry), unless the deployment refuses them
(``SOP_ENGINE_REFUSE_SOPS_PAST_REVIEW``); ``GET /sops`` and ``/metrics`` show every
version's status to coordinators and operators.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from sop_engine.errors import InvalidInput, NotFound
from sop_engine.language.compiler import CompiledSop, SopLibrary
from sop_engine.language.spec import SopSpec

__all__ = ["DateStatus", "date_status", "local_today", "review_warning", "version_for_new_referral"]

DateStatus = Literal["not_in_effect", "in_effect", "review_due"]


def local_today(spec: SopSpec, now: datetime) -> date:
    """The day it is now where the SOP applies."""
    zone = ZoneInfo(spec.timezone) if spec.timezone else UTC
    return now.astimezone(zone).date()


def date_status(spec: SopSpec, now: datetime) -> DateStatus:
    """Whether ``spec`` is not in effect yet, in effect, or in effect and due for review."""
    today = local_today(spec, now)
    if today < spec.effective:
        return "not_in_effect"
    return "review_due" if today >= spec.review else "in_effect"


def review_warning(spec: SopSpec) -> str:
    return (
        f"{spec.ref} was due for review on {spec.review.isoformat()}: its coordinators should "
        "review it and publish a new version"
    )


def version_for_new_referral(
    library: SopLibrary,
    key: str,
    version: int | None,
    now: datetime,
    *,
    refuse_past_review: bool = False,
) -> tuple[CompiledSop, tuple[str, ...]]:
    """The version a new referral starts on, and the warnings to give with it.

    :raises NotFound: no such SOP (or version).
    :raises InvalidInput: on ``sop_version``: the version asked for, or every version of
        ``key``, is not in effect yet; or it is due for review and the deployment refuses
        those.
    """
    if version is not None:
        sop = library.get(key, version)
    else:
        versions = sorted((s for s in library if s.key == key), key=lambda s: -s.version)
        if not versions:
            library.get(key)  # the NotFound, with its "did you mean"
            raise NotFound(f"no SOP {key}")
        usable = [s for s in versions if date_status(s.spec, now) != "not_in_effect"]
        if not usable:
            first = min(versions, key=lambda s: s.spec.effective).spec
            raise InvalidInput(
                f"no version of {key} is in effect yet: {first.ref} takes effect on "
                f"{first.effective.isoformat()}",
                field="sop_version",
            )
        sop = usable[0]
    spec = sop.spec
    status = date_status(spec, now)
    if status == "not_in_effect":
        raise InvalidInput(
            f"{spec.ref} is not in effect yet: it takes effect on {spec.effective.isoformat()}",
            field="sop_version",
        )
    if status == "review_due":
        if refuse_past_review:
            raise InvalidInput(
                f"{spec.ref} was due for review on {spec.review.isoformat()}, and this "
                "deployment starts no referral on an SOP due for review",
                field="sop_version",
            )
        return sop, (review_warning(spec),)
    return sop, ()
