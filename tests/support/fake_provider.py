"""A provider registered through the registry from the tests, exactly as a third party's would be:
``@register("fake")`` and a settings model of its own. Importing this module registers it.

Its "upstream" is a ``Script`` (what to answer, how to fail, what it was asked), found by the
name given in the model's ``script`` key, so that a test can steer a provider that the server
builds for itself. Like the openai provider it fails with UpstreamError / UpstreamTimeout."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from opentess.errors import UpstreamError, UpstreamTimeout
from opentess.providers import ChatRequest, Completion, Provider, ProviderSettings, register
from opentess.settings import ModelConfig, Settings

FAKE_PROVIDER = "fake"


class Script:
    """What the fake model does (``mode``: ok | error500 | refused | hang | slow) and what it saw.

    ``slow`` sends the first chunk, then waits until the stream is closed or cancelled (the
    ``hang`` of an upstream that will not end). Events are threading.Events: the server may run
    the provider in another thread's loop."""

    def __init__(self, chunks: tuple[str, ...] = ("Hello", " from", " the", " fake", "."), mode: str = "ok") -> None:
        self.chunks = list(chunks)
        self.mode = mode
        self.requests: list[ChatRequest] = []
        self.started = threading.Event()
        self.stopped = threading.Event()  # a stream was closed before its end
        self.cancelled = threading.Event()
        self.pools_open = 0


SCRIPTS: dict[str, Script] = {}


def script(name: str, **kwargs: object) -> Script:
    """A fresh script, found by models whose ``script`` key is ``name``."""
    made = SCRIPTS[name] = Script(**kwargs)  # type: ignore[arg-type]
    return made


class FakeSettings(ProviderSettings):
    script: str


@register(FAKE_PROVIDER)
class FakeProvider(Provider):
    settings_model = FakeSettings

    def __init__(self, name: str, config: ModelConfig, settings: Settings) -> None:
        super().__init__(name, config, settings)
        self.script = SCRIPTS[config.options_as(FakeSettings).script]
        self._pool_open = False

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Completion]:
        request = self.with_defaults(request)
        script = self.script
        if not self._pool_open:  # opened lazily, released by aclose, as a real pool is
            self._pool_open = True
            script.pools_open += 1
        script.requests.append(request)
        script.started.set()
        if script.mode == "error500":
            raise UpstreamError(f"model {self.name}: the upstream answered HTTP 500")
        if script.mode == "refused":
            raise UpstreamError(f"model {self.name}: cannot reach the upstream")
        if script.mode == "hang":
            await asyncio.sleep(self.settings.upstream_read_timeout_s)
            raise UpstreamTimeout(f"model {self.name}: the upstream did not answer in time")
        limit = request.sampling.max_tokens
        sent = 0
        finished = False
        try:
            for chunk in script.chunks:
                if limit is not None and sent >= limit:
                    break
                yield chunk
                sent += 1
                if script.mode == "slow":
                    await asyncio.Event().wait()
            finished = True
            finish = "length" if limit is not None and sent < len(script.chunks) else "stop"
            yield Completion(len(request.messages), sent, finish)
        except asyncio.CancelledError:
            script.cancelled.set()
            raise
        finally:
            if not finished:
                script.stopped.set()

    async def aclose(self) -> None:
        if self._pool_open:
            self._pool_open = False
            self.script.pools_open -= 1
