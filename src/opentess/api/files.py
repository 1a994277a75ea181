"""Files (contract §7) and agents' files (§8): upload, list, read, delete, process; link to an
agent and unlink; large uploads through a signed URL (``/v2/files/sign``, a PUT, then
``/v2/files/register``). Decisions where Tess is silent: docs/api.md, "Files"."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request
from starlette.responses import Response

from opentess.api import files_wire, routing, schemas
from opentess.api.bodies import read_json_object
from opentess.api.deps import AppState, PrincipalDep, StateDep
from opentess.api.errors import json_response
from opentess.api.execute import parse_flag
from opentess.api.files_schemas import (
    AgentFileList,
    AgentFileRemoved,
    AgentFilesLink,
    AgentFilesLinked,
    FileObject,
    FileUploadForm,
    RegisterRequest,
    SignedUpload,
    SignRequest,
)
from opentess.api.pagination import envelope, page_of, public_base
from opentess.errors import InvalidInput
from opentess.executions.request import id_list
from opentess.files.service import FilesService
from opentess.files.store import WAITING

router = routing.router(tags=["Files"])


class FilePage(schemas.Page):
    data: list[FileObject]


def _multipart_body() -> dict[str, Any]:
    extra = schemas.documented_body(FileUploadForm)  # registers the schema in the document
    body = extra["requestBody"]
    body["required"] = True
    body["content"] = {"multipart/form-data": body["content"]["application/json"]}
    return extra


def files_of(state: AppState) -> FilesService:
    service = state.capabilities["files"].extras["files"]
    assert isinstance(service, FilesService)
    return service


def _length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    return int(raw) if raw is not None and raw.isdigit() else None


@router.post(
    "/files",
    response_model=FileObject,
    responses=schemas.native_errors(400),
    openapi_extra=_multipart_body(),
)
async def upload_file(request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    """Upload one file (``multipart/form-data``: ``file``, optional ``process``). The body is
    streamed to storage; above ``OPENTESS_MAX_FILE_BYTES`` it is refused (413) without being
    read. ``process=true``: answered ``waiting``, processed in the background; otherwise
    ``completed`` (stored) and extracted on first use."""
    record = await files_of(state).receive(
        workspace_id=principal.workspace_id,
        user_id=principal.user_id,
        content_type=request.headers.get("content-type"),
        content_length=_length(request),
        body=request.stream(),
        parse_flag=parse_flag,
    )
    return json_response(200, files_wire.file(record))


@router.get("/files", response_model=FilePage, responses=schemas.native_errors())
async def list_files(
    request: Request,
    principal: PrincipalDep,
    state: StateDep,
    order: Annotated[str | None, Query(description="desc (newest first, the default) or asc")] = None,
    page: schemas.PageQuery = None,
    per_page: schemas.PerPageQuery = None,
) -> Response:
    """The workspace's files, a page at a time."""
    errors: dict[str, list[str]] = {}
    direction = (order or "desc").lower()
    if direction not in ("asc", "desc"):
        errors["order"] = ["The selected order is invalid. Valid options: asc, desc."]
    paging = page_of(request, errors)
    records, total = await files_of(state).store.search(
        principal.workspace_id, descending=direction == "desc", offset=paging.offset, limit=paging.size
    )
    return json_response(200, envelope(request, [files_wire.file(r) for r in records], total, paging))


@router.get("/files/{file_id:id}", response_model=FileObject, responses=schemas.native_errors(404))
async def get_file(file_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    return json_response(200, files_wire.file(await files_of(state).store.get(file_id, principal.workspace_id)))


@router.delete("/files/{file_id:id}", response_model=FileObject, responses=schemas.native_errors(404))
async def delete_file(file_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    """Delete a file: unlinked from every agent, its text and bytes removed. Executions that
    used it keep their record. Answers the file as it was."""
    return json_response(200, files_wire.file(await files_of(state).delete(file_id, principal.workspace_id)))


@router.post("/files/{file_id:id}/process", response_model=FileObject, responses=schemas.native_errors(404))
async def process_file(file_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    """Process the file now (again, if it was processed or failed); it answers ``waiting``. A
    file already waiting is left as it is. Any body is ignored."""
    return json_response(200, files_wire.file(await files_of(state).process(file_id, principal.workspace_id)))


# agents' files -------------------------------------------------------------------------------------


def _wait_flag(body: dict[str, Any], request: Request) -> bool:
    for name in ("waitExecution", "wait_execution"):
        for source in (body, request.query_params):
            if name in source and source[name] is not None:
                value = parse_flag(source[name])
                if value is None:
                    raise InvalidInput({name: [f"The {name} field must be true or false."]})
                return value
    return False


@router.post(
    "/agents/{agent_id:id}/files",
    response_model=AgentFilesLinked,
    responses=schemas.native_errors(400, 404),
    openapi_extra=schemas.documented_body(AgentFilesLink),
)
async def link_files(agent_id: int, request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    """Link files to the agent: they become its knowledge. ``file_ids`` (or one ``file_id`` /
    ``fileId``); files stored without processing are processed now. With ``waitExecution``
    (query or body) the answer waits until the agent's files are processed (at most
    ``OPENTESS_WAIT_LIMIT_S``)."""
    agent = await state.store.agents.get(agent_id, principal.workspace_id)
    body = await read_json_object(request, empty_is_object=True)
    errors: dict[str, list[str]] = {}
    raw = next((body[k] for k in ("file_ids", "file_id", "fileId") if body.get(k) not in (None, "", [])), None)
    file_ids = id_list(raw, "file_ids", errors)
    if not file_ids and not errors:
        errors["file_ids"] = ["The file_ids field is required."]
    wait = _wait_flag(body, request)
    if errors:
        raise InvalidInput(errors)
    service = files_of(state)
    records = await service.link(agent.id, principal.workspace_id, file_ids)
    if wait and any(r.status == WAITING for r in records):
        await service.wait_for([r.id for r in records], state.settings.wait_limit_s)
        records = await service.store.agent_files(agent.id)
    return json_response(200, files_wire.agent_files(agent.id, records, counted=True))


@router.get("/agents/{agent_id:id}/files", response_model=AgentFileList, responses=schemas.native_errors(404))
async def list_agent_files(agent_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    agent = await state.store.agents.get(agent_id, principal.workspace_id)
    records = await files_of(state).store.agent_files(agent.id)
    return json_response(200, files_wire.agent_files(agent.id, records, counted=False))


@router.delete(
    "/agents/{agent_id:id}/files/{file_id:id}", response_model=AgentFileRemoved, responses=schemas.native_errors(404)
)
async def unlink_file(agent_id: int, file_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    """Unlink a file from the agent (the file stays)."""
    agent = await state.store.agents.get(agent_id, principal.workspace_id)
    record = await files_of(state).unlink(agent.id, principal.workspace_id, file_id)
    return json_response(200, {"id": agent.id, "file": files_wire.file(record), "removed": True})


# large uploads ---------------------------------------------------------------------------------------


def _text_field(body: dict[str, Any], name: str, errors: dict[str, list[str]], required: bool = True) -> str | None:
    value = body.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            errors[name] = [f"The {name} field is required."]
        return None
    if not isinstance(value, str) or len(value) > 1000:
        errors[name] = [f"The {name} field must be a string of at most 1000 characters."]
        return None
    return value.strip()


@router.post(
    "/v2/files/sign",
    response_model=SignedUpload,
    responses=schemas.native_errors(400),
    openapi_extra=schemas.documented_body(SignRequest),
)
async def sign_upload(request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    """Where to PUT a large file: ``upload_url`` (a presigned URL of the bucket on S3 storage,
    a short-lived URL of this server on local storage; the URL itself authorises the PUT),
    ``object_path`` for ``/v2/files/register``, and the headers to send."""
    body = await read_json_object(request)
    errors: dict[str, list[str]] = {}
    filename = _text_field(body, "filename", errors)
    content_type = _text_field(body, "content_type", errors, required=False) or "application/octet-stream"
    size = body.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        errors["size"] = ["The size field must be the file's size in bytes (a positive integer)."]
    if errors:
        raise InvalidInput(errors)
    assert filename is not None and isinstance(size, int)
    signed = await files_of(state).sign(
        workspace_id=principal.workspace_id,
        user_id=principal.user_id,
        filename=filename,
        content_type=content_type,
        size=size,
        base_url=public_base(request),
    )
    return json_response(200, signed)


@router.put("/v2/files/uploads/{token}", include_in_schema=False)
async def put_upload(token: str, request: Request, state: StateDep) -> Response:
    """The PUT of a signed upload on local storage. No Authorization: the token in the URL is
    the authorisation (the client sends only the headers ``/v2/files/sign`` listed). Not in the
    OpenAPI document, whose operations all take a bearer token; README and docs/files.md
    describe it."""
    await files_of(state).put_signed(token, request.stream())
    return Response(status_code=200)


@router.post(
    "/v2/files/register",
    response_model=FileObject,
    responses=schemas.native_errors(400),
    openapi_extra=schemas.documented_body(RegisterRequest),
)
async def register_upload(request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    """Turn the object PUT to a signed URL into a file (processed as ``process`` says)."""
    body = await read_json_object(request)
    errors: dict[str, list[str]] = {}
    object_path = _text_field(body, "object_path", errors)
    filename = _text_field(body, "filename", errors, required=False)
    content_type = _text_field(body, "content_type", errors, required=False)
    process = False
    if body.get("process") is not None:
        flag = parse_flag(body["process"])
        if flag is None:
            errors["process"] = ["The process field must be true or false."]
        process = bool(flag)
    if errors:
        raise InvalidInput(errors)
    assert object_path is not None
    record = await files_of(state).register(
        workspace_id=principal.workspace_id,
        user_id=principal.user_id,
        object_path=object_path,
        filename=filename,
        content_type=content_type,
        process=process,
    )
    return json_response(200, files_wire.file(record))
