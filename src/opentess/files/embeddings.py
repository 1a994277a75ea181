"""Embeddings from an OpenAI-compatible ``/v1/embeddings`` upstream (a ``[models.NAME]`` table
with ``kind = "embedding"`` and ``provider = "openai"``), for hybrid retrieval. Vectors are kept
as unit-length float32, so a dot product is their cosine similarity."""

from __future__ import annotations

import httpx
import numpy as np

from opentess.errors import UpstreamError
from opentess.settings import ModelConfig, Settings

BATCH = 64  # inputs per request


class Embedder:
    def __init__(self, name: str, config: ModelConfig, settings: Settings) -> None:
        from opentess.providers.openai import OpenAISettings  # the provider module imports the settings

        options = config.options_as(OpenAISettings)
        self.name = name
        self.model = options.upstream_model or name
        self.url = options.base_url.rstrip("/") + "/embeddings"
        key = options.resolved_api_key()
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.upstream_read_timeout_s, connect=settings.upstream_connect_timeout_s),
            proxy=options.proxy,
            verify=options.ssl_context() or True,
        )

    async def embed(self, texts: list[str]) -> np.ndarray:
        """One unit vector per text (rows of a float32 matrix). UpstreamError when the upstream
        fails or answers something that is not embeddings."""
        rows: list[np.ndarray] = []
        for start in range(0, len(texts), BATCH):
            rows.append(await self._batch(texts[start : start + BATCH]))
        matrix = np.vstack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return (matrix / np.where(norms == 0, 1, norms)).astype(np.float32)

    async def _batch(self, texts: list[str]) -> np.ndarray:
        try:
            response = await self.client.post(
                self.url, json={"model": self.model, "input": texts}, headers=self.headers
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(f"embedding model {self.name!r}: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise UpstreamError(f"embedding model {self.name!r} answered HTTP {response.status_code}")
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            matrix = np.asarray([item["embedding"] for item in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamError(f"embedding model {self.name!r} answered something that is not embeddings") from exc
        if matrix.ndim != 2 or matrix.shape[0] != len(texts):
            raise UpstreamError(f"embedding model {self.name!r} answered {matrix.shape[0]} vectors for {len(texts)}")
        return matrix

    async def aclose(self) -> None:
        await self.client.aclose()


def embedder_for(settings: Settings) -> Embedder | None:
    """The embedding model files use: ``files_embedding_model``, else the only model of kind
    ``embedding``; None when there is none (retrieval is then full-text only)."""
    name = settings.files_embedding_model
    if name is None:
        candidates = [n for n, c in settings.models.items() if c.kind == "embedding"]
        if not candidates:
            return None
        name = sorted(candidates)[0]
    config = settings.models[name]
    if config.provider != "openai":
        raise ValueError(f"embedding model {name!r}: only provider 'openai' (an OpenAI-compatible API) is supported")
    return Embedder(name, config, settings)
