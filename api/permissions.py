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
_AUDITORS = frozenset({AUDITOR})
"""Timelines, the access log and the referral list: auditors only."""
_COMPLIANCE_READERS = frozenset({AUDITOR, COORDINATOR})
"""Aggregate deadline compliance: coordinators watch whether referrals move in time."""
_CONSENT_KEEPERS = frozenset({CASEWORKER, SUPERVISOR})
"""Record, list and withdraw consent; the routes also require the managing agency."""
_DIRECTORY_READERS = frozenset({COORDINATOR, CASEWORKER, SUPERVISOR, FOCAL_POINT, AUDITOR})
"""Every role: agencies pick recipients from the directory, auditors check it."""

_EVERYONE = frozenset({COORDINATOR, CASEWORKER, SUPERVISOR, FOCAL_POINT, AUDITOR})
"""Routes about the caller's own things (her notices), whatever her role."""

PUBLIC: frozenset[tuple[str, str]] = frozenset(
    {("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics")}
)
"""Routes that take no user's token. ``/metrics`` has a scrape token of its own
(:mod:`api.metrics`): open in development, required in production."""

PERMISSIONS: Mapping[tuple[str, str], frozenset[str]] = {
    ("GET", "/sops"): _SOP_READERS,
    ("GET", "/sops/{key}/{version}"): _SOP_READERS,
    ("GET", "/sops/{key}/{version}/diagram"): _SOP_READERS,
    ("POST", "/sops/validate"): frozenset({COORDINATOR}),
    # Publishing: coordinators upload and review (four eyes); auditors may read pending
    # uploads, sources and reviews.
    ("POST", "/sops"): frozenset({COORDINATOR}),
    ("GET", "/sops/pending"): _SOP_READERS,
    ("GET", "/sops/{key}/{version}/source"): _SOP_READERS,
    ("POST", "/sops/{key}/{version}/approve"): frozenset({COORDINATOR}),
    ("POST", "/sops/{key}/{version}/refuse"): frozenset({COORDINATOR}),
    ("GET", "/directory/agencies"): _DIRECTORY_READERS,
    ("GET", "/directory/agencies/{agency_id}"): _DIRECTORY_READERS,
    ("PUT", "/directory/agencies/{agency_id}"): frozenset({COORDINATOR}),
    ("POST", "/referrals"): frozenset({CASEWORKER}),
    ("GET", "/referrals/{case_code}"): _CASE_WORKERS,
    ("POST", "/referrals/{case_code}/events/{event}"): _CASE_WORKERS,
    ("PUT", "/referrals/{case_code}/incident-time"): _CONSENT_KEEPERS,
    ("POST", "/referrals/{case_code}/reopen"): _CONSENT_KEEPERS,
    # Case transfer: the SOP names the roles (requester roles at the managing agency; the
    # answering role at the agency it is pending with); the routes require the agency.
    ("POST", "/referrals/{case_code}/transfer"): _CONSENT_KEEPERS,
    ("POST", "/referrals/{case_code}/transfer/cancel"): _CONSENT_KEEPERS,
    ("POST", "/referrals/{case_code}/transfer/accept"): _CASE_WORKERS,
    ("POST", "/referrals/{case_code}/transfer/decline"): _CASE_WORKERS,
    ("GET", "/referrals/{case_code}/transfers"): _CASE_WORKERS,
    ("POST", "/referrals/{case_code}/clocks/{clock}/waive"): _CONSENT_KEEPERS,
    # The agencies' side; the routes also require the task's, or the disclosure's, agency.
    ("GET", "/referrals/{case_code}/disclosed"): _CASE_WORKERS,
    ("GET", "/notices"): _EVERYONE,
    ("POST", "/notices/{notice_id}/read"): _EVERYONE,
    ("GET", "/tasks"): _CASE_WORKERS,
    ("GET", "/tasks/{task_id}"): _CASE_WORKERS,
    ("POST", "/tasks/{task_id}/acknowledge"): _CASE_WORKERS,
    ("POST", "/tasks/{task_id}/accept"): _CASE_WORKERS,
    ("POST", "/tasks/{task_id}/decline"): _CASE_WORKERS,
    ("POST", "/tasks/{task_id}/deliver"): _CASE_WORKERS,
    ("GET", "/audit/referrals"): _AUDITORS,
    ("GET", "/audit/referrals/{case_code}/timeline"): _AUDITORS,
    ("GET", "/audit/access-log"): _AUDITORS,
    ("GET", "/audit/compliance"): _COMPLIANCE_READERS,
    ("GET", "/referrals/{case_code}/events"): _CASE_WORKERS,
    ("POST", "/referrals/{case_code}/consents"): _CONSENT_KEEPERS,
    ("GET", "/referrals/{case_code}/consents"): _CONSENT_KEEPERS,
    ("POST", "/referrals/{case_code}/consents/{grant_id}/withdrawal"): _CONSENT_KEEPERS,
    ("POST", "/referrals/{case_code}/withdrawal-acknowledgement"): frozenset({FOCAL_POINT}),
}


def allowed(method: str, path: str, role: str) -> bool:
    """Whether ``role`` may call the route; False for a route missing from the table."""
    return role in PERMISSIONS.get((method.upper(), path), frozenset())
