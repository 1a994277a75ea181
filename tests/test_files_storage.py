"""One contract for both storage backends: the data directory and S3-compatible object storage
(against moto's real S3 server, not a mock of the client). Objects appear whole or not at all,
stream in pieces both ways, and keys are only ever opentess's own."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from opentess.db.engine import make_engine
from opentess.files.service import FilesService
from opentess.files.storage import LocalStorage, S3Storage, Storage, new_key
from opentess.files.tables import FileUpload
from tests.support.fake_upstream import FakeUpstream
from tests.support.files_env import files_env, wait_processed
from tests.support.files_s3 import S3Server, s3_server

PIECE = 256 * 1024


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "files")
    server: S3Server = request.getfixturevalue("s3")
    return S3Storage(server.bucket, endpoint_url=server.endpoint, region="us-east-1", prefix="contract")


async def _pieces(data: bytes, size: int = PIECE) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


async def _read(storage: Storage, key: str) -> bytes:
    return b"".join([piece async for piece in storage.read(key)])


def test_an_object_streams_in_and_out_whole(storage: Storage, tmp_path: Path) -> None:
    """Larger than one S3 part, written and read in pieces; size, download, delete."""
    data = os.urandom(12 * 1024 * 1024 + 123)

    async def go() -> None:
        key = new_key()
        assert await storage.put(key, _pieces(data)) == len(data)
        assert await storage.size(key) == len(data)
        assert hashlib.sha256(await _read(storage, key)).digest() == hashlib.sha256(data).digest()
        copy = tmp_path / "copy.bin"
        assert await storage.download(key, copy) == len(data)
        assert copy.read_bytes() == data
        await storage.delete(key)
        await storage.delete(key)  # deleting what is gone is not an error
        with pytest.raises(FileNotFoundError):
            await storage.size(key)
        with pytest.raises(FileNotFoundError):
            await _read(storage, key)

    asyncio.run(go())


def test_an_aborted_write_leaves_nothing(storage: Storage) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield os.urandom(6 * 1024 * 1024)
        raise ConnectionResetError("the client went away")

    async def go() -> None:
        key = new_key()
        with pytest.raises(ConnectionResetError):
            await storage.put(key, failing())
        with pytest.raises(FileNotFoundError):
            await storage.size(key)
        writer = storage.writer(new_key())
        await writer.write(b"partial")
        await writer.abort()
        with pytest.raises(FileNotFoundError):
            await storage.size(writer.key)

    asyncio.run(go())


def test_an_empty_object_and_small_pieces(storage: Storage) -> None:
    async def go() -> None:
        empty = new_key("uploads")
        assert await storage.put(empty, _pieces(b"")) == 0
        assert await storage.size(empty) == 0
        small = new_key()
        assert await storage.put(small, _pieces(b"abcdefghij", size=3)) == 10
        assert await _read(storage, small) == b"abcdefghij"

    asyncio.run(go())


def test_keys_are_only_opentess_own(storage: Storage) -> None:
    for key in ("../../etc/passwd", "files/../x", "files/ABC", "other/0123456789abcdef0123456789abcdef", ""):
        with pytest.raises(ValueError, match="not a storage key"):
            storage.writer(key)


def test_a_presigned_put_is_authorised_by_its_url(storage: Storage) -> None:
    """S3 signs a URL that a client PUTs to without credentials; local storage signs none (the
    server signs its own upload URL instead: tests/test_files_api.py)."""

    async def go() -> str | None:
        return await storage.presign_put(new_key("uploads"), 300)

    url = asyncio.run(go())
    if isinstance(storage, LocalStorage):
        assert url is None
        return
    assert url is not None
    key = url.split("?")[0].rsplit("/contract/", 1)[1]
    response = httpx.put(url, content=b"signed bytes", headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text

    async def read() -> bytes:
        return await _read(storage, key)

    assert asyncio.run(read()) == b"signed bytes"


def test_a_server_on_s3_signs_uploads_with_the_bucket_itself(
    s3: S3Server, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """With S3 storage, /v2/files/sign answers a presigned PUT of the bucket: the bytes go
    straight there (no token), register makes the object a file, and it is processed from
    there; an upload never registered is removed by the sweep once it has expired."""
    with files_env(tmp_path / "data", upstream.url, None, **s3.settings()) as env, env.client() as http:
        content = b"Stored straight in the bucket. The locker code is 4412.\n"
        signed = http.post("/v2/files/sign", json={"filename": "direct.txt", "content_type": "text/plain",
                                                   "size": len(content)}).json()  # fmt: skip
        assert signed["upload_url"].startswith(s3.endpoint + "/" + s3.bucket + "/uploads/")
        assert httpx.put(signed["upload_url"], content=content, headers=signed["required_headers"]).status_code == 200
        registered = http.post("/v2/files/register", json={"object_path": signed["object_path"], "process": "true"})
        assert registered.status_code == 200, registered.text
        done = wait_processed(http, registered.json()["id"])
        assert done["status"] == "completed" and done["bytes"] == len(content) and done["filename"] == "direct.txt"
        assert signed["object_path"] in s3.object_keys()

        abandoned = http.post("/v2/files/sign", json={"filename": "never.txt", "size": 5}).json()
        httpx.put(abandoned["upload_url"], content=b"12345", headers=abandoned["required_headers"])
        assert abandoned["object_path"] in s3.object_keys()

        async def sweep() -> int:
            engine = make_engine(env.world.settings)
            files = FilesService(env.world.settings, engine)
            try:
                async with engine.begin() as conn:  # as if its hour had passed
                    await conn.execute(update(FileUpload).values(expires_at=datetime(2000, 1, 1)))
                return await files.sweep()
            finally:
                await files.aclose()
                await engine.dispose()

        assert asyncio.run(sweep()) == 1
        assert abandoned["object_path"] not in s3.object_keys() and signed["object_path"] in s3.object_keys()
        late = http.post("/v2/files/register", json={"object_path": abandoned["object_path"]})
        assert late.status_code == 422
