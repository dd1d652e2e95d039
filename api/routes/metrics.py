"""``GET /metrics``: the figures of :mod:`api.metrics` for Prometheus, behind the scrape token."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from api.errors import error_body
from api.metrics import MetricsAccess

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"},
        401: {"description": "The scrape token is missing or wrong"},
        403: {"description": "Production without SOP_ENGINE_METRICS_TOKEN: metrics are off"},
        503: {"description": "The database does not answer"},
    },
)
def metrics(request: Request) -> Response:
    access: MetricsAccess = request.app.state.metrics_access
    if access.locked:
        message = "metrics are off in production until SOP_ENGINE_METRICS_TOKEN is set"
        return JSONResponse(error_body("forbidden", message), 403)
    if not access.allows(request.headers.get("authorization")):
        return JSONResponse(
            error_body("unauthenticated", "send the scrape token as a bearer token"),
            401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    try:
        body = generate_latest(request.app.state.metrics_registry)
    except SQLAlchemyError:
        return JSONResponse(error_body("unavailable", "the database does not answer"), 503)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
