"""The one place mapping errors to HTTP responses. Every error body has the same shape::

    {"error": "not_found", "message": "no referral R7KQ-M2XD-9PTA", ...}

with extra members per kind: ``field`` (and ``errors``) for invalid input, ``available``
events and ``missing`` facts for a refused transition, ``current_version`` for a conflict,
``problems`` for a broken SOP. Bodies never carry a stack trace, and never echo the
request's values (FastAPI's own validation errors would: their ``input`` is dropped here).

Domain errors (``sop_engine.errors``):

=========================  ======  ===================================================
NotFound                   404     no such SOP, referral, timer or grant
InvalidInput               422     ``field`` names the field at fault
IdempotencyKeyReused       422     field ``Idempotency-Key``
RoleNotAllowed             403     the SOP does not let this role or agency fire it
ConsentMissing             403     a disclosure lacks consent
ApprovalByRequester        403     ``approval_by_requester``: a second person must approve
TransitionNotAllowed       409     the referral's current state does not allow it
GuardFailed, MissingFacts  409     (conflicts with the referral's state, not bad syntax)
ConcurrentChange           409     ``current_version``: read again, then retry
DefinitionError            422     ``problems``: each {file, line, message, sop, state, hint}
MissingMasterKey           503     this process lacks the master key the case is under
                                   (``Retry-After``: another process can answer)
anything else              500     a bug: logged, answered without details
=========================  ======  ===================================================
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.causes import cause_of
from sop_engine.errors import (
    ApprovalByRequester,
    ConcurrentChange,
    ConsentMissing,
    DefinitionError,
    InvalidInput,
    MissingFacts,
    MissingMasterKey,
    NotFound,
    Problem,
    RoleNotAllowed,
    SopEngineError,
    TransitionNotAllowed,
)

__all__ = ["CatchAll", "domain_response", "error_body", "install", "problem_json"]

log = logging.getLogger(__name__)

_HTTP_KINDS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
    503: "unavailable",
}


def error_body(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": kind, "message": message, **extra}


def problem_json(p: Problem) -> dict[str, Any]:
    return {
        "file": p.file,
        "line": p.line,
        "message": p.message,
        "sop": p.sop,
        "state": p.state,
        "hint": p.hint,
    }


def domain_response(exc: SopEngineError) -> JSONResponse:
    """The HTTP answer to a domain error (see the table in the module docstring)."""
    message = str(exc)
    if isinstance(exc, NotFound):
        return _json(404, error_body("not_found", message))
    if isinstance(exc, InvalidInput):
        return _json(422, error_body("invalid_input", message, field=exc.field))
    if isinstance(exc, RoleNotAllowed):
        return _json(403, error_body("role_not_allowed", message))
    if isinstance(exc, ConsentMissing):
        return _json(403, error_body("consent_missing", message))
    if isinstance(exc, ApprovalByRequester):
        return _json(403, error_body("approval_by_requester", message))
    if isinstance(exc, MissingFacts):
        body = error_body(
            "missing_facts", message, missing=list(exc.missing), available=list(exc.available)
        )
        return _json(409, body)
    if isinstance(exc, TransitionNotAllowed):
        kind = "guard_failed" if type(exc).__name__ == "GuardFailed" else "transition_not_allowed"
        return _json(409, error_body(kind, message, available=list(exc.available)))
    if isinstance(exc, ConcurrentChange):
        body = error_body("concurrent_change", message, current_version=exc.current_version)
        return _json(409, body)
    if isinstance(exc, DefinitionError):
        problems = [problem_json(p) for p in exc.problems]
        return _json(422, error_body("definition_error", "the SOP has problems", problems=problems))
    if isinstance(exc, MissingMasterKey):
        # A rotation under way: processes on the new ring can answer; /ready turns this one
        # 503 so that the load balancer stops sending it requests.
        log.error("a case key is under a master key this process lacks: restart it")
        body = error_body(
            "unavailable",
            "this process cannot open this referral now (its master key ring is out of "
            "date); try again",
        )
        return _json(503, body, {"Retry-After": "5"})
    # ConfigurationError, TamperedData: the server's fault, and nothing to show the caller.
    return _internal(exc)


def _json(code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=code, headers=headers)


def _internal(exc: BaseException) -> JSONResponse:
    # Its cause without values (see api.causes): a message might quote data, and the log
    # must not hold personal data.
    log.error("unhandled %s while serving a request: %s", type(exc).__name__, cause_of(exc))
    return _json(500, error_body("internal", "internal error; it has been logged"))


def _field(loc: Sequence[int | str]) -> str:
    """``("body", "facts", "x")`` -> ``facts.x``; a header or query keeps its own name."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


async def _on_domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SopEngineError)
    return domain_response(exc)


def _invalid_input(errors: list[dict[str, str]]) -> JSONResponse:
    first = errors[0] if errors else {"field": "body", "message": "invalid request"}
    message = f"{first['field']}: {first['message']}"
    body = error_body("invalid_input", message, field=first["field"], errors=errors)
    return _json(status.HTTP_422_UNPROCESSABLE_CONTENT, body)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _invalid_input(
        [
            {
                # Broken JSON's "loc" is a character offset into the body, not a field.
                "field": "body" if e.get("type") == "json_invalid" else _field(e.get("loc", ())),
                "message": str(e.get("msg", "invalid")),
            }
            for e in exc.errors()
        ]
    )


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
        # FastAPI's 400 for a body it cannot decode (bytes that are not UTF-8, JSON nested too
        # deep) is the same fault as broken JSON, which it answers 422: one answer for both.
        return _invalid_input([{"field": "body", "message": "the body is not readable JSON"}])
    kind = _HTTP_KINDS.get(exc.status_code, "error")
    headers = dict(exc.headers) if exc.headers else None
    return _json(exc.status_code, error_body(kind, str(exc.detail)), headers)


class CatchAll:
    """ASGI middleware answering any unhandled exception with a bare 500, before the server
    could log or show a traceback. Added innermost of the user middleware by :func:`install`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:
                raise
            await _internal(exc)(scope, receive, send)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(SopEngineError, _on_domain)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_middleware(CatchAll)
