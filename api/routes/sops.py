"""SOPs, for coordinators and auditors: list, read, diagram; coordinators validate, upload
and review them, four eyes on each.

``POST /sops`` stores a valid upload pending review (an invalid one is stored nowhere: 422
with every problem, as ``POST /sops/validate`` reports them); ``POST
/sops/{key}/{version}/approve`` by another coordinator makes it live, ``.../refuse`` sends it
back (see :mod:`sop_engine.publishing`). Each takes an ``Idempotency-Key``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Request, Response, status
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse

from api.deps import Authorized, RuntimeDep, authorize
from api.openapi import SOP_YAML_EXAMPLE, error_responses
from api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, page_of
from api.schemas.sops import (
    ProblemPublic,
    ReviewOutcome,
    ReviewRequest,
    SopListItem,
    SopPublic,
    StoredSopPublic,
    StoredSopSource,
    UploadReport,
    ValidationReport,
)
from sop_engine.errors import DefinitionError, InvalidInput
from sop_engine.language.diagram import mermaid
from sop_engine.language.published import PublishedLibrary, PublishedSources
from sop_engine.publishing import (
    MAX_VERSION,
    UPLOAD_NAME,
    NotPending,
    Outcome,
    VersionExists,
    approve_upload,
    check_upload,
    decode_upload,
    list_pending,
    read_stored,
    refuse_upload,
    upload_sop,
)
from sop_engine.runtime.sop_dates import date_status

router = APIRouter(
    prefix="/sops",
    tags=["sops"],
    dependencies=[Depends(authorize)],
    responses=error_responses(401, 403, 404, 413, 422),
)

__all__ = ["UPLOAD_NAME", "router", "sop_sources"]

IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=200,
        description="A retry with the same key answers the first result (`replayed: true`).",
    ),
]

SopKey = Annotated[str, PathParam(min_length=1, max_length=100)]
SopVersion = Annotated[int, PathParam(ge=1, le=MAX_VERSION, description="A whole number.")]
"""A version as the database stores it (a 32-bit integer)."""

_YAML_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {"schema": {"type": "string"}, "example": SOP_YAML_EXAMPLE}
        },
    }
}


@router.get("")
def list_sops(runtime: RuntimeDep) -> list[SopListItem]:
    now = runtime.clock.now()
    return [
        SopListItem(
            key=s.key,
            version=s.version,
            title=s.spec.title,
            effective=s.spec.effective,
            review=s.spec.review,
            date_status=date_status(s.spec, now),
        )
        for s in runtime.library
    ]


@router.get("/{key}/{version}")
def read_sop(runtime: RuntimeDep, key: str, version: int) -> SopPublic:
    return SopPublic.of(runtime.library.get(key, version).spec)


@router.get("/{key}/{version}/diagram", response_class=PlainTextResponse)
def sop_diagram(runtime: RuntimeDep, key: str, version: int) -> PlainTextResponse:
    """The SOP as a Mermaid ``stateDiagram-v2``."""
    return PlainTextResponse(mermaid(runtime.library.get(key, version).spec))


def sop_sources(request: Request, runtime: RuntimeDep) -> PublishedSources:
    """The SOPs an upload may extend: the library's own sources when it is a
    :class:`PublishedLibrary`, else the files of ``sop_paths`` and the published rows."""
    library = runtime.library
    if isinstance(library, PublishedLibrary):
        return library.sources
    sources: PublishedSources | None = getattr(request.app.state, "sop_sources", None)
    if sources is None or sources.db is not runtime.db:
        sources = PublishedSources(runtime.db, request.app.state.sop_paths)
        request.app.state.sop_sources = sources
    return sources


Sources = Annotated[PublishedSources, Depends(sop_sources)]


@router.post("/validate", openapi_extra=_YAML_BODY)
def validate_sop(
    request: Request,
    sources: Sources,
    body: Annotated[bytes, Body(media_type="application/yaml")] = b"",
) -> ValidationReport:
    """Check an SOP sent as YAML text, as ``sop-engine validate`` does, against the library's
    SOPs (files and published versions) as possible parents. Always 200: the report is the
    answer, valid or not. Nothing is stored."""
    try:
        compiled = check_upload(decode_upload(body), sources, request.app.state.templates)
    except DefinitionError as exc:
        problems = [ProblemPublic.of(p) for p in exc.problems]
        return ValidationReport(valid=False, sop=None, problems=problems)
    return ValidationReport(valid=True, sop=compiled.ref, problems=[])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_YAML_BODY,
    responses=error_responses(409),
)
def upload(
    *,
    request: Request,
    runtime: RuntimeDep,
    user: Authorized,
    sources: Sources,
    response: Response,
    body: Annotated[bytes, Body(media_type="application/yaml")] = b"",
    idempotency_key: IdempotencyKey = None,
) -> UploadReport:
    """Upload an SOP's YAML: stored pending review under its key and version (replacing a
    pending or refused text of that version) when it compiles. Another coordinator then
    approves it (``POST /sops/{key}/{version}/approve``) or refuses it. When it does not
    compile, nothing is stored and the answer is 422 ``definition_error`` with every problem;
    409 when the version is published already (a file, or an approved upload)."""
    outcome = _reviewed(
        lambda: upload_sop(
            runtime.db,
            runtime.library,
            sources,
            decode_upload(body),
            actor_id=user.id,
            now=runtime.clock.now(),
            templates=request.app.state.templates,
            idempotency_key=idempotency_key,
        )
    )
    sop = outcome.sop
    response.headers["Location"] = f"/sops/{sop.key}/{sop.version}/source"
    return UploadReport(
        valid=True,
        sop=sop.ref,
        problems=[],
        upload=StoredSopPublic.of(sop),
        replayed=outcome.replayed,
    )


def _reviewed(operation: Callable[[], Outcome]) -> Outcome:
    """The operation's outcome; 409 when the version it names is published already or was
    refused."""
    try:
        return operation()
    except (VersionExists, NotPending) as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None


@router.get("/pending")
def pending(
    runtime: RuntimeDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[StoredSopPublic]:
    """Uploads waiting for a second coordinator's review, by key and version."""
    after = decode_cursor(cursor)
    if after is not None and not (
        isinstance(after, list)
        and len(after) == 2
        and isinstance(after[0], str)
        and isinstance(after[1], int)
        and 0 <= after[1] <= MAX_VERSION
    ):
        raise InvalidInput("not a cursor this API gave out", field="cursor")
    rows = list_pending(runtime.db, after=(after[0], after[1]) if after else None, limit=limit + 1)
    items, next_cursor = page_of(rows, limit, lambda s: [s.key, s.version])
    return Page[StoredSopPublic](
        items=[StoredSopPublic.of(s) for s in items], next_cursor=next_cursor
    )


@router.get("/{key}/{version}/source")
def sop_source(runtime: RuntimeDep, key: SopKey, version: SopVersion) -> StoredSopSource:
    """An uploaded SOP, pending, refused or published, with its YAML text as uploaded and
    every review of it (who approved or refused which text, when, why)."""
    return StoredSopSource.of(read_stored(runtime.db, key, version))


@router.post("/{key}/{version}/approve", responses=error_responses(409))
def approve(
    *,
    request: Request,
    runtime: RuntimeDep,
    user: Authorized,
    sources: Sources,
    key: SopKey,
    version: SopVersion,
    review: ReviewRequest,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> ReviewOutcome:
    """Approve the pending text whose ``sha256`` the reviewer read, and so publish it: compiled
    again against the library as it is now (it may extend a published SOP), added to the
    running library and kept in the database, so that every start loads it. 403
    ``approval_by_requester`` when the reviewer uploaded that text (four eyes; only a service
    started with ``SOP_ENGINE_SINGLE_COORDINATOR`` allows it, never in production); 409 when
    the version is published already, was refused, or holds another text than ``sha256``; 422
    with the problems when it no longer compiles; 404 when nothing was uploaded."""
    outcome = _reviewed(
        lambda: approve_upload(
            runtime.db,
            runtime.library,
            sources,
            key,
            version,
            sha256=review.sha256,
            comment=review.comment,
            actor_id=user.id,
            now=runtime.clock.now(),
            single_coordinator=request.app.state.single_coordinator,
            templates=request.app.state.templates,
            idempotency_key=idempotency_key,
        )
    )
    response.headers["Location"] = f"/sops/{key}/{version}"
    return ReviewOutcome(
        sop=outcome.sop.ref, upload=StoredSopPublic.of(outcome.sop), replayed=outcome.replayed
    )


@router.post("/{key}/{version}/refuse", responses=error_responses(409))
def refuse(
    *,
    runtime: RuntimeDep,
    user: Authorized,
    key: SopKey,
    version: SopVersion,
    review: ReviewRequest,
    idempotency_key: IdempotencyKey = None,
) -> ReviewOutcome:
    """Refuse the pending text whose ``sha256`` the reviewer read, saying why (``comment``,
    required: 422 without). Its uploader may refuse it too, withdrawing it. It stays refused
    until it is uploaded again; 409 as for approving."""
    outcome = _reviewed(
        lambda: refuse_upload(
            runtime.db,
            key,
            version,
            sha256=review.sha256,
            comment=review.comment or "",
            actor_id=user.id,
            now=runtime.clock.now(),
            idempotency_key=idempotency_key,
        )
    )
    return ReviewOutcome(
        sop=outcome.sop.ref, upload=StoredSopPublic.of(outcome.sop), replayed=outcome.replayed
    )
