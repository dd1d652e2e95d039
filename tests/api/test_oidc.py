"""JWTs from an identity provider: real RSA and EC signatures, checked against a JWKS served
by a real HTTP server on 127.0.0.1, through the API as a client would call it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, TypedDict

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import select

from api.app import create_app
from api.oidc import BearerAuth
from cli.serve import ServeError, build_app
from sop_engine.errors import ConfigurationError
from sop_engine.persistence import tables
from sop_engine.runtime.engine import Runtime
from sop_engine.settings import AuthMode, Settings, get_settings

from .conftest import SOPS, SURVIVOR, Users, referral_body

AUDIENCE = "sop-engine-api"
SUBJECT = "8f14e45f-ceea-467f-a7c2-5d9a0c3e1b70"
"""An opaque subject, as identity providers issue them."""

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


class Provider:
    """An identity provider's published side: its OpenID configuration and its JWKS, served
    over HTTP from a thread. ``status`` other than 200 makes every answer fail."""

    def __init__(self) -> None:
        self.keys: dict[str, PrivateKey] = {}
        self.hits: Counter[str] = Counter()
        self.status = 200
        self.issuer_in_configuration: str | None = None
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.hits[self.path] += 1
                body: dict[str, Any] | None = None
                if self.path == "/jwks":
                    body = provider.jwks()
                elif self.path == "/.well-known/openid-configuration":
                    body = {
                        "issuer": provider.issuer_in_configuration or provider.issuer,
                        "jwks_uri": f"{provider.issuer}/jwks",
                    }
                if provider.status != 200 or body is None:
                    self.send_response(provider.status if body else 404)
                    self.send_header("Content-Type", "text/html")
                    self.end_headers()
                    self.wfile.write(b"<html>down for maintenance</html>")
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, private in self.keys.items():
            if isinstance(private, rsa.RSAPrivateKey):
                jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
                alg = "RS256"
            else:
                jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
                alg = "ES256"
            assert isinstance(jwk, dict)
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": alg})
        return {"keys": keys}


@pytest.fixture
def provider(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> Iterator[Provider]:
    p = Provider()
    p.keys = {"rsa-1": rsa_key, "ec-1": ec_key}
    p.thread.start()
    yield p
    p.server.shutdown()
    p.server.server_close()


def oidc_settings(provider: Provider, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "development",
        "oidc_issuer": provider.issuer,
        "oidc_audience": AUDIENCE,
        "oidc_jwks_url": provider.jwks_url,
    }
    values.update(overrides)
    return Settings(**values)


AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(runtime: Runtime, provider: Provider) -> Iterator[AppFactory]:
    """A client of an API whose authentication comes from OIDC settings (``overrides``)."""
    with ExitStack() as stack:

        def make(**overrides: Any) -> TestClient:
            auth = BearerAuth.from_settings(oidc_settings(provider, **overrides))
            app = create_app(runtime, sop_paths=[SOPS], auth=auth)
            return stack.enter_context(TestClient(app, raise_server_exceptions=False))

        yield make


@pytest.fixture
def api(make_client: AppFactory) -> TestClient:
    """The API accepting both local tokens and the provider's JWTs (the default with OIDC)."""
    return make_client()


Mint = Callable[..., str]


@dataclass(frozen=True)
class FromNow:
    """A time claim relative to when the token is minted (parameters are made at collection,
    minutes before a test may run)."""

    seconds: int


@pytest.fixture
def mint(provider: Provider) -> Mint:
    """A token of ``provider``: a coordinator's, signed RS256 by ``rsa-1``, valid for five
    minutes; ``claims`` override (None removes a claim), ``key`` and ``kid`` pick the key."""

    def make(
        *, key: PrivateKey | None = None, kid: str = "rsa-1", alg: str | None = None, **claims: Any
    ) -> str:
        now = int(time.time())
        payload = {
            k: now + v.seconds if isinstance(v, FromNow) else v
            for k, v in _claims(provider, **{"nbf": now, **claims}).items()
            if v is not None
        }
        signer = key or provider.keys[kid]
        algorithm = alg or ("RS256" if isinstance(signer, rsa.RSAPrivateKey) else "ES256")
        return jwt.encode(payload, signer, algorithm=algorithm, headers={"kid": kid})

    return make


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(response: Any, token: str, reason: str) -> None:
    """A 401 saying ``reason``, with RFC 6750's header, echoing neither token nor claims."""
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    body = response.json()
    assert body["error"] == "unauthenticated"
    assert reason in body["message"]
    for secret in (token, *token.split(".")[:2], SUBJECT, AUDIENCE, "TH-NGO-A"):
        assert secret not in response.text


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"


def _claims(provider: Provider, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": provider.issuer,
        "aud": AUDIENCE,
        "sub": SUBJECT,
        "iat": now,
        "exp": now + 300,
        "sop_role": "coordinator",
        **extra,
    }


# Accepted tokens ---------------------------------------------------------------------------


def test_a_valid_rsa_token_lets_a_coordinator_list_sops(api: TestClient, mint: Mint) -> None:
    r = api.get("/sops", headers=bearer(mint()))
    assert r.status_code == 200, r.text
    assert any(s["key"] == "example.corridor" for s in r.json())


def test_the_role_comes_from_the_claim(api: TestClient, mint: Mint) -> None:
    """A caseworker may not list SOPs: the permission table sees the claimed role."""
    token = mint(sop_role="caseworker", sop_agency="TH-NGO-A")
    assert api.get("/sops", headers=bearer(token)).status_code == 403


def test_a_valid_ec_token_acts_for_the_agency_in_its_claim(
    api: TestClient, mint: Mint, runtime: Runtime, users: Users
) -> None:
    token = mint(kid="ec-1", sop_role="caseworker", sop_agency="TH-NGO-A")
    r = api.post("/referrals", json=referral_body(), headers=bearer(token))
    assert r.status_code == 201, r.text
    assert r.json()["owner_agency_id"] == "TH-NGO-A"
    assert SURVIVOR not in r.text
    case_code = r.json()["case_code"]

    timeline = tables.timeline_entries
    with runtime.db.connect() as conn:
        actors = set(conn.execute(select(timeline.c.actor_id, timeline.c.actor_agency_id)))
    assert actors == {(f"oidc:{SUBJECT}", "TH-NGO-A")}

    # The same agency's local user reads it; another agency's JWT user gets 404.
    assert api.get(f"/referrals/{case_code}", headers=users.auth("supervisor")).status_code == 200
    stranger = mint(kid="ec-1", sop_role="caseworker", sop_agency="TH-NGO-Z")
    assert api.get(f"/referrals/{case_code}", headers=bearer(stranger)).status_code == 404


def test_a_token_within_the_leeway_is_accepted(api: TestClient, mint: Mint) -> None:
    token = mint(exp=FromNow(-10), iat=FromNow(-310), nbf=FromNow(10))
    assert api.get("/sops", headers=bearer(token)).status_code == 200


def test_an_audience_list_holding_ours_is_accepted(api: TestClient, mint: Mint) -> None:
    token = mint(aud=["another-api", AUDIENCE])
    assert api.get("/sops", headers=bearer(token)).status_code == 200


def test_the_jwks_is_fetched_once_and_cached(
    api: TestClient, mint: Mint, provider: Provider
) -> None:
    for kid in ("rsa-1", "ec-1", "rsa-1"):
        assert api.get("/sops", headers=bearer(mint(kid=kid))).status_code == 200
    assert provider.hits["/jwks"] == 1


def test_the_jwks_url_is_discovered_from_the_issuer(
    make_client: AppFactory, mint: Mint, provider: Provider
) -> None:
    client = make_client(oidc_jwks_url=None)
    assert client.get("/sops", headers=bearer(mint())).status_code == 200
    assert provider.hits["/.well-known/openid-configuration"] == 1
    assert provider.hits["/jwks"] == 1


def test_a_configuration_naming_another_issuer_is_not_trusted(
    make_client: AppFactory, mint: Mint, provider: Provider
) -> None:
    provider.issuer_in_configuration = "https://impostor.example"
    client = make_client(oidc_jwks_url=None)
    r = client.get("/sops", headers=bearer(mint()))
    assert r.status_code == 503
    assert provider.hits["/jwks"] == 0


# Refused tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        pytest.param({"exp": FromNow(-120)}, "expired", id="expired"),
        pytest.param({"nbf": FromNow(120)}, "not valid yet", id="not-yet-valid"),
        pytest.param({"iat": FromNow(120)}, "not valid yet", id="issued-in-the-future"),
        pytest.param({"iss": "https://impostor.example"}, "another issuer", id="wrong-issuer"),
        pytest.param({"aud": "another-api"}, "another audience", id="wrong-audience"),
        pytest.param({"sub": None}, "'sub'", id="no-sub"),
        pytest.param({"exp": None}, "'exp'", id="no-exp"),
        pytest.param({"iat": None}, "'iat'", id="no-iat"),
        pytest.param({"sub": ""}, "subject", id="empty-sub"),
        pytest.param({"sub": "x" * 96}, "subject", id="sub-too-long"),
        pytest.param({"sop_role": "admin"}, "'sop_role' claim", id="unknown-role"),
        pytest.param({"sop_role": None}, "'sop_role' claim", id="no-role"),
        pytest.param({"sop_role": ["coordinator"]}, "'sop_role' claim", id="role-list"),
        pytest.param(
            {"sop_role": "caseworker"}, "'sop_agency' claim", id="agency-role-without-agency"
        ),
        pytest.param(
            {"sop_role": "agency_focal_point", "sop_agency": ""},
            "'sop_agency' claim",
            id="empty-agency",
        ),
        pytest.param(
            {"sop_role": "caseworker", "sop_agency": 7},
            "'sop_agency' claim",
            id="agency-not-a-string",
        ),
    ],
)
def test_a_token_with_bad_claims_is_401(
    api: TestClient, mint: Mint, claims: dict[str, Any], reason: str
) -> None:
    token = mint(**claims)
    assert_refused(api.get("/sops", headers=bearer(token)), token, reason)


def test_a_token_signed_by_another_key_with_the_same_kid_is_401(
    api: TestClient, mint: Mint, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    token = mint(key=other_rsa_key, kid="rsa-1")
    assert_refused(api.get("/sops", headers=bearer(token)), token, "signature")


def test_a_forged_token_counts_as_a_failed_authentication_and_is_logged_without_it(
    api: TestClient, mint: Mint, runtime: Runtime, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    token = mint(key=other_rsa_key, kid="rsa-1")
    assert api.get("/sops", headers=bearer(token)).status_code == 401
    log = tables.access_log
    with runtime.db.connect() as conn:
        rows = conn.execute(select(log).where(log.c.action.like("auth.%"))).all()
    assert [(r.action, r.actor_id, r.outcome) for r in rows] == [
        ("auth.invalid_jwt", "unauthenticated", "refused")
    ]
    assert not any(part in str(tuple(rows[0])) for part in token.split("."))


def test_a_tampered_payload_is_401(api: TestClient, mint: Mint, provider: Provider) -> None:
    header, _, signature = mint().split(".")
    payload = _b64(json.dumps(_claims(provider, sop_role="auditor")).encode())
    token = f"{header}.{payload}.{signature}"
    assert_refused(api.get("/sops", headers=bearer(token)), token, "signature")


def test_alg_none_is_401_without_asking_the_provider(api: TestClient, provider: Provider) -> None:
    token = _unsigned({"alg": "none", "kid": "rsa-1"}, _claims(provider)) + "."
    assert_refused(api.get("/sops", headers=bearer(token)), token, "algorithm")
    assert provider.hits["/jwks"] == 0


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1"])
def test_hs256_signed_with_the_public_key_is_401(
    api: TestClient, provider: Provider, kid: str
) -> None:
    """The classic confusion: the provider's public key (PEM, as anyone can fetch it) used as
    an HMAC secret."""
    public_key = provider.keys[kid].public_key()
    pem = serialization.Encoding.PEM
    public = public_key.public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = _unsigned({"alg": "HS256", "typ": "JWT", "kid": kid}, _claims(provider))
    mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{_b64(mac)}"
    assert_refused(api.get("/sops", headers=bearer(token)), token, "algorithm")


def test_an_algorithm_other_than_the_keys_is_401(
    api: TestClient, mint: Mint, provider: Provider
) -> None:
    """Both RS256 and ES256 are allowed, but ``ec-1`` is an EC key: a token saying RS256 with
    kid ``ec-1`` (signed by the RSA key) must not verify."""
    token = mint(key=provider.keys["rsa-1"], kid="ec-1", alg="RS256")
    assert_refused(api.get("/sops", headers=bearer(token)), token, "not valid")


def test_an_algorithm_not_allowed_by_the_settings_is_401(
    make_client: AppFactory, mint: Mint
) -> None:
    client = make_client(oidc_algorithms=("ES256",))
    assert client.get("/sops", headers=bearer(mint(kid="ec-1"))).status_code == 200
    token = mint(kid="rsa-1")
    assert_refused(client.get("/sops", headers=bearer(token)), token, "algorithm")


@pytest.mark.parametrize("token", ["a.b.c", "not base64.at all.x", "e30.e30.", "..", "a.b.c.d.e"])
def test_a_malformed_token_is_401(api: TestClient, token: str) -> None:
    r = api.get("/sops", headers=bearer(token))
    assert r.status_code == 401
    assert token not in r.text


# Keys: rotation and an unreachable provider ------------------------------------------------


def test_a_rotated_key_is_fetched_once_and_made_up_kids_do_not_refetch(
    api: TestClient, mint: Mint, provider: Provider, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    assert api.get("/sops", headers=bearer(mint())).status_code == 200
    assert provider.hits["/jwks"] == 1

    provider.keys = {"rsa-2": other_rsa_key}  # the provider rotates its key
    assert api.get("/sops", headers=bearer(mint(kid="rsa-2"))).status_code == 200
    assert provider.hits["/jwks"] == 2

    for kid in ("made-up-1", "made-up-2", "rsa-1"):
        token = mint(key=other_rsa_key, kid=kid)
        assert_refused(api.get("/sops", headers=bearer(token)), token, "signing key")
    assert provider.hits["/jwks"] == 2
    assert api.get("/sops", headers=bearer(mint(kid="rsa-2"))).status_code == 200


def test_a_token_without_kid_is_401(api: TestClient, provider: Provider) -> None:
    token = jwt.encode(_claims(provider), provider.keys["rsa-1"], algorithm="RS256")
    assert_refused(api.get("/sops", headers=bearer(token)), token, "kid")


def test_a_failing_jwks_endpoint_is_503_then_recovers(
    api: TestClient, mint: Mint, provider: Provider
) -> None:
    provider.status = 500
    r = api.get("/sops", headers=bearer(mint()))
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "30"
    assert "identity provider" in r.json()["message"]
    provider.status = 200
    assert api.get("/sops", headers=bearer(mint())).status_code == 200


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_an_unreachable_provider_is_503_and_local_tokens_still_work(
    make_client: AppFactory, mint: Mint, users: Users
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    for overrides in ({"oidc_jwks_url": f"{url}/jwks"}, {"oidc_jwks_url": None}):
        client = make_client(oidc_issuer=url, **overrides)
        token = mint(iss=url)
        r = client.get("/sops", headers=bearer(token))
        assert r.status_code == 503, r.text
        assert token not in r.text
        assert client.get("/sops", headers=users.auth("coordinator")).status_code == 200


# Modes -------------------------------------------------------------------------------------


def test_local_tokens_still_work_beside_oidc(api: TestClient, users: Users) -> None:
    assert api.get("/sops", headers=users.auth("coordinator")).status_code == 200
    assert api.get("/sops", headers=users.auth("caseworker")).status_code == 403
    r = api.get("/sops", headers=bearer("not-a-token"))
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert api.get("/sops").headers["WWW-Authenticate"] == "Bearer"


def test_oidc_mode_refuses_local_tokens(make_client: AppFactory, mint: Mint, users: Users) -> None:
    client = make_client(auth_mode="oidc")
    assert client.get("/sops", headers=bearer(mint())).status_code == 200
    token = users.tokens["coordinator"]
    assert_refused(client.get("/sops", headers=users.auth("coordinator")), token, "only")


def test_tokens_mode_never_looks_at_a_jwt(
    make_client: AppFactory, mint: Mint, users: Users, provider: Provider
) -> None:
    client = make_client(auth_mode="tokens")
    assert client.get("/sops", headers=bearer(mint())).status_code == 401
    assert client.get("/sops", headers=users.auth("coordinator")).status_code == 200
    assert provider.hits["/jwks"] == 0


def test_without_oidc_settings_only_local_tokens_are_accepted() -> None:
    auth = BearerAuth.from_settings(Settings(environment="development"))
    assert auth == BearerAuth(local_tokens=True, oidc=None)


# Settings ----------------------------------------------------------------------------------


class OidcSettings(TypedDict, total=False):
    """Some of the OIDC settings, as a half-configured deployment gives them."""

    oidc_issuer: str
    oidc_audience: str
    auth_mode: AuthMode


@pytest.mark.parametrize("environment", ["development", "production"])
@pytest.mark.parametrize(
    ("values", "missing"),
    [
        ({"oidc_issuer": "https://id.example"}, "SOP_ENGINE_OIDC_AUDIENCE"),
        ({"oidc_audience": AUDIENCE}, "SOP_ENGINE_OIDC_ISSUER"),
        ({"auth_mode": "oidc"}, "SOP_ENGINE_OIDC_ISSUER and SOP_ENGINE_OIDC_AUDIENCE"),
    ],
)
def test_half_configured_oidc_is_refused(
    environment: Literal["development", "production"], values: OidcSettings, missing: str
) -> None:
    settings = Settings(environment=environment, **values)
    with pytest.raises(ConfigurationError, match=f"half-configured.*set {missing} too"):
        settings.resolved_auth_mode()


@pytest.mark.parametrize("algorithms", ["none", "HS256", "RS256,HS512", ""])
def test_symmetric_and_none_algorithms_are_refused(
    monkeypatch: pytest.MonkeyPatch, algorithms: str
) -> None:
    monkeypatch.setenv("SOP_ENGINE_OIDC_ALGORITHMS", algorithms)
    settings = Settings(oidc_issuer="https://id.example", oidc_audience=AUDIENCE)
    with pytest.raises(ConfigurationError, match="SOP_ENGINE_OIDC_ALGORITHMS may list only"):
        settings.resolved_auth_mode()


def test_algorithms_are_read_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOP_ENGINE_OIDC_ALGORITHMS", "ES384, PS256")
    settings = Settings(oidc_issuer="https://id.example", oidc_audience=AUDIENCE)
    assert settings.oidc_algorithms == ("ES384", "PS256")
    assert settings.resolved_auth_mode() == "both"


def test_production_wants_https(provider: Provider) -> None:
    with pytest.raises(ConfigurationError, match="ISSUER must be an https URL in production"):
        oidc_settings(provider, environment="production").resolved_auth_mode()
    settings = oidc_settings(
        provider,
        environment="production",
        oidc_issuer="https://id.example",
        oidc_jwks_url=None,
    )
    assert settings.resolved_auth_mode() == "both"


def test_serve_refuses_to_start_with_half_configured_oidc(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SOP_ENGINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SOP_ENGINE_DATABASE_URL", f"sqlite:///{tmp_path / 'serve.sqlite3'}")
    monkeypatch.setenv("SOP_ENGINE_ENVIRONMENT", "development")
    monkeypatch.setenv("SOP_ENGINE_OIDC_ISSUER", "https://id.example")
    monkeypatch.delenv("SOP_ENGINE_OIDC_AUDIENCE", raising=False)
    monkeypatch.delenv("SOP_ENGINE_AUTH_MODE", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(ServeError, match="SOP_ENGINE_OIDC_AUDIENCE"):
            build_app()
    finally:
        get_settings.cache_clear()
    assert not (tmp_path / "serve.sqlite3").exists(), "refused before touching the database"
