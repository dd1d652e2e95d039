"""Who may call which route: one table, (method, path template) -> the roles allowed.

Every route is in :data:`PERMISSIONS` or :data:`PUBLIC`; a test fails when one is missing,
and :func:`authorize` refuses (403) a route it does not find, so a forgotten entry fails
closed. This is the coarse check; the SOP decides who may fire which event, and the referral
routes check that the user's agency takes part in the referral (404 when it does not).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["PERMISSIONS", "PUBLIC", "allowed"]

COORDINATOR = "coordinator"
CASEWORKER = "caseworker"
SUPERVISOR = "supervisor"
FOCAL_POINT = "agency_focal_point"
AUDITOR = "auditor"

_SOP_READERS = frozenset({COORDINATOR, AUDITOR})
_CASE_WORKERS = frozenset({CASEWORKER, SUPERVISOR, FOCAL_POINT})

PUBLIC: frozenset[tuple[str, str]] = frozenset({("GET", "/health")})
"""Routes anyone may call, without a token."""

PERMISSIONS: Mapping[tuple[str, str], frozenset[str]] = {
    ("GET", "/sops"): _SOP_READERS,
    ("GET", "/sops/{key}/{version}"): _SOP_READERS,
    ("GET", "/sops/{key}/{version}/diagram"): _SOP_READERS,
    ("POST", "/sops/validate"): frozenset({COORDINATOR}),
    ("POST", "/referrals"): frozenset({CASEWORKER}),
    ("GET", "/referrals/{case_code}"): _CASE_WORKERS,
    ("POST", "/referrals/{case_code}/events/{event}"): _CASE_WORKERS,
}


def allowed(method: str, path: str, role: str) -> bool:
    """Whether ``role`` may call the route; False for a route missing from the table."""
    return role in PERMISSIONS.get((method.upper(), path), frozenset())
