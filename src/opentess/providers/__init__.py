"""Model providers: one small streaming interface, a registry of implementations by name."""

from opentess.providers.base import ChatRequest, Completion, ModelRegistry, Provider, Sampling, register

__all__ = ["ChatRequest", "Completion", "ModelRegistry", "Provider", "Sampling", "register"]
