"""Model providers: one small streaming interface, a registry of implementations by name."""

from opentess.providers.base import (
    ChatRequest,
    Completion,
    ModelRegistry,
    Provider,
    Sampling,
    ToolCall,
    ToolSpec,
    register,
)
from opentess.settings import ProviderSettings

__all__ = [
    "ChatRequest",
    "Completion",
    "ModelRegistry",
    "Provider",
    "ProviderSettings",
    "Sampling",
    "ToolCall",
    "ToolSpec",
    "register",
]
