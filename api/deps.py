"""The routes' dependencies, as ``Annotated`` aliases: the runtime, the current user, and the
permission check of :mod:`api.permissions`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.permissions import allowed
from api.users import Principal, find_by_token
from sop_engine.runtime.actors import Actor
from sop_engine.runtime.engine import Runtime

__all__ = ["Authorized", "CurrentUser", "RuntimeDep", "actor_of", "authorize"]

_bearer = HTTPBearer(auto_error=False, description="The token printed by `sop-engine users add`")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

_UNAUTHENTICATED = HTTPException(
    status.HTTP_401_UNAUTHORIZED,
    "a valid bearer token is required",
    headers={"WWW-Authenticate": "Bearer"},
)


def get_current_user(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The user whose token the request carries; 401 without one, or with an unknown one."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _UNAUTHENTICATED
    user = find_by_token(runtime.db, credentials.credentials)
    if user is None:
        raise _UNAUTHENTICATED
    return user


CurrentUser = Annotated[Principal, Depends(get_current_user)]


def authorize(request: Request, user: CurrentUser) -> Principal:
    """403 unless the permission table lets the user's role call this route."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    if path is None or not allowed(request.method, path, user.role):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "your role may not use this route")
    return user


Authorized = Annotated[Principal, Depends(authorize)]
"""The current user, once the permission table allowed the route: every non-public route
takes its user through this alias (or has ``authorize`` in its router's dependencies)."""


def actor_of(user: Principal) -> Actor:
    """The engine's actor for a user: the user id (never the name), role and agency."""
    return Actor(user.id, user.role, user.agency_id)
