"""What each adapter puts on the wire, as the local servers recorded it."""

from __future__ import annotations

import pytest

from lemming.engine.providers.anthropic import _CREATE_TAKES_TEMPERATURE, AnthropicProvider
from lemming.engine.providers.base import ChatMessage, CompletionRequest, ProviderConfig, ProviderError, TextDelta, Usage
from lemming.engine.providers.ollama import OllamaProvider
from lemming.engine.providers.openai import OpenAIProvider
from tests.support.servers import AnthropicServer, Behaviour, OllamaServer, OpenAIServer

KEY = "sk-test-4f9c2a7b1e"


def request(**kw) -> CompletionRequest:
    base = dict(
        model="test-model",
        messages=[
            ChatMessage("system", "You are the planner."),
            ChatMessage("user", "Tick 1."),
            ChatMessage("user", "Inbox: empty."),
        ],
        temperature=0.4,
        max_tokens=256,
        timeout=5.0,
        seed=11,
    )
    base.update(kw)
    return CompletionRequest(**base)


async def collect(provider, req: CompletionRequest) -> tuple[str, Usage]:
    text, usages = [], []
    async for item in provider.stream(req):
        if isinstance(item, TextDelta):
            text.append(item.text)
        else:
            usages.append(item)
    assert len(usages) == 1, "exactly one Usage, after the text"
    return "".join(text), usages[0]


# --- OpenAI ----------------------------------------------------------------------------


async def test_openai_request_carries_sampling_usage_and_key():
    with OpenAIServer(api_key=KEY) as srv:
        p = OpenAIProvider(ProviderConfig("openai", srv.base_url, KEY))
        try:
            text, usage = await collect(p, request(model="gpt-test"))
        finally:
            await p.aclose()
    (r,) = srv.requests
    assert r.method == "POST" and r.path == "/v1/chat/completions"
    assert r.headers["authorization"] == f"Bearer {KEY}"
    assert r.headers["x-stainless-retry-count"] == "0"
    assert float(r.headers["x-stainless-read-timeout"]) == 5.0  # per-call timeout reached the SDK
    body = r.json
    assert body["model"] == "gpt-test"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.4
    assert body["max_tokens"] == 256  # local servers take max_tokens
    assert body["seed"] == 11
    assert [m["role"] for m in body["messages"]] == ["system", "user", "user"]
    assert (usage.input_tokens, usage.output_tokens) == r.usage


async def test_openai_local_server_without_key_gets_a_dummy_key():
    with OpenAIServer() as srv:
        p = OpenAIProvider(ProviderConfig("openai", srv.base_url, None))
        try:
            await collect(p, request())
        finally:
            await p.aclose()
    assert srv.requests[0].headers["authorization"] == "Bearer not-needed"


async def test_openai_options_max_completion_tokens_extra_body_and_no_usage_request():
    with OpenAIServer() as srv:
        p = OpenAIProvider(
            ProviderConfig(
                "openai",
                srv.base_url,
                None,
                {"max_tokens_param": "max_completion_tokens", "extra_body": {"top_k": 20}, "include_usage": False},
            )
        )
        try:
            _, usage = await collect(p, request(temperature=None, max_tokens=None))
            await collect(p, request())
        finally:
            await p.aclose()
    first, second = (r.json for r in srv.requests)
    assert "temperature" not in first and "max_tokens" not in first and "max_completion_tokens" not in first
    assert "stream_options" not in first
    assert usage.estimated  # the server was not asked for usage
    assert second["max_completion_tokens"] == 256 and "max_tokens" not in second
    assert second["top_k"] == 20


def test_openai_official_api_defaults_to_max_completion_tokens():
    p = OpenAIProvider(ProviderConfig("openai", None, KEY))
    assert "max_completion_tokens" in p._body(request())
    assert KEY not in repr(p)


async def test_openai_sdk_timeout_fires_on_its_own():
    """Without the retry loop's deadline, the per-call timeout given to the SDK still ends a hang."""
    with OpenAIServer() as srv:
        srv.script(Behaviour.hang(5))
        p = OpenAIProvider(ProviderConfig("openai", srv.base_url, None))
        try:
            with pytest.raises(ProviderError) as err:
                await collect(p, request(timeout=0.2))
        finally:
            await p.aclose()
    assert err.value.kind == "timeout"


# --- Anthropic ---------------------------------------------------------------------------


async def test_anthropic_system_goes_to_system_and_roles_alternate():
    with AnthropicServer(api_key=KEY) as srv:
        p = AnthropicProvider(ProviderConfig("anthropic", srv.base_url, KEY))
        try:
            text, usage = await collect(p, request(model="claude-test"))
        finally:
            await p.aclose()
    (r,) = srv.requests
    assert r.path == "/v1/messages"
    assert KEY in (r.headers.get("x-api-key"), r.headers.get("authorization", "").removeprefix("Bearer "))
    assert "anthropic-version" in r.headers
    assert r.headers["x-stainless-retry-count"] == "0"
    assert float(r.headers["x-stainless-read-timeout"]) == 5.0
    body = r.json
    assert body["system"] == "You are the planner."
    assert body["messages"] == [{"role": "user", "content": "Tick 1.\n\nInbox: empty."}]
    assert body["max_tokens"] == 256
    assert body["stream"] is True
    if _CREATE_TAKES_TEMPERATURE:
        assert body["temperature"] == 0.4
    else:
        assert "temperature" not in body  # this SDK line has no temperature argument
    assert (usage.input_tokens, usage.output_tokens) == r.usage and not usage.estimated


async def test_anthropic_max_tokens_default_temperature_clamp_and_leading_assistant():
    with AnthropicServer() as srv:
        p = AnthropicProvider(
            ProviderConfig("anthropic", srv.base_url, KEY, {"default_max_tokens": 999, "send_temperature": True})
        )
        try:
            await collect(
                p,
                request(
                    max_tokens=None,
                    temperature=1.7,
                    messages=[ChatMessage("assistant", "previously"), ChatMessage("user", "now")],
                ),
            )
        finally:
            await p.aclose()
    body = srv.requests[0].json
    assert body["max_tokens"] == 999
    assert body["temperature"] == 1.0
    assert "system" not in body
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]


async def test_anthropic_usage_counts_cache_reads_as_input():
    with AnthropicServer() as srv:
        p = AnthropicProvider(ProviderConfig("anthropic", srv.base_url, KEY))
        try:
            _, usage = await collect(p, request())
        finally:
            await p.aclose()
    # message_start said input_tokens (cache fields 0); message_delta the final output count.
    assert usage.input_tokens == srv.requests[0].usage[0]
    assert usage.output_tokens == len(srv.requests[0].deltas)


# --- Ollama ------------------------------------------------------------------------------


async def test_ollama_request_options_and_usage_from_the_done_chunk():
    with OllamaServer() as srv:
        p = OllamaProvider(ProviderConfig("ollama", srv.base_url, None, {"options": {"num_ctx": 8192}, "keep_alive": "5m"}))
        try:
            text, usage = await collect(p, request(model="llama3.2"))
        finally:
            await p.aclose()
    (r,) = srv.requests
    assert r.path == "/api/chat"
    assert "authorization" not in r.headers
    body = r.json
    assert body["model"] == "llama3.2"
    assert body["stream"] is True
    assert body["options"] == {"num_ctx": 8192, "temperature": 0.4, "num_predict": 256, "seed": 11}
    assert body["keep_alive"] == "5m"
    assert [m["role"] for m in body["messages"]] == ["system", "user", "user"]
    assert (usage.input_tokens, usage.output_tokens) == r.usage and not usage.estimated


async def test_ollama_key_is_sent_as_bearer_when_configured():
    with OllamaServer(api_key=KEY) as srv:
        p = OllamaProvider(ProviderConfig("ollama", srv.base_url, KEY))
        try:
            await collect(p, request())
        finally:
            await p.aclose()
    assert srv.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_ollama_timeout_reaches_the_sdk_client():
    with OllamaServer() as srv:
        srv.script(Behaviour.hang(5))
        p = OllamaProvider(ProviderConfig("ollama", srv.base_url, None))
        try:
            with pytest.raises(ProviderError) as err:
                await collect(p, request(timeout=0.2))
        finally:
            await p.aclose()
    assert err.value.kind == "timeout"


async def test_ollama_missing_model_says_how_to_pull_it():
    with OllamaServer() as srv:
        srv.script(Behaviour.http_status(404, 'model "qwen9" not found, try pulling it first'))
        p = OllamaProvider(ProviderConfig("ollama", srv.base_url, None))
        try:
            with pytest.raises(ProviderError) as err:
                await collect(p, request(model="qwen9"))
        finally:
            await p.aclose()
    assert err.value.kind == "bad_request" and not err.value.retryable
    assert "ollama pull" in str(err.value)
