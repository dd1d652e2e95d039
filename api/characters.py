"""Only text gets in: a request holding a character that is not text is answered 422 before
any route, dependency or database sees it.

PostgreSQL refuses NUL in text (a ``%00`` in a case code was a 500 on 14 of 23 routes), a
lone surrogate (``"\\ud800"`` in JSON) cannot be encoded for any database, and no field of
this API has a use for control characters. The rule is the one SOP files follow (YAML's):
tab, line feed, carriage return and the printable characters of Unicode; nothing else, in

* the path (each path parameter by its name, once the route is known), which must also be
  UTF-8 once its percent-escapes are decoded;
* the query (each parameter by its name), likewise;
* header values (by the header's name): no control character but tab;
* a JSON body (the field by its path, ``facts.home_locality``; a key by the object holding
  it), which may also nest at most :data:`MAX_JSON_DEPTH` levels: deeper is a body no route
  reads, and walking it in Python could reach the recursion limit.

The answer has the shape of every invalid input (see :mod:`api.errors`) and names the field
and the character's code point, never the value. Bodies of other types (an SOP's YAML) are
their parsers' to check: the SOP reader names the line of a character it refuses.
"""

from __future__ import annotations

import json
import re
from email.message import Message as MimeHeaders
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MAX_JSON_DEPTH", "TextOnly", "first_fault"]

MAX_JSON_DEPTH = 32
"""Levels of arrays and objects in a JSON body; the API's own bodies need three."""

_NOT_TEXT = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_HEADER_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def first_fault(text: str) -> str | None:
    """``U+XXXX``, the first character of ``text`` that is not text, or None."""
    found = _NOT_TEXT.search(text)
    return f"U+{ord(found.group()):04X}" if found else None


class _Fault(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class TextOnly:
    """ASGI middleware refusing (422) requests with characters that are not text."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            _check_path(scope)
            _check_query(scope.get("query_string", b""))
            _check_headers(scope.get("headers", ()))
            if _is_json(scope):
                body, receive = await _read(receive)
                _check_json(body)
        except _Fault as fault:
            await _refuse(send, fault)
            return
        await self.app(scope, receive, send)


def _check_path(scope: Scope) -> None:
    raw = scope.get("raw_path")
    if raw is not None:
        try:
            unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise _Fault("path", "path: not UTF-8 once its %-escapes are decoded") from None
    path: str = scope.get("path", "")
    fault = first_fault(path)
    if fault is None:
        return
    segments = path.split("/")
    at = next(i for i, segment in enumerate(segments) if first_fault(segment))
    field = _parameter_at(scope.get("app"), segments, at) or "path"
    raise _Fault(field, f"{field}: holds a character that is not allowed ({fault})")


def _parameter_at(app: Any, segments: list[str], at: int) -> str | None:
    """The name of the path parameter at segment ``at`` in the route the path goes to, as
    the app's OpenAPI writes its paths (the most literal one, as routing prefers)."""
    openapi = getattr(app, "openapi", None)
    paths = openapi().get("paths", {}) if callable(openapi) else {}
    fits = []
    for template in paths:
        parts = template.split("/")
        if len(parts) == len(segments) and all(
            part == segment or _is_parameter(part)
            for part, segment in zip(parts, segments, strict=True)
        ):
            fits.append((sum(not _is_parameter(p) for p in parts), parts))
    if not fits:
        return None
    _, parts = max(fits, key=lambda fit: fit[0])
    return parts[at][1:-1] if _is_parameter(parts[at]) else None


def _is_parameter(part: str) -> bool:
    return part.startswith("{") and part.endswith("}")


def _check_query(query: bytes) -> None:
    for pair in query.split(b"&"):
        if not pair:
            continue
        name_bytes, _, value_bytes = pair.partition(b"=")
        try:
            name = unquote_to_bytes(name_bytes.replace(b"+", b" ")).decode("utf-8")
            value = unquote_to_bytes(value_bytes.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            raise _Fault("query", "query: not UTF-8 once its %-escapes are decoded") from None
        field = name if first_fault(name) is None else "query"
        fault = first_fault(name) or first_fault(value)
        if fault is not None:
            raise _Fault(field, f"{field}: holds a character that is not allowed ({fault})")


def _check_headers(headers: Any) -> None:
    for name, value in headers:
        found = _HEADER_CONTROL.search(value)
        if found is not None:
            field = name.decode("latin-1")
            if _HEADER_CONTROL.search(name):
                field = "header"
            code = f"U+{found.group()[0]:04X}"
            raise _Fault(field, f"{field}: holds a character that is not allowed ({code})")


def _is_json(scope: Scope) -> bool:
    """Whether FastAPI would read the body as JSON (no content type, or a JSON one)."""
    if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
        return False
    declared = next((v for k, v in scope.get("headers", ()) if k == b"content-type"), None)
    if declared is None:
        return True
    headers = MimeHeaders()
    headers["content-type"] = declared.decode("latin-1")
    subtype = headers.get_content_subtype()
    return headers.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


async def _read(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body, and a ``receive`` that gives it again (then what the client sends)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


def _check_json(body: bytes) -> None:
    if not body:
        return
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return  # not JSON: FastAPI answers it (422, field ``body``)
    stack: list[tuple[tuple[str, ...], Any, int]] = [((), data, 0)]
    while stack:
        path, value, depth = stack.pop()
        where = ".".join(path) or "body"
        if isinstance(value, str):
            fault = first_fault(value)
            if fault is not None:
                raise _Fault(where, f"{where}: holds a character that is not allowed ({fault})")
            continue
        if not isinstance(value, dict | list):
            continue
        if depth >= MAX_JSON_DEPTH:
            raise _Fault(where, f"{where}: nested deeper than {MAX_JSON_DEPTH} levels")
        items: list[tuple[tuple[str, ...], Any, int]]
        if isinstance(value, list):
            items = [((*path, str(i)), item, depth + 1) for i, item in enumerate(value)]
        else:
            for key in value:
                fault = first_fault(key)
                if fault is not None:
                    message = f"{where}: a key holds a character that is not allowed ({fault})"
                    raise _Fault(where, message)
            items = [((*path, key), item, depth + 1) for key, item in value.items()]
        stack.extend(reversed(items))  # in the body's order


async def _refuse(send: Send, fault: _Fault) -> None:
    message = str(fault)
    body = json.dumps(
        {
            "error": "invalid_input",
            "message": message,
            "field": fault.field,
            "errors": [{"field": fault.field, "message": message.split(": ", 1)[1]}],
        },
        separators=(",", ":"),  # as JSONResponse writes every other answer
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 422,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
