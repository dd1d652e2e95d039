"""What the OpenAPI says about errors: the one body every error has (:class:`ErrorBody`, as
:mod:`api.errors` writes it) and the error answers a router documents, with an example each::

    router = APIRouter(prefix="/referrals", responses=error_responses(401, 403, 404, 409, 422))

A router lists the codes its routes can answer; a test (``tests/api/test_openapi_fuzz.py``)
fails when a route answers a code its OpenAPI does not document, or a body that is not this
shape.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from api.schemas.sops import ProblemPublic

__all__ = ["SOP_YAML_EXAMPLE", "ErrorBody", "FieldError", "error_responses"]


SOP_YAML_EXAMPLE = """\
key: example.shelter
version: 1
extends: example.baseline@1
title: Example baseline with a shorter assignment deadline
states:
  intake:
    deadlines:
      assign:
        after: 2h
"""
"""An SOP as a request body (``application/yaml``): valid against the example library."""


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """Every error: its kind and a message, and the members of its kind (none echoes a value
    the request sent, nor any identifying fact)."""

    model_config = ConfigDict(extra="allow")

    error: str
    """The kind: ``invalid_input``, ``not_found``, ``guard_failed``, ..."""
    message: str
    field: str | None = None
    """``invalid_input``, ``payload_too_large``: the field at fault (``facts.risk_level``)."""
    errors: list[FieldError] | None = None
    """Request validation: every field at fault."""
    available: list[str] | None = None
    """A refused transition: the events the referral's state allows."""
    missing: list[str] | None = None
    """``missing_facts``: the facts the target state requires."""
    current_version: int | None = None
    """``concurrent_change``: the referral's version now."""
    problems: list[ProblemPublic] | None = None
    """``definition_error``: the SOP's problems."""


_ANSWERS: dict[int, tuple[str, dict[str, Any]]] = {
    401: (
        "No bearer token, or one that is unknown, expired, a disabled user's or invalid "
        "(`unauthenticated`)",
        {"error": "unauthenticated", "message": "a valid bearer token is required"},
    ),
    403: (
        "The caller's role may not use this route (`forbidden`); the SOP does not let this "
        "role fire the event (`role_not_allowed`); a disclosure lacks consent "
        "(`consent_missing`)",
        {"error": "forbidden", "message": "your role may not use this route"},
    ),
    404: (
        "No such resource, or one the caller's agency takes no part in (`not_found`)",
        {"error": "not_found", "message": "no referral R7KQ-M2XD-9PTA"},
    ),
    409: (
        "The referral's state refuses the event (`transition_not_allowed`, `guard_failed`, "
        "`missing_facts`, with the `available` events), or it changed since it was read "
        "(`concurrent_change`, with `current_version`)",
        {
            "error": "missing_facts",
            "message": "state 'action_plan' requires risk_level, service_needed to be known first",
            "missing": ["risk_level", "service_needed"],
            "available": ["complete_assessment", "consent_withdrawn"],
        },
    ),
    413: (
        "The request body is over the size limit (`payload_too_large`)",
        {
            "error": "payload_too_large",
            "message": "the request body is over 1114112 bytes",
            "field": "body",
        },
    ),
    429: (
        "Too many failed authentications from this client (`too_many_requests`): wait for "
        "`Retry-After` seconds",
        {
            "error": "too_many_requests",
            "message": "too many failed authentications from this client; retry in 240 s",
        },
    ),
    422: (
        "A field is missing or invalid (`invalid_input`, with `field`); an SOP has problems "
        "(`definition_error`, with `problems`)",
        {
            "error": "invalid_input",
            "message": "origin_country: String should have at most 2 characters",
            "field": "origin_country",
            "errors": [
                {
                    "field": "origin_country",
                    "message": "String should have at most 2 characters",
                }
            ],
        },
    ),
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` documenting these error codes (401, 403, 404, 409, 413, 422); a
    route that may answer 401 may answer 429 too (:mod:`api.auth_limits`), so 401 brings it."""
    responses: dict[int | str, dict[str, Any]] = {}
    for code in sorted({*codes, *((429,) if 401 in codes else ())}):
        description, example = _ANSWERS[code]
        answer: dict[str, Any] = {
            "model": ErrorBody,
            "description": description,
            "content": {"application/json": {"example": example}},
        }
        if code == 401:
            answer["headers"] = {
                "WWW-Authenticate": {
                    "description": '`Bearer`, with `error="invalid_token"` for a bad token',
                    "schema": {"type": "string"},
                }
            }
        if code == 429:
            answer["headers"] = {
                "Retry-After": {
                    "description": "Seconds until the client may try again",
                    "schema": {"type": "integer"},
                }
            }
        responses[code] = answer
    return responses
