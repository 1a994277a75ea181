"""The provider contract: every implementation of the seam behaves the same for the service.

Parametrised over the openai provider on each transport (the fast client; httpx, chosen with
``transport = "httpx"``), a provider registered from the tests through the registry
(tests/support/fake_provider.py), and the local provider on the real SmolLM2 (marked ``model``;
bounded with max_tokens). Each provider is built the way the server builds it: settings loaded
from a model table, then ``ModelRegistry.get``. Cases a provider has no upstream for are skipped.

Also: the httpx transport goes through a proxy (a small forward proxy started here), honours
NO_PROXY, verifies with a configured CA bundle and presents a client certificate; connections
are capped per upstream on both transports."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from prometheus_client import REGISTRY

from opentess.errors import UpstreamError, UpstreamTimeout
from opentess.providers import ChatRequest, Completion, ModelRegistry, Provider, Sampling
from opentess.settings import Settings
from tests.support import fake_provider
from tests.support.fake_upstream import FakeUpstream

# the sampling parameters, as the wire formats name them
SAMPLING_FIELDS = ("temperature", "max_tokens", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty")

MODEL = "contract-model"
MESSAGES = [{"role": "user", "content": "Say hello."}]
PATIENCE_S = 10.0
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


# the providers under test ------------------------------------------------------------------


class Harness(ABC):
    """One provider kind, its upstream, and what can be seen of that upstream."""

    kind = ""
    has_upstream = True

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    @abstractmethod
    def table(self) -> dict[str, Any]:
        """The model's table, as a configuration file would give it."""

    def settings(self, read_timeout: float = 5.0, **keys: Any) -> Settings:
        return Settings(
            data_dir=self.tmp_path,
            models={MODEL: {**self.table(), **keys}},
            upstream_connect_timeout_s=5.0,
            upstream_read_timeout_s=read_timeout,
        )

    def fault(self, kind: str) -> dict[str, Any]:
        """Makes the upstream fail as ``kind`` says; returns table keys the fault needs."""
        raise NotImplementedError

    def received(self) -> list[dict[str, Any]] | None:
        """The sampling parameters each request carried upstream (None: cannot be seen)."""
        return None

    @abstractmethod
    async def stopped(self, provider: Provider) -> bool:
        """Whether the upstream stopped generating after a stream was closed early."""

    @abstractmethod
    def held(self, provider: Provider) -> int:
        """What the provider holds open (sockets, pools, threads)."""


class OpenAIHarness(Harness):
    def __init__(self, tmp_path: Path, upstream: FakeUpstream, transport: str) -> None:
        super().__init__(tmp_path)
        self.upstream = upstream
        self.transport = transport
        self.kind = f"openai-{transport}"

    def table(self) -> dict[str, Any]:
        return {
            "provider": "openai",
            "base_url": f"{self.upstream.url}/v1",
            "api_key": "sk-test",
            "transport": self.transport,
        }

    def fault(self, kind: str) -> dict[str, Any]:
        if kind == "refused":
            return {"base_url": f"http://127.0.0.1:{closed_port()}/v1"}
        self.upstream.mode = {"http500": "error500", "silence": "hang"}[kind]
        return {}

    def received(self) -> list[dict[str, Any]]:
        return [{k: r["body"][k] for k in SAMPLING_FIELDS if k in r["body"]} for r in self.upstream.requests]

    async def stopped(self, provider: Provider) -> bool:
        return await asyncio.to_thread(self.upstream.disconnected.wait, PATIENCE_S)

    def held(self, provider: Provider) -> int:
        return established_to(port_of(self.upstream.url))


class FakeHarness(Harness):
    kind = "fake"

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.script = fake_provider.script("contract", chunks=("Hello", " from", " the", " fake", ".") * 40)

    def table(self) -> dict[str, Any]:
        return {"provider": fake_provider.FAKE_PROVIDER, "script": "contract"}

    def fault(self, kind: str) -> dict[str, Any]:
        self.script.mode = {"http500": "error500", "refused": "refused", "silence": "hang"}[kind]
        return {}

    def received(self) -> list[dict[str, Any]]:
        return [r.sampling.given() for r in self.script.requests]

    async def stopped(self, provider: Provider) -> bool:
        return self.script.stopped.is_set()

    def held(self, provider: Provider) -> int:
        return self.script.pools_open


class LocalHarness(Harness):
    kind = "local"
    has_upstream = False

    def table(self) -> dict[str, Any]:
        return {"provider": "local", "context_length": 1024}

    async def stopped(self, provider: Provider) -> bool:
        # the model's thread runs one job at a time: once a no-op has run there, the closed
        # stream's generation has returned; it stopped early if it made fewer tokens than allowed
        executor = provider._executor  # type: ignore[attr-defined]
        await asyncio.get_running_loop().run_in_executor(executor, lambda: None)
        return local_tokens() < LONG_ANSWER

    def held(self, provider: Provider) -> int:
        return sum(t.name.startswith(f"llama-{MODEL}") for t in threading.enumerate())


LONG_ANSWER = 300


def local_tokens() -> float:
    return REGISTRY.get_sample_value("opentess_local_generated_tokens_total", {"model": MODEL}) or 0.0


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    """An upstream of this module's own: its sockets are counted, so no other test's pool may use it."""
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture(params=["openai-fast", "openai-httpx", "fake", pytest.param("local", marks=pytest.mark.model)])
def harness(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    for name in PROXY_VARIABLES:  # a developer's proxy must not decide which transport runs
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    if request.param == "fake":
        return FakeHarness(tmp_path)
    if request.param == "local":
        return LocalHarness(tmp_path)
    server: FakeUpstream = request.getfixturevalue("upstream")
    server.reset()
    return OpenAIHarness(tmp_path, server, request.param.removeprefix("openai-"))


def with_provider(settings: Settings, body: Callable[[Provider], Awaitable[None]]) -> None:
    """Runs ``body`` with the model's provider as the server would make it, then closes them."""

    async def main() -> None:
        registry = ModelRegistry(settings)
        try:
            await body(registry.get(MODEL))
        finally:
            await registry.aclose()

    asyncio.run(main())


async def items(stream: AsyncIterator[str | Completion]) -> list[str | Completion]:
    return [item async for item in stream]


def greedy(max_tokens: int = 8) -> Sampling:
    return Sampling(temperature=0.0, max_tokens=max_tokens, seed=1)


# the contract ------------------------------------------------------------------------------


def test_stream_yields_text_deltas_then_exactly_one_completion(harness: Harness) -> None:
    async def body(provider: Provider) -> None:
        got = await items(provider.stream(ChatRequest(MESSAGES, greedy())))
        deltas, final = got[:-1], got[-1]
        assert deltas and all(isinstance(d, str) and d for d in deltas)
        assert isinstance(final, Completion) and final.finish_reason in ("stop", "length")
        assert final.prompt_tokens > 0 and final.completion_tokens > 0

    with_provider(harness.settings(), body)


def test_complete_gives_the_text_the_stream_gives(harness: Harness) -> None:
    async def body(provider: Provider) -> None:
        streamed = await items(provider.stream(ChatRequest(MESSAGES, greedy())))
        text, final = await provider.complete(ChatRequest(MESSAGES, greedy()))
        assert text == "".join(i for i in streamed if isinstance(i, str))
        assert final.finish_reason == streamed[-1].finish_reason  # type: ignore[union-attr]

    with_provider(harness.settings(), body)


def test_sampling_parameters_reach_the_upstream(harness: Harness) -> None:
    sampling = Sampling(
        temperature=0.0, max_tokens=3, top_p=0.5, stop=("\n\n\n",), seed=7, presence_penalty=0.1, frequency_penalty=0.2
    )

    async def body(provider: Provider) -> None:
        await items(provider.stream(ChatRequest(MESSAGES, sampling)))
        _, final = await provider.complete(ChatRequest(MESSAGES, sampling))
        received = harness.received()
        if received is None:  # no upstream to look at: what max_tokens does is seen in the answer
            assert final.completion_tokens <= 3
        else:
            assert received == [sampling.given(), sampling.given()]

    with_provider(harness.settings(), body)


def test_the_models_max_tokens_applies_when_the_caller_sends_none(harness: Harness) -> None:
    """issue #13: a default answer length per model; a caller's own max_tokens wins."""

    async def body(provider: Provider) -> None:
        _, final = await provider.complete(ChatRequest(MESSAGES, Sampling(temperature=0.0)))
        await items(provider.stream(ChatRequest(MESSAGES, Sampling(temperature=0.0, max_tokens=2))))
        received = harness.received()
        if received is None:
            assert final.completion_tokens <= 4
        else:
            assert [r.get("max_tokens") for r in received] == [4, 2]

    with_provider(harness.settings(max_tokens=4), body)


def test_closing_a_stream_early_stops_the_upstream(harness: Harness) -> None:
    if isinstance(harness, OpenAIHarness):
        harness.upstream.chunks = ["tick "] * 200
        harness.upstream.delay = 0.02

    async def body(provider: Provider) -> None:
        request = ChatRequest(
            [{"role": "user", "content": "Count from 1 to 1000, one number a line."}],
            Sampling(temperature=0.0, max_tokens=LONG_ANSWER),
        )
        stream = provider.stream(request)
        first = await anext(stream)
        assert isinstance(first, str)
        await stream.aclose()  # type: ignore[attr-defined]
        assert await harness.stopped(provider)

    with_provider(harness.settings(), body)


@pytest.mark.parametrize("fault", ["http500", "refused", "silence"])
@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "complete"])
def test_upstream_failures_map_to_the_same_errors(
    harness: Harness, fault: str, streaming: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """HTTP 500 and a refused connection are 502s, silence past the read timeout a 504; the
    caller's message names the model and the status, never the upstream's address or words."""
    if not harness.has_upstream:
        pytest.skip("this provider has no upstream")
    keys = harness.fault(fault)
    expected, words = {
        "http500": (UpstreamError, "the upstream answered HTTP 500"),
        "refused": (UpstreamError, "cannot reach the upstream"),
        "silence": (UpstreamTimeout, "the upstream did not answer in time"),
    }[fault]

    async def body(provider: Provider) -> None:
        request = ChatRequest(MESSAGES, greedy())
        call = items(provider.stream(request)) if streaming else provider.complete(request)
        with pytest.raises(UpstreamError) as raised:
            await call
        assert type(raised.value) is expected
        message = str(raised.value)
        assert message == f"model {MODEL}: {words}"
        assert "exploded" not in message and "127.0.0.1" not in message

    with caplog.at_level(logging.WARNING, logger="opentess.providers.openai"):
        with_provider(harness.settings(read_timeout=0.3, **keys), body)
    if fault == "http500" and isinstance(harness, OpenAIHarness):
        assert any(
            "upstream exploded" in r.getMessage() and harness.upstream.url in r.getMessage() for r in caplog.records
        )


def test_aclose_releases_what_the_provider_holds(harness: Harness) -> None:
    registry = ModelRegistry(harness.settings())

    async def main() -> None:
        provider = registry.get(MODEL)
        await provider.complete(ChatRequest(MESSAGES, greedy()))
        assert harness.held(provider) >= 1  # a kept-alive connection, a pool, a model thread
        await registry.aclose()
        await until(lambda: harness.held(provider) == 0, "the provider released everything")

    asyncio.run(main())


# connections per upstream ------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["fast", "httpx"])
def test_connections_are_capped_per_upstream(upstream: FakeUpstream, tmp_path: Path, transport: str) -> None:
    """With max_connections = 2, a third stream waits for a connection, and gets one when a
    stream is closed."""
    upstream.reset()
    upstream.mode = "hang_mid"  # one chunk, then nothing: each stream keeps its connection
    harness = OpenAIHarness(tmp_path, upstream, transport)

    async def body(provider: Provider) -> None:
        first = provider.stream(ChatRequest(MESSAGES))
        second = provider.stream(ChatRequest(MESSAGES))
        assert isinstance(await anext(first), str) and isinstance(await anext(second), str)
        third = provider.stream(ChatRequest(MESSAGES))
        waiting = asyncio.ensure_future(anext(third))
        await asyncio.sleep(0.2)  # time enough for a third connection, were it allowed
        assert not waiting.done() and len(upstream.requests) == 2
        assert established_to(port_of(upstream.url)) == 2
        await first.aclose()  # type: ignore[attr-defined]
        assert isinstance(await asyncio.wait_for(waiting, PATIENCE_S), str)
        assert len(upstream.requests) == 3
        await second.aclose()  # type: ignore[attr-defined]
        await third.aclose()  # type: ignore[attr-defined]

    with_provider(harness.settings(max_connections=2), body)


# how the transport is chosen, proxies, TLS ---------------------------------------------------


class ForwardProxy:
    """A plain-HTTP forward proxy: takes a request in absolute form, records its request line,
    forwards it to the origin in origin form and pipes both ways until either side closes."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ForwardProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, rest = head.split(b"\r\n", 1)
            method, target, version = line.decode("latin-1").split(" ")
            self.seen.append(line.decode("latin-1"))
            parts = urlsplit(target)
            up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port)
            up_writer.write(f"{method} {parts.path} {version}\r\n".encode() + rest)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def test_the_httpx_transport_goes_through_an_explicit_proxy(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.reset()

    async def main() -> None:
        async with ForwardProxy() as proxy:
            settings = OpenAIHarness(tmp_path, upstream, "auto").settings(proxy=proxy.url)
            registry = ModelRegistry(settings)
            try:
                provider = registry.get(MODEL)
                assert provider.transport.kind == "httpx"  # type: ignore[attr-defined]
                text, _ = await provider.complete(ChatRequest(MESSAGES))
                assert text == "Hello from the upstream."
                streamed = await items(provider.stream(ChatRequest(MESSAGES)))
                assert "".join(i for i in streamed if isinstance(i, str)) == text
            finally:
                await registry.aclose()
        assert proxy.seen[0] == f"POST {upstream.url}/v1/chat/completions HTTP/1.1"
        assert len(upstream.requests) == 2

    asyncio.run(main())


def test_proxy_variables_choose_the_httpx_transport_unless_no_proxy_matches(
    upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.reset()
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)

    async def main() -> None:
        async with ForwardProxy() as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            for no_proxy, kind, through_proxy in [("", "httpx", 1), ("localhost,127.0.0.1", "fast", 0)]:
                monkeypatch.setenv("NO_PROXY", no_proxy)
                proxy.seen.clear()
                registry = ModelRegistry(OpenAIHarness(tmp_path, upstream, "auto").settings())
                try:
                    provider = registry.get(MODEL)
                    assert provider.transport.kind == kind  # type: ignore[attr-defined]
                    text, _ = await provider.complete(ChatRequest(MESSAGES))
                    assert text == "Hello from the upstream."
                finally:
                    await registry.aclose()
                assert len(proxy.seen) == through_proxy

    asyncio.run(main())


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_a_ca_bundle_and_a_client_certificate_take_the_httpx_transport(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upstream whose certificate only the configured CA bundle vouches for, and which wants a
    client certificate: answered with both, refused (502) without the client certificate."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    server_cert, server_key = _certificate(tmp_path, "server")
    client_cert, client_key = _certificate(tmp_path, "client")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(server_cert, server_key)
    tls.verify_mode = ssl.CERT_REQUIRED
    tls.load_verify_locations(client_cert)
    answer = orjson.dumps(
        {"choices": [{"message": {"content": "over TLS"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1}}
    )

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(answer)
            )
            writer.write(answer)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
        base = f"https://localhost:{server.sockets[0].getsockname()[1]}/v1"
        table = {"provider": "openai", "base_url": base, "ca_bundle": str(server_cert)}
        try:
            with_cert = Settings(
                data_dir=tmp_path,
                models={MODEL: {**table, "client_cert": str(client_cert), "client_key": str(client_key)}},
            )
            registry = ModelRegistry(with_cert)
            try:
                provider = registry.get(MODEL)
                assert provider.transport.kind == "httpx"  # type: ignore[attr-defined]
                assert (await provider.complete(ChatRequest(MESSAGES)))[0] == "over TLS"
            finally:
                await registry.aclose()
            registry = ModelRegistry(Settings(data_dir=tmp_path, models={MODEL: table}))
            try:
                with pytest.raises(UpstreamError):
                    await registry.get(MODEL).complete(ChatRequest(MESSAGES))
            finally:
                await registry.aclose()
        finally:
            server.close()

    asyncio.run(main())


def test_the_default_transport_is_the_fast_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    settings = Settings(data_dir=tmp_path, models={MODEL: {"provider": "openai", "base_url": "https://api.test/v1"}})
    assert ModelRegistry(settings).get(MODEL).transport.kind == "fast"  # type: ignore[attr-defined]


# helpers -----------------------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_of(url: str) -> int:
    return urlsplit(url).port or 80


def established_to(port: int) -> int:
    """Open TCP connections to ``port`` on this machine, as the kernel lists them."""
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("counts sockets through /proc (Linux)")
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:  # 01: ESTABLISHED
                count += 1
    return count


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Waits for ``predicate`` (never asserting how long it took); fails if it never holds."""
    for _ in range(int(PATIENCE_S / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")
