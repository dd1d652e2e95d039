"""Security headers on every answer, errors included (404, 405, 413, 422, 429, 500), a policy
of their own for the documentation pages that still lets them load, and HSTS in production."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI, Response
from fastapi.testclient import TestClient
from httpx import Response as HttpResponse

from api.app import create_app
from api.auth_limits import FailedAuthLimit
from api.headers import API_POLICY, HSTS
from cli.serve import build_app
from sop_engine.crypto import MasterKey
from sop_engine.runtime.engine import Runtime
from sop_engine.settings import get_settings

from .conftest import SOPS, Users

SECURITY = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def boom() -> None:
    raise RuntimeError("a bug")


def cached() -> Response:
    return Response("{}", media_type="application/json", headers={"Cache-Control": "max-age=60"})


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    app = create_app(
        runtime, sop_paths=[SOPS], max_request_bytes=1024, auth_limit=FailedAuthLimit(limit=1)
    )
    app.add_api_route("/boom", boom)
    app.add_api_route("/cached", cached)
    return app


@pytest.fixture
def api(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def assert_api_headers(r: HttpResponse, hsts: bool = False) -> None:
    where = f"{r.request.method} {r.request.url.path} -> {r.status_code}"
    for name, value in SECURITY.items():
        assert r.headers.get(name) == value, where
    assert r.headers.get("content-security-policy") == API_POLICY, where
    assert r.headers.get("cache-control") == "no-store", where
    assert ("strict-transport-security" in r.headers) == hsts, where


def test_every_kind_of_answer_carries_the_headers(api: TestClient, users: Users) -> None:
    cw = users.auth("caseworker")
    wrong = {"Authorization": "Bearer wrong"}
    answers = [
        (200, api.get("/health")),
        (401, api.get("/sops")),
        (403, api.get("/sops", headers=cw)),
        (404, api.get("/referrals/AAAA-BBBB-CCCC", headers=cw)),
        (404, api.get("/no/such/path")),
        (405, api.delete("/health")),
        (413, api.post("/referrals", content=b"x" * 2048, headers=cw)),
        (422, api.post("/referrals", json={"sop_key": 7}, headers=cw)),
        (500, api.get("/boom")),
        (401, api.get("/sops", headers=wrong)),
        (429, api.get("/sops", headers=wrong)),  # the limit here is one failure
    ]
    for code, r in answers:
        assert r.status_code == code, r.text
        assert_api_headers(r)
    assert answers[8][1].json()["error"] == "internal"


def test_an_answer_that_sets_its_own_cache_control_keeps_it(api: TestClient) -> None:
    r = api.get("/cached")
    assert r.headers["cache-control"] == "max-age=60"
    assert r.headers["content-security-policy"] == API_POLICY


def test_the_openapi_document_gets_the_apis_policy(api: TestClient) -> None:
    assert_api_headers(api.get("/openapi.json"))


def test_hsts_only_when_asked(runtime: Runtime) -> None:
    with TestClient(create_app(runtime, strict_transport_security=True)) as c:
        for r in (c.get("/health"), c.get("/sops"), c.get("/nowhere")):
            assert_api_headers(r, hsts=True)
            assert r.headers["strict-transport-security"] == HSTS


def test_serve_asks_for_hsts_in_production_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOP_ENGINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SOP_ENGINE_DATABASE_URL", f"sqlite:///{tmp_path / 'serve.sqlite3'}")
    monkeypatch.setenv("SOP_ENGINE_MASTER_KEY", MasterKey.generate("k1").to_setting())
    # Development first: it migrates the database, which production only checks.
    for environment, hsts in (("development", False), ("production", True)):
        monkeypatch.setenv("SOP_ENGINE_ENVIRONMENT", environment)
        get_settings.cache_clear()
        try:
            app = build_app()
        finally:
            get_settings.cache_clear()
        with TestClient(app) as c:
            assert_api_headers(c.get("/health"), hsts=hsts)
        app.state.runtime.db.dispose()


class _Page(HTMLParser):
    """What a page loads: script, stylesheet and icon URLs, and its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.icons: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            if values.get("src"):
                self.scripts.append(str(values["src"]))
            else:
                self._in_script = True
                self.inline.append("")
        elif tag == "link" and values.get("rel") == "stylesheet":
            self.styles.append(str(values["href"]))
        elif tag == "link" and "icon" in str(values.get("rel")):
            self.icons.append(str(values["href"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline[-1] += data


def policy(header: str) -> dict[str, list[str]]:
    return {
        d.split()[0]: d.split()[1:] for d in (p.strip() for p in header.split(";")) if d.strip()
    }


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect"])
def test_the_documentation_pages_may_load_what_they_need_and_nothing_inline_else(
    api: TestClient, path: str
) -> None:
    r = api.get(path)
    assert r.status_code == 200
    for name, value in SECURITY.items():
        assert r.headers[name] == value
    csp = policy(r.headers["content-security-policy"])
    assert csp["default-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    script_src = csp["script-src"]
    assert "'unsafe-inline'" not in script_src
    assert "'unsafe-eval'" not in script_src
    page = _Page()
    page.feed(r.text)
    assert page.scripts or page.inline
    for src in page.scripts:
        assert origin(src) in script_src, src
    for body in page.inline:
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in script_src
    assert len([s for s in script_src if s.startswith("'sha256-")]) == len(page.inline)
    for href in page.styles:
        assert origin(href) in csp["style-src"], href
    for href in page.icons:
        assert origin(href) in csp["img-src"], href
    assert "'self'" in csp["connect-src"]  # the OpenAPI document, and "try it out"
    spec = re.search(r"(?:url: |spec-url=)['\"]([^'\"]+)['\"]", r.text)
    if spec is not None:
        assert spec.group(1).startswith("/")  # served from this origin
