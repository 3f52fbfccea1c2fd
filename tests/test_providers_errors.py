"""Error classification shared by the adapters, and the registry that builds them."""

from __future__ import annotations

import email.utils

import httpx
import pytest

from lemming.engine.providers.base import ProviderError
from lemming.engine.providers.errors import Redactor, kind_for_status, parse_retry_after, transport_error_kind
from lemming.engine.providers.registry import ProviderRegistry
from lemming.engine.resume import ModelSpec


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "tomorrow"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers, expected):
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date():
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(30)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=now) == 0.0


def test_parse_retry_after_reads_httpx_headers_case_insensitively():
    assert parse_retry_after(httpx.Headers({"Retry-After": "3"})) == 3.0


@pytest.mark.parametrize(
    "status, kind",
    [(429, "rate_limit"), (401, "auth"), (403, "auth"), (408, "timeout"), (409, "server"),
     (500, "server"), (502, "server"), (529, "server"), (400, "bad_request"), (404, "bad_request"), (422, "bad_request")],
)
def test_kind_for_status(status, kind):
    assert kind_for_status(status) == kind


def test_retryable_kinds():
    assert ProviderError("rate_limit", "x").retryable
    assert ProviderError("stream_cut", "x").retryable
    assert not ProviderError("auth", "x").retryable
    assert not ProviderError("bad_request", "x").retryable


def test_redactor_removes_the_key_and_bounds_the_message():
    r = Redactor("sk-abcdef123456")
    assert r("bad key sk-abcdef123456 given") == "bad key [redacted] given"
    assert len(r("x" * 5000)) == 300
    assert Redactor("x")("x marks the spot") == "x marks the spot"  # dummies are not secrets


def test_transport_errors_by_class():
    req = httpx.Request("GET", "http://127.0.0.1")
    assert transport_error_kind(httpx.ConnectError("no", request=req), started=False) == "connection"
    assert transport_error_kind(httpx.ReadTimeout("slow", request=req), started=True) == "timeout"
    assert transport_error_kind(httpx.RemoteProtocolError("cut", request=req), started=True) == "stream_cut"
    assert transport_error_kind(httpx.RemoteProtocolError("cut", request=req), started=False) == "connection"
    assert transport_error_kind(ValueError("x"), started=True) is None


# --- registry --------------------------------------------------------------------------


async def test_registry_reads_keys_from_env_only_and_caches_adapters():
    models = {
        "a": ModelSpec(provider="openai", model_name="gpt-4.1-mini"),
        "b": ModelSpec(provider="openai", model_name="gpt-4.1"),
        "local": ModelSpec(provider="openai", model_name="qwen", base_url="http://127.0.0.1:8000/v1"),
        "claude": ModelSpec(provider="anthropic", model_name="claude-sonnet-4-5"),
        "llama": ModelSpec(provider="ollama", model_name="llama3.2"),
    }
    reg = ProviderRegistry(models, env={"OPENAI_API_KEY": "sk-live-0123456789"})
    try:
        pa, _ = reg.resolve("a")
        pb, _ = reg.resolve("b")
        assert pa is pb  # one client per (provider, base_url, key variable)
        local, _ = reg.resolve("local")  # local OpenAI-compatible servers need no key
        assert local is not pa
        with pytest.raises(ProviderError) as err:
            reg.resolve("claude")
        assert err.value.kind == "config" and "ANTHROPIC_API_KEY is not set" in str(err.value)
        llama, _ = reg.resolve("llama")  # Ollama needs no key
        assert "sk-live" not in repr(pa) and "sk-live" not in repr(local)
        with pytest.raises(ProviderError) as err:
            reg.resolve("missing")
        assert err.value.kind == "config"
    finally:
        await reg.aclose()


def test_lemming_model_entry_loads_as_is():
    spec = ModelSpec.model_validate(
        {"provider": "openai", "model_name": "qwen2.5", "provider_config": {"base_url": "http://localhost:11434/v1"}}
    )
    assert spec.base_url == "http://localhost:11434/v1"
    reg = ProviderRegistry({"q": spec}, env={})
    provider, _ = reg.resolve("q")
    assert provider.base_url == "http://localhost:11434/v1"


async def test_documented_example_models_load_and_resolve():
    from pathlib import Path

    from lemming.engine.org import load_models

    root = Path(__file__).resolve().parents[1] / "docs"
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(root / "models.example.json", Path(tmp) / "models.json")
        problems: list[str] = []
        models = load_models(Path(tmp), problems)
    assert problems == []
    assert {"gpt-4.1-mini", "claude-sonnet", "llama-ollama", "qwen-ollama-v1", "qwen-vllm", "llamacpp", "lmstudio"} <= set(models)
    reg = ProviderRegistry(models, env={"OPENAI_API_KEY": "sk-a-123456", "ANTHROPIC_API_KEY": "sk-b-123456"})
    try:
        for key in models:
            provider, spec = reg.resolve(key)  # every entry builds an adapter
            assert provider.name == spec.provider
    finally:
        await reg.aclose()
    assert models["gpt-4.1-mini-lemming"].base_url == "https://api.openai.com/v1"


@pytest.mark.parametrize(
    "provider, config, field",
    [
        ("openai", {"stream_parser": "fast"}, "stream_parser"),
        ("openai", {"include_usage": "yes"}, "include_usage"),
        ("openai", {"extra_body": [1]}, "extra_body"),
        ("openai", {"max_tokens_param": "tokens"}, "max_tokens_param"),
        ("anthropic", {"default_max_tokens": "lots"}, "default_max_tokens"),
        ("anthropic", {"default_max_tokens": True}, "default_max_tokens"),
        ("ollama", {"options": 3}, "options"),
        ("ollama", {"keep_alive": [1]}, "keep_alive"),
    ],
)
def test_bad_provider_config_is_a_config_error_naming_the_field(provider, config, field):
    spec = ModelSpec(provider=provider, model_name="m", base_url="http://127.0.0.1:9", provider_config=config)
    reg = ProviderRegistry({"k": spec}, env={"ANTHROPIC_API_KEY": "sk-x-123456"})
    with pytest.raises(ProviderError) as err:
        reg.resolve("k")
    assert err.value.kind == "config"
    assert f"{provider} provider_config.{field}: must be" in str(err.value)
    assert "\n" not in str(err.value)
