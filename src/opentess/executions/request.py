"""What a caller asks of an agent, once its wire format is parsed: the one input type of the
execution service, shared by the OpenAI-compatible route and the native ``/execute`` route."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentess.ids import parse_id
from opentess.providers import Sampling


def id_list(value: Any, name: str, errors: dict[str, list[str]]) -> list[int]:
    """A list of ids sent as JSON numbers or digit strings (one id alone is accepted too);
    ``None`` and ``""`` are no ids. A problem is added to ``errors`` under ``name``."""
    if value is None or value == "" or value == []:
        return []
    items = value if isinstance(value, list) else [value]
    ids = [parse_id(item) for item in items]
    if any(i is None for i in ids) or len(items) > MAX_IDS:
        errors[name] = [f"The {name} field must be a list of at most {MAX_IDS} ids (positive integers)."]
        return []
    return list(dict.fromkeys(i for i in ids if i is not None))


MAX_IDS = 100


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
    # files for this call (and the conversation's later turns), beside the agent's own knowledge
    file_ids: list[int] = field(default_factory=list)
    # memory collections whose memories enter the context
    memory_collections: list[int] = field(default_factory=list)
    # errors the route's parser found, reported together with the service's (native route: 422
    # naming every bad field at once)
    errors: dict[str, list[str]] = field(default_factory=dict)
    # an unknown model falls back to the agent's default (the OpenAI route, whose SDKs always
    # send some model name) instead of failing
    lenient_model: bool = False
