"""Receiving files: a ``multipart/form-data`` body parsed as it arrives (python-multipart's
streaming parser), the file part written to storage piece by piece — never the whole body in
memory or in a spool file — and the other parts (``process``, and whatever else a client adds,
such as ``purpose``) kept if small. Also the request-size rule of the upload routes, which the
request boundary applies (opentess.api.boundary)."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email.message import Message

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from opentess.errors import InvalidInput, PayloadTooLarge
from opentess.files.storage import ObjectWriter, Storage, new_key

MULTIPART_OVERHEAD = 1024 * 1024  # room for the form's other parts and boundaries
MAX_FIELD_BYTES = 64 * 1024
UPLOAD_ROUTE = re.compile(r"(/api)?/files")
SIGNED_PUT_ROUTE = re.compile(r"(/api)?/v2/files/uploads/[A-Za-z0-9_-]+")


def body_limit(max_file_bytes: int) -> Callable[[str, str], int | None]:
    """The body limit of the upload routes (``POST /files``, the signed ``PUT``), for the
    request boundary; None for every other route (the server-wide limit)."""
    multipart = max_file_bytes + MULTIPART_OVERHEAD

    def limit_for(method: str, path: str) -> int | None:
        if method == "POST" and UPLOAD_ROUTE.fullmatch(path):
            return multipart
        if method == "PUT" and SIGNED_PUT_ROUTE.fullmatch(path):
            return max_file_bytes
        return None

    return limit_for


def upload_token() -> tuple[str, str]:
    """A signed-upload URL's secret and the hash stored in its place."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class StoredFile:
    key: str
    size: int
    filename: str | None
    content_type: str | None


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    file: StoredFile | None = None


class _Part:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.name: str | None = None
        self.filename: str | None = None
        self.is_file = False
        self.content_type: str | None = None
        self.buffer = bytearray()


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _disposition(value: str) -> tuple[str | None, str | None, bool]:
    """(name, filename, has a filename at all) of a Content-Disposition value; ``filename*``
    (RFC 5987) is understood too."""
    message = Message()
    message["content-disposition"] = value
    name = message.get_param("name", header="content-disposition")
    filename = message.get_filename()
    has_file = filename is not None or "filename" in value.lower()
    return (str(name) if isinstance(name, str) else None), filename, has_file


async def receive_form(
    content_type: str | None,
    body: AsyncIterator[bytes],
    storage: Storage,
    max_file_bytes: int,
) -> Form:
    """Parse a ``multipart/form-data`` body, writing its one file part to storage under a new
    key. InvalidInput for a body that is not that (naming the field), PayloadTooLarge past
    ``max_file_bytes``; on any error nothing stays in storage."""
    kind, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidInput(
            {"file": ["Send the file as multipart/form-data, in a part named file (and optionally process)."]}
        )
    form = Form()
    events: list[tuple[str, bytes]] = []
    header_name = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        events.append(("begin", b""))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        events.append(("header", bytes(header_name) + b"\x00" + bytes(header_value)))
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        events.append(("headers", b""))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        events.append(("data", bytes(data[start:end])))

    def on_part_end() -> None:
        events.append(("end", b""))

    def on_end() -> None:
        events.append(("done", b""))

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
        max_header_count=16,
    )
    writer: ObjectWriter | None = None
    part: _Part | None = None
    finished = False
    try:
        async for piece in body:
            try:
                parser.write(piece)
            except MultipartParseError as exc:
                raise InvalidInput({"file": [f"The body is not valid multipart/form-data: {exc}"]}) from None
            for event, data in events:
                if event == "begin":
                    part = _Part()
                elif event == "header" and part is not None:
                    name, _, value = data.partition(b"\x00")
                    part.headers[_decode(name).strip().lower()] = _decode(value).strip()
                elif event == "headers" and part is not None:
                    part.name, part.filename, part.is_file = _disposition(part.headers.get("content-disposition", ""))
                    part.content_type = part.headers.get("content-type")
                    if part.name == "file":
                        if form.file is not None or writer is not None:
                            raise InvalidInput({"file": ["Send one file a request."]})
                        writer = storage.writer(new_key())
                elif event == "data" and part is not None:
                    if part.name == "file" and writer is not None:
                        if writer.size + len(data) > max_file_bytes:
                            raise PayloadTooLarge(
                                f"The file is larger than the limit of {max_file_bytes:,} bytes.", param="file"
                            )
                        await writer.write(data)
                    elif len(part.buffer) + len(data) <= MAX_FIELD_BYTES:
                        part.buffer.extend(data)
                    else:
                        raise InvalidInput({part.name or "body": ["This form field is too long."]})
                elif event == "end" and part is not None:
                    if part.name == "file" and writer is not None:
                        await writer.commit()
                        form.file = StoredFile(writer.key, writer.size, part.filename, part.content_type)
                        writer = None
                    elif part.name is not None and part.name not in form.fields:
                        form.fields[part.name] = _decode(bytes(part.buffer))
                    part = None
                elif event == "done":
                    finished = True
            events.clear()
        if not finished:
            raise InvalidInput({"file": ["The multipart/form-data body ended before its closing boundary."]})
        if form.file is None:
            raise InvalidInput({"file": ["The file field is required."]})
    except BaseException:
        if writer is not None:
            await writer.abort()
        if form.file is not None:
            await storage.delete(form.file.key)
        raise
    return form
