"""Consent as a ledger: grants and withdrawals, the rules for children, and coverage.

A grant records who consented (the survivor, a caregiver, a trusted adult, or the caseworker
deciding in a child's best interest), for which scope of the SOP (purpose, recipient, data
categories, country) and until when. A withdrawal is a separate, later record; nothing is
ever overwritten. A grant names what the survivor agreed to: one agency of the directory, or
agencies of given types in a country, and the data categories (the scope's, or fewer). A
disclosure is allowed only under a grant that covers its recipient agency, that agency's
country and every data category disclosed, is unexpired and is not withdrawn.

Children (Caring for Child Survivors, IRC/UNICEF 2012; the bands are to be verified against
each country's law, see DOMAIN.md):

=======  =====================================================================
age      who consents
=======  =====================================================================
0-5      a caregiver (assent not required)
6-11     a caregiver, with the child's verbal (or written) assent
12-14    a caregiver, with the child's written assent
15-17    the child herself
18+      the survivor herself
=======  =====================================================================

Where the caregiver is not safe, a trusted adult or the caseworker decides in the child's
best interest, with the same assent; that basis needs a written reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, or_, select

from sop_engine.errors import InvalidInput
from sop_engine.language.spec import ConsentScope, SopSpec
from sop_engine.persistence import tables
from sop_engine.runtime.recipients import Recipient

__all__ = [
    "ASSENT",
    "GIVEN_BY",
    "AgeBand",
    "age_band",
    "check_basis",
    "covering_grant",
    "live_grants",
    "resolve_country",
    "scope_country",
    "uncovered",
    "why_not_covered",
]

GIVEN_BY = ("survivor", "caregiver", "trusted_adult", "caseworker")
ASSENT = ("none", "verbal", "written", "not_required")

_G = tables.consent_grants
_W = tables.consent_withdrawals


@dataclass(frozen=True, slots=True)
class AgeBand:
    name: str
    low: int
    high: int
    own_consent: bool
    """True when the survivor consents herself; otherwise a caregiver (or substitute) does."""
    assent: tuple[str, ...]
    """The child's assent that is enough, when someone else consents."""


AGE_BANDS = (
    AgeBand("0-5", 0, 5, own_consent=False, assent=("none", "verbal", "written", "not_required")),
    AgeBand("6-11", 6, 11, own_consent=False, assent=("verbal", "written")),
    AgeBand("12-14", 12, 14, own_consent=False, assent=("written",)),
    AgeBand("15-17", 15, 17, own_consent=True, assent=()),
    AgeBand("18+", 18, 130, own_consent=True, assent=()),
)


def age_band(age: int) -> AgeBand:
    for band in AGE_BANDS:
        if band.low <= age <= band.high:
            return band
    raise InvalidInput(f"survivor_age {age} is not a plausible age", field="survivor_age")


def check_basis(age: int, given_by: str, assent: str, substitute_reason: str | None) -> AgeBand:
    """Refuse a grant whose basis does not fit the survivor's age; return the age band."""
    if given_by not in GIVEN_BY:
        raise InvalidInput(f"given_by must be one of {', '.join(GIVEN_BY)}", field="given_by")
    if assent not in ASSENT:
        raise InvalidInput(f"assent must be one of {', '.join(ASSENT)}", field="assent")
    band = age_band(age)
    if band.own_consent:
        if given_by != "survivor":
            who = "an adult survivor" if band.low >= 18 else "a child aged 15 to 17"
            raise InvalidInput(f"{who} gives her own consent: given_by must be 'survivor'",
                               field="given_by")  # fmt: skip
        return band
    if given_by == "survivor":
        raise InvalidInput(
            f"a child aged {band.name} cannot consent alone: a caregiver consents "
            "(or, where the caregiver is not safe, a trusted adult or the caseworker)",
            field="given_by",
        )
    if given_by in ("trusted_adult", "caseworker") and not (substitute_reason or "").strip():
        raise InvalidInput(
            f"consent by a {given_by.replace('_', ' ')} instead of the caregiver needs a "
            "written reason (the caregiver is not safe)",
            field="substitute_reason",
        )
    if assent not in band.assent:
        needed = " or ".join(band.assent)
        raise InvalidInput(f"a child aged {band.name} must give {needed} assent", field="assent")
    return band


def resolve_country(country: str, origin: str, destination: str) -> str:
    """A scope's or agency's country: a code, ``origin``, ``destination`` or ``any``."""
    return {"origin": origin, "destination": destination}.get(country, country)


def live_grants(
    conn: Connection, *, referral_id: str, scope: ConsentScope, now: datetime
) -> list[Row[Any]]:
    """The grants of ``scope`` neither expired nor withdrawn, newest first."""
    withdrawn = select(_W.c.grant_id).where(_W.c.referral_id == referral_id)
    return list(
        conn.execute(
            select(_G)
            .where(
                _G.c.referral_id == referral_id,
                _G.c.scope == scope.name,
                or_(_G.c.expires_at.is_(None), _G.c.expires_at > now),
                _G.c.id.not_in(withdrawn),
            )
            .order_by(_G.c.granted_at.desc())
        ).all()
    )


def uncovered(grant: Row[Any], recipient: Recipient | None, categories: set[str]) -> list[str]:
    """What of a disclosure to ``recipient`` of ``categories`` the grant does not cover (empty
    when it covers it). Without a recipient, only the categories are compared."""
    missing = []
    if recipient is not None:
        if grant.recipient_agency_id is not None:
            if grant.recipient_agency_id != recipient.id:
                missing.append(
                    f"agency {recipient.id} (the grant names {grant.recipient_agency_id})"
                )
        else:
            types = grant.recipient_types
            if types is not None and not set(types) & set(recipient.types):
                missing.append(
                    f"an agency of type {', '.join(recipient.types) or 'none'} (the grant covers "
                    f"{', '.join(types)})"
                )
            if grant.country not in ("any", recipient.country):
                missing.append(f"country {recipient.country} (the grant covers {grant.country})")
    extra = sorted(categories - set(grant.data_categories))
    if extra:
        missing.append(f"data categories {', '.join(extra)}")
    return missing


def covering_grant(
    conn: Connection,
    *,
    referral_id: str,
    scope: ConsentScope,
    recipient: Recipient | None,
    categories: set[str],
    now: datetime,
) -> Row[Any] | None:
    """The newest unexpired, unwithdrawn grant of ``scope`` that covers the disclosure."""
    for row in live_grants(conn, referral_id=referral_id, scope=scope, now=now):
        if not uncovered(row, recipient, categories):
            return row
    return None


def why_not_covered(
    conn: Connection,
    *,
    referral_id: str,
    scope: ConsentScope,
    recipient: Recipient | None,
    categories: set[str],
    now: datetime,
) -> str:
    """Why no grant covers the disclosure, in words: none is given (or all lapsed), or what the
    newest grant of the scope leaves out."""
    grants = live_grants(conn, referral_id=referral_id, scope=scope, now=now)
    if not grants:
        return (
            f"record consent for scope {scope.name!r} ({scope.purpose}) first; none is given, "
            "or it expired or was withdrawn"
        )
    gaps = uncovered(grants[0], recipient, categories)
    return f"the survivor's consent for scope {scope.name!r} does not cover " + "; ".join(gaps)


def scope_country(spec: SopSpec, scope: ConsentScope, origin: str, destination: str) -> str:
    """The country a scope covers, resolved for a referral: the scope's own, else its agency
    slot's, else the one country of a national SOP; ``any`` when none says."""
    if scope.country != "any":
        return resolve_country(scope.country, origin, destination)
    agency = spec.agencies.get(scope.recipient)
    if agency is not None and agency.country != "any":
        return resolve_country(agency.country, origin, destination)
    countries = spec.jurisdiction.countries
    return countries[0] if len(countries) == 1 else "any"
