"""SOPs, for coordinators and auditors: list, read, diagram; coordinators validate, upload
and publish them.

``POST /sops`` stores a valid upload as a draft (an invalid one is stored nowhere: 422 with
every problem, as ``POST /sops/validate`` reports them); ``POST /sops/{key}/{version}/publish``
makes a draft live (see :mod:`sop_engine.publishing`). Both take an ``Idempotency-Key``.
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
    PublicationPublic,
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
    Outcome,
    VersionExists,
    check_upload,
    decode_upload,
    list_drafts,
    publish_draft,
    read_stored,
    upload_draft,
)

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
    return [SopListItem(key=s.key, version=s.version, title=s.spec.title) for s in runtime.library]


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
def upload_sop(
    *,
    request: Request,
    runtime: RuntimeDep,
    user: Authorized,
    sources: Sources,
    response: Response,
    body: Annotated[bytes, Body(media_type="application/yaml")] = b"",
    idempotency_key: IdempotencyKey = None,
) -> UploadReport:
    """Upload an SOP's YAML: stored as the draft of its key and version (replacing an earlier
    draft of that version) when it compiles. When it does not, nothing is stored and the
    answer is 422 ``definition_error`` with every problem; 409 when the version is published
    already (a file, or a published upload)."""
    outcome = _stored_or_conflict(
        lambda: upload_draft(
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
        draft=StoredSopPublic.of(sop),
        replayed=outcome.replayed,
    )


def _stored_or_conflict(operation: Callable[[], Outcome]) -> Outcome:
    """The operation's outcome; 409 when the version it names is published already."""
    try:
        return operation()
    except VersionExists as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None


@router.get("/drafts")
def drafts(
    runtime: RuntimeDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[StoredSopPublic]:
    """Uploaded SOPs not published yet, by key and version."""
    after = decode_cursor(cursor)
    if after is not None and not (
        isinstance(after, list)
        and len(after) == 2
        and isinstance(after[0], str)
        and isinstance(after[1], int)
        and 0 <= after[1] <= MAX_VERSION
    ):
        raise InvalidInput("not a cursor this API gave out", field="cursor")
    rows = list_drafts(runtime.db, after=(after[0], after[1]) if after else None, limit=limit + 1)
    items, next_cursor = page_of(rows, limit, lambda s: [s.key, s.version])
    return Page[StoredSopPublic](
        items=[StoredSopPublic.of(s) for s in items], next_cursor=next_cursor
    )


@router.get("/{key}/{version}/source")
def sop_source(runtime: RuntimeDep, key: SopKey, version: SopVersion) -> StoredSopSource:
    """An uploaded SOP, draft or published, with its YAML text as uploaded."""
    return StoredSopSource.of(read_stored(runtime.db, key, version))


@router.post("/{key}/{version}/publish", responses=error_responses(409))
def publish_sop(
    *,
    request: Request,
    runtime: RuntimeDep,
    user: Authorized,
    sources: Sources,
    key: SopKey,
    version: SopVersion,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> PublicationPublic:
    """Make the draft ``key@version`` live: compiled again against the library as it is now
    (it may extend a published SOP), added to the running library and kept in the database,
    so that every start loads it. 409 when the version is published already; 422 with the
    problems when it no longer compiles; 404 when there is no such draft."""
    outcome = _stored_or_conflict(
        lambda: publish_draft(
            runtime.db,
            runtime.library,
            sources,
            key,
            version,
            actor_id=user.id,
            now=runtime.clock.now(),
            templates=request.app.state.templates,
            idempotency_key=idempotency_key,
        )
    )
    response.headers["Location"] = f"/sops/{key}/{version}"
    return PublicationPublic(
        sop=outcome.sop.ref, published=StoredSopPublic.of(outcome.sop), replayed=outcome.replayed
    )
