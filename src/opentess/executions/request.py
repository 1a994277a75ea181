"""What a caller asks of an agent, once its wire format is parsed: the one input type of the
execution service, shared by the OpenAI-compatible route and the native ``/execute`` route."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentess.providers import Sampling


@dataclass(slots=True)
class ExecutionRequest:
    """A parsed call. Messages are already in neutral form (roles normalised, content as text);
    ``temperature``, ``model`` and ``tools`` are raw, because only the agent's questions say what
    they may be; every other sampling parameter is parsed into ``sampling``."""

    messages: list[dict[str, str]]
    fields: dict[str, Any]  # the body: custom fields at its root, `answers` merged under them
    sampling: Sampling = field(default_factory=Sampling)
    temperature: Any = None
    model: Any = None
    tools: Any = None
    root_id: int | None = None
    # errors the route's parser found, reported together with the service's (native route: 422
    # naming every bad field at once)
    errors: dict[str, list[str]] = field(default_factory=dict)
    # an unknown model falls back to the agent's default (the OpenAI route, whose SDKs always
    # send some model name) instead of failing
    lenient_model: bool = False
