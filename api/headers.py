"""Security headers on every answer, errors included: added outermost of the application's
middleware, so that a 404, a 413 of the size limit, a 422 and a 500 of the catch-all carry
them like any other answer.

- ``Content-Security-Policy``: the API answers JSON, which no browser should run or style,
  so its policy allows nothing (``default-src 'none'``) and no page may frame it. The HTML
  pages FastAPI serves (``/docs``, ``/redoc``, ``/docs/oauth2-redirect``) get
  :data:`DOCS_POLICY` instead: the scripts, styles, fonts and icons they load from the CDN
  and the OpenAPI they fetch from this origin, and each inline script by its SHA-256 (computed
  from the page as it leaves, so that a change of FastAPI's page cannot slip another in).
  ``'unsafe-inline'`` is there for styles only (ReDoc writes its own), never for scripts.
- ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``,
  ``X-Frame-Options: DENY`` (for browsers without ``frame-ancestors``).
- ``Cache-Control: no-store`` on every answer that does not set its own: answers carry case
  data, which no shared or browser cache should keep.
- ``Strict-Transport-Security`` when asked (in production: :mod:`cli.serve` asks), a year.
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["API_POLICY", "DOCS_POLICY", "HSTS", "SecurityHeaders", "inline_script_hashes"]

API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

DOCS_POLICY = (
    "default-src 'none'; "
    "script-src https://cdn.jsdelivr.net{scripts}; "
    "style-src https://cdn.jsdelivr.net https://fonts.googleapis.com 'unsafe-inline'; "
    "img-src 'self' data: https://fastapi.tiangolo.com; "
    "font-src https://fonts.gstatic.com; "
    "connect-src 'self'; "
    "worker-src blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
"""What Swagger UI and ReDoc need; ``{scripts}`` takes the inline scripts' hashes."""

HSTS = "max-age=31536000"

_FIXED = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)

_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL | re.IGNORECASE)


def inline_script_hashes(html: bytes) -> list[str]:
    """The CSP sources (``'sha256-...'``) of the page's inline scripts, in order."""
    return [
        f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'"
        for body in _INLINE_SCRIPT.findall(html)
    ]


def _is_html(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(n == b"content-type" and v.startswith(b"text/html") for n, v in headers)


class SecurityHeaders:
    """ASGI middleware adding the headers above to every HTTP answer."""

    def __init__(self, app: ASGIApp, *, strict_transport_security: bool = False) -> None:
        self.app = app
        self.hsts = strict_transport_security

    def _headers(self, given: list[tuple[bytes, bytes]], policy: str) -> list[tuple[bytes, bytes]]:
        names = {name.lower() for name, _ in given}
        extra = [*_FIXED, (b"content-security-policy", policy.encode())]
        extra.append((b"cache-control", b"no-store"))
        if self.hsts:
            extra.append((b"strict-transport-security", HSTS.encode()))
        return [*given, *((n, v) for n, v in extra if n not in names)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        body: list[bytes] = []

        async def add_headers(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not _is_html(headers):
                    await send({**message, "headers": self._headers(headers, API_POLICY)})
                    return
                held = message  # the policy needs the page's inline scripts
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            page = b"".join(body)
            scripts = "".join(f" {h}" for h in inline_script_hashes(page))
            policy = DOCS_POLICY.format(scripts=scripts)
            await send({**held, "headers": self._headers(list(held.get("headers", ())), policy)})
            await send({"type": "http.response.body", "body": page})

        await self.app(scope, receive, add_headers)
