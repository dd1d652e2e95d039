"""The roles an API user may hold, apart from everything else so that the command line can
offer them as choices without importing the database layer."""

from __future__ import annotations

__all__ = ["AGENCY_ROLES", "ROLES"]

ROLES = ("coordinator", "caseworker", "supervisor", "agency_focal_point", "auditor")
"""The roles a user may hold: the SOPs' own roles, which the API's permission table uses."""

AGENCY_ROLES = frozenset({"caseworker", "supervisor", "agency_focal_point"})
"""Roles that act for an agency, and so need one."""
