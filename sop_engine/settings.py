"""One settings object for the whole engine, read from ``SOP_ENGINE_*`` environment variables.

Defaults work on a laptop: an SQLite database in ``./data``, a development master key kept
next to it, and the SOP library shipped with the package. In production the master key must
come from ``SOP_ENGINE_MASTER_KEY``; the engine refuses to start without it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sop_engine.errors import ConfigurationError

if TYPE_CHECKING:
    from sop_engine.crypto import MasterKeyring

# The database and crypto modules (SQLAlchemy, cryptography) are imported where they are
# used: commands that only need a path, such as ``sop-engine validate``, should not pay for
# them.

__all__ = [
    "DEV_KEY_FILE",
    "OIDC_ALGORITHMS",
    "AuthMode",
    "Settings",
    "default_sop_dir",
    "get_settings",
]

DEV_KEY_FILE = "master.key"
"""Name of the development master key file in the data folder."""

AuthMode = Literal["tokens", "oidc", "both"]

OIDC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
"""The JWT algorithms an identity provider may sign with: public-key ones only, never
``none`` nor HMAC (whose "secret" would be the provider's public key)."""


def default_sop_dir() -> Path:
    """The ``sop_definitions`` folder shipped with the package."""
    return Path(str(resources.files("sop_definitions")))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SOP_ENGINE_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    """``production`` refuses settings that are only safe on a laptop."""
    data_dir: Path = Path("data")
    """Where the embedded SQLite database and other local state live."""
    sop_dir: Path = default_sop_dir()
    """Where the SOP library is read from."""
    database_url: str | None = None
    """SQLAlchemy URL of the database; by default an SQLite file in ``data_dir``."""
    master_key: SecretStr | None = None
    """Master keys that wrap case keys, ``KEYID:BASE64URL`` comma-separated, current first."""
    directory_dir: Path | None = None
    """The service directory; by default ``sop_dir / "directory"``."""

    sweep_interval_seconds: int = 60
    """How often the escalation sweep runs (its Prefect deployment's interval)."""
    dispatch_interval_seconds: int = 30
    """How often the outbox dispatch runs."""
    verify_interval_seconds: int = 3600
    """How often the timeline verification runs (each timeline is verified in full when it
    changed, and at least once a day)."""
    batch_size: int = 100
    """Timers or messages claimed per batch."""
    timer_lease_seconds: int = Field(default=60, ge=5, le=3600)
    """How long a sweep's claim on a due timer, and a periodic run's lease on its flow, last
    unless renewed: a sweep that died is taken over this long after its last renewal (its
    holder renews them while it works, so a slow batch is not fired twice)."""
    compliance_max_age_seconds: int = 30
    """How old a deadline compliance report may be when the API answers it (its ``as_of``
    says when it was counted); 0 counts on every request."""

    smtp_host: str | None = None
    """SMTP server for email notifications; none means no email is sent (in-app only)."""
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_sender: str = "sop-engine@localhost"
    smtp_timeout_seconds: float = 10.0

    webhook_secret: SecretStr | None = None
    """Standard Webhooks signing secret (``whsec_`` + base64); none means no webhooks."""
    webhook_timeout_seconds: float = 10.0

    metrics_token: SecretStr | None = None
    """The bearer token Prometheus sends to scrape ``GET /metrics``. Without one, the
    metrics are open in development and refused (403) in production."""
    worker_health_port: int | None = Field(default=None, ge=0, le=65535)
    """Where ``sop-engine worker`` answers ``GET /health`` (its own liveness: it polls
    Prefect for runs); none means it does not listen. 0 picks a free port (logged)."""
    worker_health_host: str = "127.0.0.1"
    """The address the worker's health listens on (``0.0.0.0`` in a container)."""
    worker_stop_grace_seconds: float = Field(default=20.0, ge=1, le=600)
    """How long ``sop-engine worker`` may take to stop after SIGTERM (cancel its flow runs,
    stop its local Prefect server) before it kills them and exits 1; keep it inside the
    supervisor's own stop timeout (systemd's ``TimeoutStopSec``, 90 s by default)."""

    refuse_sops_past_review: bool = False
    """Refuse new referrals on an SOP version whose review date has come (by default they
    start, each with a warning)."""

    single_coordinator: bool = False
    """Let the coordinator who uploaded an SOP approve it alone (a demo with one coordinator).
    Off by default: a second coordinator approves every SOP that goes live. Production
    refuses it (:meth:`Settings.resolved_single_coordinator`)."""

    max_request_bytes: int = 1024 * 1024 + 64 * 1024
    """Largest request body the API reads (413 above it); above the SOP files' 1 MiB limit."""

    token_lifetime_days: int = Field(default=90, ge=1, le=3650)
    """How long a token of ``sop-engine users add`` or ``rotate-token`` is accepted."""
    auth_failure_limit: int = Field(default=20, ge=1, le=10_000)
    """Failed authentications a client address may make per window; then 429 until the
    window ends (see :mod:`api.auth_limits`)."""
    auth_failure_window_seconds: int = Field(default=300, ge=1, le=86_400)
    """The length of that window."""

    auth_mode: AuthMode | None = None
    """Bearer tokens the API accepts: ``tokens`` (``sop-engine users add``), ``oidc`` (JWTs of
    the identity provider) or ``both``; by default ``both`` when ``oidc_issuer`` is set."""
    oidc_issuer: str | None = None
    """The identity provider's issuer URL, exactly as in its tokens' ``iss``."""
    oidc_audience: str | None = None
    """The ``aud`` the tokens must carry: this API's client id or resource name."""
    oidc_jwks_url: str | None = None
    """The provider's JWKS; by default the ``jwks_uri`` of its OpenID configuration."""
    oidc_algorithms: Annotated[tuple[str, ...], NoDecode] = ("RS256", "ES256")
    """Accepted signing algorithms, comma-separated (see ``OIDC_ALGORITHMS``)."""
    oidc_role_claim: str = "sop_role"
    """Top-level claim holding the user's role (one of the API's roles)."""
    oidc_agency_claim: str = "sop_agency"
    """Top-level claim holding the user's agency id; required for roles acting for one."""
    oidc_leeway_seconds: int = Field(default=30, ge=0, le=300)
    """Clock skew allowed when checking ``exp``, ``nbf`` and ``iat``."""

    @field_validator("oidc_algorithms", mode="before")
    @classmethod
    def _split_algorithms(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    def resolved_directory_dir(self) -> Path:
        return self.directory_dir or self.sop_dir / "directory"

    def resolved_auth_mode(self) -> AuthMode:
        """``auth_mode``, or ``both`` when an OIDC issuer or audience is set, else ``tokens``.

        :raises ConfigurationError: when OIDC is used but half-configured (an issuer without
            an audience, or the reverse), allows an algorithm outside ``OIDC_ALGORITHMS``,
            or, in production, names an issuer or JWKS URL that is not https. An audience is
            required everywhere: without one, any token the provider issues for any other
            application would be accepted.
        """
        mode = self.auth_mode or ("both" if self.oidc_issuer or self.oidc_audience else "tokens")
        if mode == "tokens":
            return mode
        missing = [
            f"SOP_ENGINE_OIDC_{name}"
            for name, value in (("ISSUER", self.oidc_issuer), ("AUDIENCE", self.oidc_audience))
            if not value
        ]
        if missing:
            raise ConfigurationError(
                f"OIDC is half-configured (auth mode {mode}): set {' and '.join(missing)} "
                "too; the issuer is the tokens' iss, the audience the aud naming this API"
            )
        refused = [a for a in self.oidc_algorithms if a not in OIDC_ALGORITHMS]
        if refused or not self.oidc_algorithms:
            raise ConfigurationError(
                f"SOP_ENGINE_OIDC_ALGORITHMS may list only {', '.join(sorted(OIDC_ALGORITHMS))}"
                f"; refused: {', '.join(refused) or '(empty)'}"
            )
        schemes = ("https",) if self.environment == "production" else ("http", "https")
        for name, url in (("ISSUER", self.oidc_issuer), ("JWKS_URL", self.oidc_jwks_url)):
            parsed = urlparse(url) if url is not None else None
            if parsed is not None and (parsed.scheme not in schemes or not parsed.netloc):
                where = " in production" if self.environment == "production" else ""
                raise ConfigurationError(
                    f"SOP_ENGINE_OIDC_{name} must be an {' or '.join(schemes)} URL{where}"
                )
        return mode

    def resolved_single_coordinator(self) -> bool:
        """``single_coordinator``.

        :raises ConfigurationError: it is set in production, where every SOP that goes live
            needs a second coordinator's approval.
        """
        if self.single_coordinator and self.environment == "production":
            raise ConfigurationError(
                "SOP_ENGINE_SINGLE_COORDINATOR is refused in production: every SOP that goes "
                "live needs a second coordinator's approval; make a second coordinator "
                "(sop-engine users add) instead"
            )
        return self.single_coordinator

    def resolved_database_url(self) -> str:
        """``database_url``, or the embedded SQLite database in ``data_dir``.

        :raises ConfigurationError: in production without ``database_url``: the embedded
            default is for a laptop; a production SQLite database is named explicitly.
        """
        from sop_engine.persistence.db import default_database_url  # noqa: PLC0415

        if self.database_url:
            return self.database_url
        if self.environment == "production":
            raise ConfigurationError(
                "SOP_ENGINE_DATABASE_URL must be set in production (postgresql+psycopg://...); "
                "the embedded SQLite database is a laptop's default, and SQLite in production "
                "is named explicitly (sqlite:////srv/sop/sop_engine.sqlite3)"
            )
        return default_database_url(self.data_dir)

    def keyring(self) -> MasterKeyring:
        """The master keys: from ``master_key``; in development, without it, from a key file
        in ``data_dir`` made on first use (mode 0600).

        :raises ConfigurationError: in production without ``master_key``, or when a key
            setting cannot be read. Messages never contain key material.
        """
        from sop_engine.crypto import MasterKeyring  # noqa: PLC0415

        if self.master_key is not None:
            return MasterKeyring.from_setting(self.master_key.get_secret_value())
        if self.environment == "production":
            raise ConfigurationError(
                "SOP_ENGINE_MASTER_KEY must be set in production: the development key file "
                "lives next to the data it protects. Make a key with MasterKey.generate() "
                "and keep it in the deployment's secret store."
            )
        return _development_keyring(self.data_dir / DEV_KEY_FILE)


def _development_keyring(path: Path) -> MasterKeyring:
    from sop_engine.crypto import MasterKeyring  # noqa: PLC0415

    if not path.exists():
        _create_key_file(path)
    try:
        return MasterKeyring.from_setting(path.read_text(encoding="ascii"))
    except (ConfigurationError, UnicodeDecodeError) as exc:
        reason = str(exc) if isinstance(exc, ConfigurationError) else "it is not ASCII text"
        raise ConfigurationError(f"the development key file {path} is unusable: {reason}") from None


def _create_key_file(path: Path) -> None:
    """Write a fresh key under a temporary name, then link it into place: the key file
    appears whole or not at all, and a process that loses the race reads the winner's key."""
    from sop_engine.crypto import MasterKey  # noqa: PLC0415

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(MasterKey.generate("dev1").to_setting() + "\n")
        os.chmod(staging, 0o600)
        with contextlib.suppress(FileExistsError):
            os.link(staging, path)
    finally:
        staging.unlink()


@cache
def get_settings() -> Settings:
    return Settings()
