"""The routes' dependencies, as ``Annotated`` aliases: the runtime, the current user, and the
permission check of :mod:`api.permissions`."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth_limits import AuthFailures, client_key
from api.oidc import BearerAuth, InvalidToken, ProviderUnavailable, is_jwt
from api.permissions import allowed
from api.users import Principal, TokenRefused, lookup_token
from sop_engine.directory.managed import ManagedDirectory
from sop_engine.persistence.db import read_transaction
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime

__all__ = [
    "Authorized",
    "CurrentUser",
    "RuntimeDep",
    "actor_of",
    "authorize",
    "managed_directory",
]

_bearer = HTTPBearer(
    auto_error=False,
    description=(
        "The token printed by `sop-engine users add` or `rotate-token`, or the identity "
        "provider's JWT"
    ),
)


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

_UNAUTHENTICATED = HTTPException(
    status.HTTP_401_UNAUTHORIZED,
    "a valid bearer token is required",
    headers={"WWW-Authenticate": "Bearer"},
)


def _invalid_token(message: str) -> HTTPException:
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    return HTTPException(status.HTTP_401_UNAUTHORIZED, message, headers=headers)


class _Refused(Exception):
    """A bearer token refused, with the access log's name for why."""

    def __init__(self, reason: str, message: str, user: Principal | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.user = user


_REASONS = {"unknown": "unknown_token", "disabled": "disabled_user", "expired": "expired_token"}


def _verify_jwt(request: Request, runtime: Runtime, token: str) -> Principal:
    auth: BearerAuth = request.app.state.auth
    assert auth.oidc is not None
    try:
        principal = auth.oidc.verify(token)
    except InvalidToken as exc:
        raise _Refused("invalid_jwt", str(exc)) from None
    except ProviderUnavailable as exc:
        headers = {"Retry-After": "30"}
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers) from None
    if principal.agency_id is None:
        return principal
    types = managed_directory(request, runtime).agency_types(principal.agency_id)
    return replace(principal, agency_types=types)


def _verify(request: Request, runtime: Runtime, token: str) -> Principal:
    """The token's user, or :class:`_Refused`."""
    auth: BearerAuth = request.app.state.auth
    if auth.oidc is not None and is_jwt(token):
        return _verify_jwt(request, runtime, token)
    if not auth.local_tokens:
        raise _Refused("local_token", "only the identity provider's tokens are accepted")
    with read_transaction(runtime.db) as conn:
        try:
            return lookup_token(conn, token, runtime.clock.now(), request.app.state.directory)
        except TokenRefused as exc:
            raise _Refused(_REASONS[exc.reason], str(exc), exc.user) from None


def get_current_user(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The user whose token the request carries; 401 without one, or with an unknown,
    expired, disabled or invalid one, and 429 instead while the client is over its limit
    of failed authentications (see :mod:`api.auth_limits`: a token that is good is served
    whatever the client's failures); 503 when the identity provider's keys cannot be had
    (see :mod:`api.oidc`)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _UNAUTHENTICATED
    try:
        return _verify(request, runtime, credentials.credentials)
    except _Refused as exc:
        failures = auth_failures(request, runtime)
        client = client_key(request.client.host if request.client else None)
        with read_transaction(runtime.db) as conn:
            blocked = failures.blocked(conn, client)
        if blocked is not None:
            wait = failures.refuse(blocked)
            message = f"too many failed authentications from this client; retry in {wait} s"
            headers = {"Retry-After": str(wait)}
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, message, headers) from None
        failures.record(client, exc.reason, exc.user)
        raise _invalid_token(str(exc)) from None


CurrentUser = Annotated[Principal, Depends(get_current_user)]


def auth_failures(request: Request, runtime: Runtime) -> AuthFailures:
    """The failed authentications of the runtime's database, under ``create_app``'s limit;
    made on first use, like :func:`managed_directory`."""
    state = request.app.state
    failures: AuthFailures | None = getattr(state, "auth_failures", None)
    if failures is None or failures.db is not runtime.db:
        failures = AuthFailures(runtime.db, runtime.clock, state.auth_limit)
        state.auth_failures = failures
    return failures


def managed_directory(request: Request, runtime: RuntimeDep) -> ManagedDirectory:
    """The app's directory (``create_app``'s ``directory``) with the managed entries of the
    runtime's database over it; made on first use, so that building the app reads nothing."""
    state = request.app.state
    managed: ManagedDirectory | None = getattr(state, "managed_directory", None)
    if managed is None or managed.db is not runtime.db:
        managed = ManagedDirectory(runtime.db, state.directory)
        state.managed_directory = managed
    return managed


async def authorize(request: Request, user: CurrentUser) -> Principal:
    """403 unless the permission table lets the user's role call this route. (``async``: it
    does no I/O, and a plain function would cost a trip to the thread pool per request.)"""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    if path is None or not allowed(request.method, path, user.role):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "your role may not use this route")
    return user


Authorized = Annotated[Principal, Depends(authorize)]
"""The current user, once the permission table allowed the route: every non-public route
takes its user through this alias (or has ``authorize`` in its router's dependencies)."""


def actor_of(user: Principal) -> Actor:
    """The engine's actor for a user: the user id (never the name), role, agency and the
    agency's types (which the SOP's roles may restrict)."""
    return Actor(user.id, user.role, user.agency_id, user.agency_types)
