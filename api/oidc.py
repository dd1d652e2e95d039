"""Bearer tokens from an identity provider (OIDC): signed JWTs checked against the provider's
published keys, and the choice of which bearer tokens the API accepts.

A JWT is told from a token of ``sop-engine users add`` by its shape: three dot-separated
segments, where a local token never has a dot. With ``SOP_ENGINE_AUTH_MODE=both`` (the
default once ``SOP_ENGINE_OIDC_ISSUER`` is set) a JWT goes to :class:`OidcVerifier` and any
other token to the ``users`` table; ``oidc`` refuses local tokens, ``tokens`` never looks at
a JWT.

A JWT is accepted when its header's ``alg`` is one of the allowed asymmetric algorithms
(never ``none``, never HMAC), its ``kid`` names a key of the provider's JWKS, that key's
algorithm is the header's, the signature verifies, ``iss`` is the issuer, ``aud`` holds the
audience, ``exp``, ``iat`` (and ``nbf`` when present) hold within the leeway, and ``sub``,
the role claim and (for roles acting for an agency) the agency claim are usable. The user is
``Principal(id="oidc:" + sub, username=sub, role, agency_id)``: nothing else of the token is
kept, and no claim's value is logged or echoed.

Errors::

    InvalidToken (ValueError)             the token is refused: 401, the reason names no value
    ProviderUnavailable (ConnectionError) the provider's keys cannot be had now: 503

The JWKS is fetched on first use (from ``oidc_jwks_url``, or from the ``jwks_uri`` of
``{issuer}/.well-known/openid-configuration``) and kept :data:`JWKS_LIFESPAN_SECONDS`. A
``kid`` missing from it triggers one refetch, at most once per
:data:`REFETCH_INTERVAL_SECONDS`, so that a rotated key is found at once and a stream of made
up ``kid`` values cannot make the API hammer the provider.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import httpx
import jwt
from jwt import PyJWK, PyJWKClient

from api.roles import AGENCY_ROLES, ROLES
from api.users import Principal
from sop_engine.settings import Settings

__all__ = [
    "JWKS_LIFESPAN_SECONDS",
    "REFETCH_INTERVAL_SECONDS",
    "BearerAuth",
    "InvalidToken",
    "OidcVerifier",
    "ProviderUnavailable",
    "is_jwt",
]

log = logging.getLogger(__name__)

JWKS_LIFESPAN_SECONDS = 300.0
"""How long a fetched JWKS is used before it is fetched again."""
REFETCH_INTERVAL_SECONDS = 30.0
"""The least time between two refetches caused by an unknown ``kid``."""
HTTP_TIMEOUT_SECONDS = 5.0
"""Timeout of a request to the provider (discovery or JWKS)."""
SUBJECT_PREFIX = "oidc:"
"""Prefix of a provider user's id: it never collides with a local user's UUID."""
MAX_ID_LENGTH = 100
"""The length of the ``actor_id`` and ``agency_id`` columns."""
_HEADERS = {"User-Agent": "sop-engine", "Accept": "application/json"}


class InvalidToken(ValueError):
    """The token is refused. The message says why in general terms, never with a value."""


class ProviderUnavailable(ConnectionError):
    """The identity provider's keys cannot be fetched now; the token may well be good."""


def is_jwt(token: str) -> bool:
    """A JWS in compact form: ``header.payload.signature`` (a local token has no dot)."""
    return token.count(".") == 2


class OidcVerifier:
    """Checks a JWT from one issuer for one audience, and maps its claims to a Principal."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str | None = None,
        algorithms: Iterable[str] = ("RS256", "ES256"),
        role_claim: str = "sop_role",
        agency_claim: str = "sop_agency",
        leeway_seconds: float = 30,
        require_https: bool = False,
        refetch_interval_seconds: float = REFETCH_INTERVAL_SECONDS,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.algorithms = tuple(algorithms)
        self.role_claim = role_claim
        self.agency_claim = agency_claim
        self.leeway_seconds = leeway_seconds
        self._jwks_url = jwks_url
        self._require_https = require_https
        self._refetch_interval = refetch_interval_seconds
        self._jwks: PyJWKClient | None = None
        self._last_refetch: float | None = None
        self._lock = threading.Lock()

    def verify(self, token: str) -> Principal:
        """The user the token stands for.

        :raises InvalidToken: the token is malformed, badly signed, expired, not yet valid, for
            another issuer or audience, or its claims do not make a user.
        :raises ProviderUnavailable: the provider's keys cannot be fetched.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("the token is not a well-formed JWT") from None
        if header.get("alg") not in self.algorithms:
            raise InvalidToken("the token's signing algorithm is not accepted")
        key = self._signing_key(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("the token is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("the token is from another issuer") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("the token is meant for another audience") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("the token's signature does not verify") from None
        except jwt.PyJWTError:
            raise InvalidToken("the token is not valid") from None
        return self._principal(claims)

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("the token's subject is empty")
        if len(SUBJECT_PREFIX) + len(subject) > MAX_ID_LENGTH:
            raise InvalidToken("the token's subject is too long")
        role = claims.get(self.role_claim)
        if not isinstance(role, str) or role not in ROLES:
            raise InvalidToken(
                f"the token's {self.role_claim!r} claim is not one of: {', '.join(ROLES)}"
            )
        agency = claims.get(self.agency_claim)
        if agency is not None and (not isinstance(agency, str) or len(agency) > MAX_ID_LENGTH):
            raise InvalidToken(f"the token's {self.agency_claim!r} claim is not an agency id")
        if role in AGENCY_ROLES and not agency:
            raise InvalidToken(
                f"a {role} acts for an agency: the token lacks the {self.agency_claim!r} claim"
            )
        return Principal(SUBJECT_PREFIX + subject, subject, role, agency or None)

    def _signing_key(self, kid: object) -> PyJWK:
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token names no signing key (kid)")
        client = self._client()
        key = PyJWKClient.match_kid(self._signing_keys(client, refresh=False), kid)
        if key is None and self._may_refetch():
            key = PyJWKClient.match_kid(self._signing_keys(client, refresh=True), kid)
        if key is None:
            raise InvalidToken("the token's signing key is not one of the provider's keys")
        return key

    def _may_refetch(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if self._last_refetch is not None and now - self._last_refetch < self._refetch_interval:
                return False
            self._last_refetch = now
            return True

    def _signing_keys(self, client: PyJWKClient, *, refresh: bool) -> list[PyJWK]:
        try:
            return client.get_signing_keys(refresh=refresh)
        except (jwt.PyJWTError, ValueError) as exc:
            # Unreachable, an HTTP error, not JSON, or no usable signing key: all the
            # provider's side, none the token's.
            log.warning("cannot fetch the identity provider's keys: %s", type(exc).__name__)
            raise ProviderUnavailable("the identity provider's keys cannot be fetched") from None

    def _client(self) -> PyJWKClient:
        with self._lock:
            if self._jwks is None:
                url = self._jwks_url or self._discover()
                self._jwks = PyJWKClient(
                    url,
                    lifespan=JWKS_LIFESPAN_SECONDS,
                    timeout=HTTP_TIMEOUT_SECONDS,
                    headers=dict(_HEADERS),
                )
            return self._jwks

    def _discover(self) -> str:
        """The ``jwks_uri`` of the issuer's OpenID configuration (fetched again on the next
        request after a failure)."""
        url = f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"
        try:
            response = httpx.get(url, headers=_HEADERS, timeout=HTTP_TIMEOUT_SECONDS)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("cannot read the OpenID configuration at %s: %s", url, type(exc).__name__)
            raise ProviderUnavailable("the identity provider cannot be reached") from None
        jwks_uri = document.get("jwks_uri") if isinstance(document, dict) else None
        problem = None
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            problem = "its issuer is not SOP_ENGINE_OIDC_ISSUER"
        elif not isinstance(jwks_uri, str) or not _is_url(jwks_uri, https=self._require_https):
            problem = "its jwks_uri is missing or not an http(s) URL (https in production)"
        if problem is not None:
            log.warning("the OpenID configuration at %s is unusable: %s", url, problem)
            raise ProviderUnavailable("the identity provider's configuration is unusable")
        assert isinstance(jwks_uri, str)
        return jwks_uri


def _is_url(url: str, *, https: bool) -> bool:
    parsed = urlparse(url)
    return bool(parsed.netloc) and parsed.scheme in (("https",) if https else ("http", "https"))


@dataclass(frozen=True, slots=True)
class BearerAuth:
    """Which bearer tokens the API accepts: local tokens (``sop-engine users add``), JWTs
    checked by ``oidc``, or both. The default accepts local tokens only."""

    local_tokens: bool = True
    oidc: OidcVerifier | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> BearerAuth:
        """:raises ConfigurationError: for half-configured OIDC (see
        :meth:`Settings.resolved_auth_mode`)."""
        mode = settings.resolved_auth_mode()
        if mode == "tokens":
            return cls()
        assert settings.oidc_issuer is not None
        assert settings.oidc_audience is not None
        verifier = OidcVerifier(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            jwks_url=settings.oidc_jwks_url,
            algorithms=settings.oidc_algorithms,
            role_claim=settings.oidc_role_claim,
            agency_claim=settings.oidc_agency_claim,
            leeway_seconds=settings.oidc_leeway_seconds,
            require_https=settings.environment == "production",
        )
        return cls(local_tokens=mode == "both", oidc=verifier)
