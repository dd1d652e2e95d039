"""SOPs, for coordinators and auditors: list, read, diagram; coordinators validate drafts."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import PlainTextResponse

from api.deps import RuntimeDep, authorize
from api.schemas.sops import ProblemPublic, SopListItem, SopPublic, ValidationReport
from sop_engine.errors import DefinitionError
from sop_engine.language.compiler import compile_text, discover
from sop_engine.language.diagram import mermaid
from sop_engine.language.inherit import ref_of
from sop_engine.language.source import SourceDocument, load_source, parse_source

router = APIRouter(prefix="/sops", tags=["sops"], dependencies=[Depends(authorize)])

UPLOAD_NAME = "upload.sop.yaml"
"""The file name problems of an uploaded SOP carry."""


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


@cache
def _library_documents(paths: tuple[Path, ...]) -> dict[str, SourceDocument]:
    docs: dict[str, SourceDocument] = {}
    for path in discover(paths):
        try:
            doc = load_source(path)
        except DefinitionError:
            continue
        ref = ref_of(doc.data)
        if ref:
            docs[ref] = doc
    return docs


def _ancestors(doc: SourceDocument, known: dict[str, SourceDocument]) -> list[SourceDocument]:
    """The library documents ``doc`` extends, nearest first."""
    found: list[SourceDocument] = []
    parent = doc.data.get("extends") if isinstance(doc.data, dict) else None
    while isinstance(parent, str) and parent in known and known[parent] not in found:
        found.append(known[parent])
        parent = known[parent].data.get("extends")
    return found


@router.post(
    "/validate",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/yaml": {"schema": {"type": "string"}}},
        }
    },
)
def validate_sop(
    request: Request, body: Annotated[bytes, Body(media_type="application/yaml")] = b""
) -> ValidationReport:
    """Check an SOP sent as YAML text, as ``sop-engine validate`` does, against the library's
    SOPs as possible parents. Always 200: the report is the answer, valid or not."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("utf-8", errors="replace")
    known = _library_documents(request.app.state.sop_paths)
    try:
        doc = parse_source(text, UPLOAD_NAME)
        own = ref_of(doc.data)
        parents = [p for p in _ancestors(doc, known) if ref_of(p.data) != own]
        compiled = compile_text(
            text, UPLOAD_NAME, parents=parents, templates=request.app.state.templates
        )
    except DefinitionError as exc:
        problems = [ProblemPublic.of(p) for p in exc.problems]
        return ValidationReport(valid=False, sop=None, problems=problems)
    return ValidationReport(valid=True, sop=compiled.ref, problems=[])
