"""Hypothesis strategies for hostile requests, as schemathesis hooks: characters that are not
text (NUL, escape, delete, a lone surrogate) put into generated path and query parameters,
headers and JSON strings and keys; JSON nested deeper than the API reads; SOP YAML with a NUL
or nested hundreds of levels deep.

:func:`install` registers them on a schema; :func:`faults` says what in a case must be
refused, so that a test can check the answer names it.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

from hypothesis import strategies as st
from schemathesis import BaseSchema

from api.characters import MAX_JSON_DEPTH, first_fault

if TYPE_CHECKING:
    from schemathesis.specs.openapi.schemas import OpenApiCase

__all__ = ["faults", "install"]

_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")

NOT_TEXT = st.sampled_from(["\x00", "\x1b", "\x7f"])
"""In URLs and headers (a lone surrogate cannot be sent there: it is not UTF-8)."""
NOT_TEXT_JSON = st.sampled_from(["\x00", "\x1b", "\x7f", "\ud800"])


def _poisoned(value: str, bad: st.SearchStrategy[str] = NOT_TEXT) -> st.SearchStrategy[str]:
    """``value`` with a character that is not text put somewhere into it."""
    return st.tuples(st.integers(0, len(value)), bad).map(
        lambda at: value[: at[0]] + at[1] + value[at[0] :]
    )


def _maybe(original: Any, hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(original), hostile)


def _one_string(values: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    """``values`` (a mapping of parameters) with one of its strings poisoned, or as it is."""
    if not values:
        return st.just(values)
    names = [k for k, v in values.items() if isinstance(v, str)]
    if not names:
        return st.just(values)
    hostile = st.sampled_from(names).flatmap(
        lambda name: _poisoned(values[name]).map(lambda bad: {**values, name: bad})
    )
    return _maybe(values, hostile)


def _nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def _hostile_json(body: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A string or key of ``body`` poisoned, or one of its members nested too deep."""
    strings = [k for k, v in body.items() if isinstance(v, str)]
    keys = list(body) or ["facts"]
    options: list[st.SearchStrategy[dict[str, Any]]] = [
        st.tuples(st.sampled_from(keys), st.integers(MAX_JSON_DEPTH, 4 * MAX_JSON_DEPTH)).map(
            lambda kd: {**body, kd[0]: _nested(kd[1], "x")}
        ),
        st.sampled_from(keys).flatmap(
            lambda k: _poisoned(k, NOT_TEXT_JSON).map(lambda bad: {**body, bad: body.get(k)})
        ),
    ]
    if strings:
        options.append(
            st.sampled_from(strings).flatmap(
                lambda k: _poisoned(body[k], NOT_TEXT_JSON).map(lambda bad: {**body, k: bad})
            )
        )
    facts = body.get("facts")
    if isinstance(facts, dict):
        options.append(
            _poisoned("survivor_name", NOT_TEXT_JSON).map(
                lambda bad: {**body, "facts": {**facts, "survivor_name": bad}}
            )
        )
    return st.one_of(options)


def _hostile_yaml(text: str) -> st.SearchStrategy[str]:
    """The SOP text with a NUL in it, or a document nested hundreds of levels deep."""
    block = st.integers(33, 600).map(
        lambda n: "".join("  " * i + "a:\n" for i in range(n)) + "  " * n + "b: 1\n"
    )
    flow = st.integers(33, 2_000).map(lambda n: "key: " + "[" * n + "]" * n + "\n")
    return st.one_of(_poisoned(text, st.just("\x00")), block, flow)


def install(schema: BaseSchema) -> None:
    """Make every case of ``schema`` hostile somewhere, or leave it as generated."""

    @schema.hook("flatmap_path_parameters")
    def _path(context: Any, values: dict[str, Any]) -> st.SearchStrategy[Any]:
        return _one_string(values)

    @schema.hook("flatmap_query")
    def _query(context: Any, values: dict[str, Any]) -> st.SearchStrategy[Any]:
        return _one_string(values)

    @schema.hook("flatmap_headers")
    def _headers(context: Any, values: dict[str, Any] | None) -> st.SearchStrategy[Any]:
        return _one_string(dict(values) if values else values)

    @schema.hook("flatmap_body")
    def _body(context: Any, body: Any) -> st.SearchStrategy[Any]:
        if isinstance(body, dict):
            return _maybe(body, _hostile_json(body))
        if isinstance(body, str):  # an SOP: sent as it is (schemathesis dumps a str as YAML)
            return _maybe(body, _hostile_yaml(body).map(lambda text: text.encode("utf-8")))
        return st.just(body)


def _json_faults(value: Any, path: str = "") -> list[str]:
    """Fields of a JSON value holding what is not text, or nested too deep."""
    found: list[str] = []
    stack: list[tuple[str, Any, int]] = [(path, value, 0)]
    while stack:
        where, item, depth = stack.pop()
        here = where or "body"
        if isinstance(item, str):
            if first_fault(item):
                found.append(here)
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                found.append(here)
                continue
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str) and first_fault(key):
                    found.append(here)
                stack.append((f"{where}.{key}" if where else str(key), child, depth + 1))
    return found


def faults(case: OpenApiCase, request: Any) -> list[str]:
    """The fields of ``request`` (as sent for ``case``) that the API must refuse for their
    characters or nesting, each as an ``invalid_input`` answer names it; ``body`` for an
    SOP's YAML. Read from the request as sent, since schemathesis encodes what it generated
    (path parameters, lists in the query) on the way."""
    url = urlsplit(request.url)
    found = []
    template = case.operation.path.split("/")
    for part, segment in zip(template, url.path.split("/"), strict=False):
        text = unquote_to_bytes(segment).decode("utf-8", errors="replace")
        if part.startswith("{") and first_fault(text):
            found.append(part[1:-1])
    for name, value in parse_qsl(url.query, keep_blank_values=True, errors="replace"):
        if first_fault(name):
            found.append("query")
        elif first_fault(value):
            found.append(name)
    found += [
        name.lower() for name, value in request.headers.items() if _CONTROL.search(str(value))
    ]
    body = request.body
    if isinstance(body, str):
        body = body.encode("utf-8")
    if not body:
        return found
    kind = request.headers.get("content-type", "")
    if "json" in kind:
        with contextlib.suppress(ValueError, RecursionError):
            found += _json_faults(json.loads(body))
    elif "yaml" in kind:
        text = body.decode("utf-8", errors="replace")
        if first_fault(text) or text.count("[") > 32 or "  " * 33 in text:
            found.append("body")
    return found
