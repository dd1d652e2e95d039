"""``GET /health``: the process answers and so does its database; no token needed."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.deps import RuntimeDep
from api.errors import error_body
from sop_engine.persistence.db import read_transaction

router = APIRouter(tags=["health"])


@router.get("/health", responses={503: {"description": "The database does not answer"}})
def health(runtime: RuntimeDep) -> JSONResponse:
    try:
        with read_transaction(runtime.db) as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return JSONResponse(error_body("unavailable", "the database does not answer"), 503)
    return JSONResponse({"status": "ok"})
