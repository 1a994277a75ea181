"""The provider seam. A provider turns a chat request into a stream of text deltas ended by one
``Completion`` (usage and finish reason). Built-in providers register exactly as a third-party
one would: ``@register("name")`` on a class built from ``(model name, ModelConfig, Settings)``,
whose ``settings_model`` (a ``ProviderSettings`` subclass) declares the keys its models' tables
may hold besides the common ones; ``config.options_as(ThatModel)`` gives them back, typed.

A provider owns what it opens (connection pools, loaded weights): it opens them lazily, in the
running event loop, and releases them in ``aclose``, which ``ModelRegistry.aclose`` calls when
the app stops."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar

from opentess.errors import BadRequest, UpstreamError
from opentess.settings import ModelConfig, ProviderSettings, Settings


@dataclass(frozen=True, slots=True)
class Sampling:
    """How to sample an answer: the one declaration of these parameters, from the wire formats
    (which parse into it) to the providers (which send or apply it) and the stored execution."""

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def given(self) -> dict[str, Any]:
        """The parameters that are set, by name (the stop sequences as a list). Spelled out
        field by field: it runs twice per execution on the hot path."""
        values: dict[str, Any] = {}
        if self.temperature is not None:
            values["temperature"] = self.temperature
        if self.max_tokens is not None:
            values["max_tokens"] = self.max_tokens
        if self.top_p is not None:
            values["top_p"] = self.top_p
        if self.stop:
            values["stop"] = list(self.stop)
        if self.seed is not None:
            values["seed"] = self.seed
        if self.presence_penalty is not None:
            values["presence_penalty"] = self.presence_penalty
        if self.frequency_penalty is not None:
            values["frequency_penalty"] = self.frequency_penalty
        return values


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call (OpenAI function calling): its name, what it does, and its
    parameters as JSON Schema."""

    name: str
    description: str
    parameters: dict[str, Any]

    def openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model asked for: ``arguments`` is the JSON text it wrote (it may not parse)."""

    id: str
    name: str
    arguments: str

    def openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(slots=True)
class ChatRequest:
    # messages are {"role", "content"}; in a tool loop an assistant message may carry
    # "tool_calls" and "tool" messages carry "tool_call_id" (OpenAI's shapes)
    messages: list[dict[str, Any]]
    sampling: Sampling = field(default_factory=Sampling)
    tools: tuple[ToolSpec, ...] = ()  # offered to the model (providers whose models support tools)
    tool_choice: str | dict[str, Any] | None = None  # "auto", "required", or one function


@dataclass(slots=True)
class Completion:
    """The end of a generation."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length" | "tool_calls"
    tool_calls: tuple[ToolCall, ...] = ()


class Provider(ABC):
    """Runs one configured model."""

    settings_model: ClassVar[type[ProviderSettings]] = ProviderSettings
    """The keys this provider's models take (none by default)."""

    def __init__(self, name: str, config: ModelConfig, settings: Settings) -> None:
        self.name = name
        self.config = config
        self.settings = settings

    def with_defaults(self, request: ChatRequest) -> ChatRequest:
        """The request with the model's default answer length (``max_tokens`` in its table) when
        the caller asked for none."""
        default = self.config.max_tokens
        if default is None or request.sampling.max_tokens is not None:
            return request
        return replace(request, sampling=replace(request.sampling, max_tokens=default))

    @abstractmethod
    def stream(self, request: ChatRequest) -> AsyncIterator[str | Completion]:
        """Yield text deltas as the model produces them, then exactly one Completion.

        Closing the iterator early (client gone, run cancelled) must stop the generation."""

    async def complete(self, request: ChatRequest) -> tuple[str, Completion]:
        """The whole answer at once; providers with a cheaper non-streaming path override it."""
        parts: list[str] = []
        final: Completion | None = None
        stream = self.stream(request)
        try:
            async for item in stream:
                if isinstance(item, str):
                    parts.append(item)
                else:
                    final = item
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        if final is None:
            raise UpstreamError(f"model {self.name} ended without finishing its answer")
        return "".join(parts), final

    async def aclose(self) -> None:
        """Release what the provider holds (connections, loaded weights)."""


_PROVIDERS: dict[str, type[Provider]] = {}
P = TypeVar("P", bound=Provider)


def register(kind: str) -> Callable[[type[P]], type[P]]:
    """Makes a provider class the one that models with ``provider = kind`` run on."""

    def decorate(cls: type[P]) -> type[P]:
        _PROVIDERS[kind] = cls
        return cls

    return decorate


def _load_builtins() -> None:
    # imported for their @register side effect, only when a registry is first needed
    from opentess.providers import local, openai  # noqa: F401


def settings_model_for(kind: str) -> type[ProviderSettings]:
    """The settings model of a registered provider; ValueError naming the registered ones else."""
    _load_builtins()
    cls = _PROVIDERS.get(kind)
    if cls is None:
        raise ValueError(f"provider {kind!r} is not registered (registered: {', '.join(sorted(_PROVIDERS))})")
    return cls.settings_model


class ModelRegistry:
    """Providers by model name, created on first use and closed together."""

    def __init__(self, settings: Settings) -> None:
        _load_builtins()
        self.settings = settings
        self._providers: dict[str, Provider] = {}
        self._lock = asyncio.Lock()

    def config(self, model: str) -> ModelConfig:
        cfg = self.settings.models.get(model)
        if cfg is None:
            raise BadRequest(f"model {model!r} is not configured on this server", param="model")
        return cfg

    def get(self, model: str) -> Provider:
        provider = self._providers.get(model)
        if provider is None:
            cfg = self.config(model)
            provider = _PROVIDERS[cfg.provider](model, cfg, self.settings)
            self._providers[model] = provider
        return provider

    def names(self) -> list[str]:
        return list(self.settings.models)

    async def aclose(self) -> None:
        providers, self._providers = list(self._providers.values()), {}
        for p in providers:
            await p.aclose()


def estimate_tokens(text: str) -> int:
    """A rough token count (4 characters a token) for upstreams that report no usage."""
    return (len(text) + 3) // 4


def messages_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(str(m.get("content") or "") for m in messages)
