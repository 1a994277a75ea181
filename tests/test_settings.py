"""Settings: environment over the TOML file over defaults; models declared by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from opentess.settings import BUILTIN_MODEL, ModelConfig, load_settings

TOML = """
port = 9001
sse_keepalive_s = 5

[models.gpt-4o-mini]
provider = "openai"
base_url = "https://api.example.com/v1"
api_key_env = "TEST_UPSTREAM_KEY"
input_price = 0.15
output_price = 0.60

[models.tiny]
provider = "local"
path = "/models/tiny.gguf"
threads = 1
"""


def test_toml_models_and_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "opentess.toml"
    config.write_text(TOML)
    monkeypatch.setenv("OPENTESS_PORT", "9002")
    monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-from-env")
    settings = load_settings(config)
    assert settings.port == 9002  # the environment wins over the file
    assert settings.sse_keepalive_s == 5
    assert set(settings.models) == {"gpt-4o-mini", "tiny", BUILTIN_MODEL}
    gpt = settings.models["gpt-4o-mini"]
    assert gpt.resolved_api_key() == "sk-from-env"
    assert gpt.credits(1_000_000, 2_000_000) == pytest.approx(0.15 + 1.2)
    assert settings.models["tiny"].threads == 1
    assert load_settings(config, port=9003).port == 9003  # explicit options win over both


def test_config_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text("port = 9100\n")
    monkeypatch.setenv("OPENTESS_CONFIG", str(config))
    assert load_settings().port == 9100


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[models.x]\nprovider = "openai"\n', "base_url"),
        ('[models.x]\nprovider = "openai"\nbase_url = "localhost:8000/v1"\n', "http:// or https://"),
        ('[models.x]\nprovider = "magic"\n', "provider"),
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


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_weight_repacking_defaults_off_only_on_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    """llama.cpp's AMX kernels crash at the first decode (ggml-org/llama.cpp#20824): on a CPU with
    AMX the local provider loads without extra weight buffers unless the model's table says so."""
    from opentess.providers import local

    monkeypatch.setattr(local, "cpu_has_amx", lambda: True)
    assert local.repack_weights(ModelConfig(provider="local")) is False
    assert local.repack_weights(ModelConfig(provider="local", weight_repacking=True)) is True
    monkeypatch.setattr(local, "cpu_has_amx", lambda: False)
    assert local.repack_weights(ModelConfig(provider="local")) is True
    assert local.repack_weights(ModelConfig(provider="local", weight_repacking=False)) is False
