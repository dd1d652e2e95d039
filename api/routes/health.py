"""``GET /health``: the process answers and so does its database. ``GET /ready``: it can do
its work: the database answers and is at the migrations of this version, the master key is
the one the database was used with, no stored case key is wrapped under a master key this
process lacks, and the escalation
sweep has succeeded within the last two sweep intervals (so a stopped worker, or a Prefect
that no longer starts runs, turns it 503 within two intervals). Neither needs a token nor
says anything about a case.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.deps import RuntimeDep
from api.errors import error_body
from sop_engine.master_keys import mismatched, missing_in_use
from sop_engine.persistence.db import read_transaction
from sop_engine.persistence.migrate import current_revision
from sop_engine.runtime import periodic

router = APIRouter(tags=["health"])

SWEEP = "escalation-sweep"
"""The periodic run whose last success readiness asks about (the flow's name)."""


@dataclass(slots=True)
class Readiness:
    """What ``/ready`` checks against: the migration this version needs, how often the
    sweep runs, and when it was first asked (until two intervals after that, a sweep that
    never ran yet is not a fault: the worker may be starting with the API)."""

    head: str
    sweep_interval: timedelta
    first_asked: datetime | None = None


@router.get("/health", responses={503: {"description": "The database does not answer"}})
def health(runtime: RuntimeDep) -> JSONResponse:
    try:
        with read_transaction(runtime.db) as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return JSONResponse(error_body("unavailable", "the database does not answer"), 503)
    return JSONResponse({"status": "ok"})


@router.get(
    "/ready",
    responses={503: {"description": "Not ready: the reason, and every check's result"}},
)
def ready(runtime: RuntimeDep, request: Request) -> JSONResponse:
    readiness: Readiness = request.app.state.readiness
    now = runtime.clock.now()
    if readiness.first_asked is None:
        readiness.first_asked = now
    first_asked = readiness.first_asked
    checks: dict[str, Any] = {}
    try:
        with read_transaction(runtime.db) as conn:
            revision = current_revision(conn)
        checks["database"] = "ok"
        checks["migration"] = revision
        if revision != readiness.head:
            behind = (
                f"the database is at migration {revision or '(none)'}, this version needs "
                f"{readiness.head}: run sop-engine db upgrade"
            )
            return JSONResponse(error_body("not_ready", behind, checks=checks), 503)
        wrong = mismatched(runtime.db, runtime.services.keyring)
        checks["master_key"] = "differs" if wrong else "ok"
        if wrong:
            message = (
                f"the master key with id {wrong[0]!r} is not the one this database was used "
                "with: set the cluster's SOP_ENGINE_MASTER_KEY"
            )
            return JSONResponse(error_body("not_ready", message, checks=checks), 503)
        lacking = missing_in_use(runtime.db, runtime.services.keyring)
        checks["master_keys_in_use"] = "missing" if lacking else "ok"
        if lacking:
            message = (
                f"stored case keys are wrapped under the master key id {lacking[0]!r}, which "
                "this process's SOP_ENGINE_MASTER_KEY lacks (another process runs a newer "
                "ring): restart this one with the cluster's key ring"
            )
            return JSONResponse(error_body("not_ready", message, checks=checks), 503)
        last = periodic.last_success(runtime.db, SWEEP)
    except SQLAlchemyError:
        return JSONResponse(error_body("not_ready", "the database does not answer"), 503)
    limit = 2 * readiness.sweep_interval
    checks["escalation_sweep"] = {
        "succeeded_at": last.isoformat() if last is not None else None,
        "max_age_seconds": int(limit.total_seconds()),
    }
    reason: str | None = None
    if last is None and now - first_asked > limit:
        reason = "no escalation sweep has succeeded yet: is a worker running?"
    elif last is not None and now - last > limit:
        age = int((now - last).total_seconds())
        reason = f"the last escalation sweep succeeded {age} s ago: is a worker running?"
    if reason is not None:
        return JSONResponse(error_body("not_ready", reason, checks=checks), 503)
    return JSONResponse({"status": "ready", "checks": checks})
