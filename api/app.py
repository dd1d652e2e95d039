"""``create_app``: the FastAPI application over a Runtime composed by the caller."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from api import errors
from api.auth_limits import FailedAuthLimit
from api.characters import TextOnly
from api.headers import SecurityHeaders
from api.limits import DEFAULT_MAX_REQUEST_BYTES, BodySizeLimit
from api.metrics import MetricsAccess, RequestMetrics, database_collector, new_registry
from api.oidc import BearerAuth
from api.routes import (
    audit,
    consent,
    events,
    health,
    inbox,
    metrics,
    notices,
    referrals,
    sops,
    tasks,
    transfers,
)
from api.routes import directory as directory_routes
from sop_engine.directory import ServiceDirectory
from sop_engine.persistence.migrate import head_revision
from sop_engine.runtime.engine import Runtime

__all__ = ["create_app"]


def create_app(
    runtime: Runtime,
    *,
    sop_paths: Iterable[Path] = (),
    templates: Collection[str] | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    auth: BearerAuth | None = None,
    directory: ServiceDirectory | None = None,
    auth_limit: FailedAuthLimit | None = None,
    strict_transport_security: bool = False,
    single_coordinator: bool = False,
    sweep_interval: timedelta = timedelta(seconds=60),
    metrics_token: str | None = None,
    metrics_open: bool = True,
) -> FastAPI:
    """The API over ``runtime``.

    ``sop_paths`` are the folders the runtime's SOP library was read from: an SOP sent to
    ``POST /sops/validate`` may extend the SOPs found there. ``templates`` are the
    notification templates that SOPs may name (None: any name is accepted). A request body
    over ``max_request_bytes`` is answered 413 (see :mod:`api.limits`). ``auth`` says which
    bearer tokens are accepted (by default local tokens only; see :mod:`api.oidc`).
    ``directory`` is the service directory read from its files; the entries coordinators keep
    through the API lie over it (none given: the runtime's, whose agencies alone may receive
    a referral). ``auth_limit`` bounds the failed authentications per client (see
    :mod:`api.auth_limits`). Every answer carries the security headers of
    :mod:`api.headers`, with ``Strict-Transport-Security`` when asked. ``single_coordinator``
    lets an SOP's uploader approve it alone (a demo; see :mod:`sop_engine.publishing`).
    ``sweep_interval`` is the escalation sweep's: ``/ready`` turns 503 when the last sweep
    succeeded more than two intervals ago (see :mod:`api.routes.health`). ``GET /metrics``
    needs ``metrics_token`` as a bearer token when one is given, and is refused without one
    unless ``metrics_open`` (see :mod:`api.metrics`).
    """
    app = FastAPI(
        title="sop-engine",
        summary="Inter-agency SOP workflows for cross-border GBV referrals",
        version="0.1.0",
    )
    app.state.runtime = runtime
    app.state.sop_paths = tuple(sop_paths)
    app.state.templates = templates
    app.state.auth = auth or BearerAuth()
    app.state.directory = directory if directory is not None else runtime.services.directory
    app.state.auth_limit = auth_limit or FailedAuthLimit()
    app.state.single_coordinator = single_coordinator
    app.state.readiness = health.Readiness(head_revision(), sweep_interval)
    registry, latency = new_registry()
    registry.register(database_collector(lambda: app.state.runtime))
    app.state.metrics_registry = registry
    app.state.metrics_access = MetricsAccess(metrics_token, metrics_open)
    errors.install(app)
    app.add_middleware(TextOnly)
    app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes)
    app.add_middleware(SecurityHeaders, strict_transport_security=strict_transport_security)
    app.add_middleware(RequestMetrics, latency=latency)  # outermost: times all of it
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(sops.router)
    app.include_router(referrals.router)
    app.include_router(inbox.router)
    app.include_router(tasks.router)
    app.include_router(notices.router)
    app.include_router(events.router)
    app.include_router(consent.router)
    app.include_router(transfers.router)
    app.include_router(audit.router)
    app.include_router(directory_routes.router)
    return app
