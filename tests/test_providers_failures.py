"""Every adapter, through its official SDK, against a protocol-faithful local server.

The same scenarios run for OpenAI (chat-completions SSE), Anthropic (messages
SSE) and Ollama (/api/chat NDJSON): a normal streamed reply, and each failure
mode ending as a retried-or-failed CompletionResult with the right attempts,
errors, sleeps and billed usage.
"""

from __future__ import annotations

import random

import pytest

from lemming.engine.providers.base import ChatMessage, CompletionRequest
from lemming.engine.providers.registry import ProviderRegistry
from lemming.engine.providers.retry import CompletionResult, RetryPolicy, stream_with_retries
from lemming.engine.resume import ModelSpec, OrgSettings
from tests.support.servers import (
    DEFAULT_REPLY,
    SERVERS,
    Behaviour,
    ProtocolServer,
    closed_port,
    split_text,
)

KEY = "sk-test-4f9c2a7b1e"
#: Generous for calls that should succeed (a loaded CI box must not turn them into timeouts);
#: short where a test waits for a hang to time out.
TIMEOUT = 5.0
HANG_TIMEOUT = 0.2
MODEL = {"openai": "gpt-test", "anthropic": "claude-test", "ollama": "llama3.2"}
#: "openai-sdk": the OpenAI adapter reading the stream through the SDK's typed chunks.
#: "openai-workers": the OpenAI adapter in a provider worker process (provider_workers: 1),
#: every failure crossing the pipe as it would in the engine's own process.
PROTOCOLS = ["openai", "openai-sdk", "anthropic", "ollama", "openai-workers"]


@pytest.fixture(params=PROTOCOLS)
def protocol(request) -> str:
    return request.param


@pytest.fixture
def server(protocol):
    with SERVERS[protocol.split("-")[0]](api_key=KEY) as srv:
        yield srv


def spec_for(protocol: str, base_url: str, **extra) -> ModelSpec:
    provider, _, variant = protocol.partition("-")
    if variant == "sdk":
        extra["provider_config"] = {"stream_parser": "sdk"}
    return ModelSpec(
        provider=provider,
        model_name=MODEL[provider],
        base_url=base_url,
        api_key_env="TEST_PROVIDER_KEY",
        timeout=TIMEOUT,
        prices={"input_per_mtok": 1.0, "output_per_mtok": 2.0},
        **extra,
    )


@pytest.fixture
async def registry(protocol, server):
    reg = ProviderRegistry(
        {"m": spec_for(protocol, server.base_url)}, env={"TEST_PROVIDER_KEY": KEY}
    )
    if protocol.endswith("-workers"):
        reg.use_settings(OrgSettings(provider_workers=1))
        reg.resolve("m")
        await reg.wait_ready()
    yield reg
    await reg.aclose()


class Run:
    """One stream_with_retries call with everything it did recorded."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.deltas: list[str] = []
        self.restarts = 0

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def on_delta(self, text: str, restart: bool) -> None:
        if restart:
            self.restarts += 1
            self.deltas.clear()
        else:
            self.deltas.append(text)

    async def __call__(
        self,
        registry: ProviderRegistry,
        *,
        attempts: int = 4,
        max_retry_after: float = 60.0,
        timeout: float | None = None,
    ) -> CompletionResult:
        provider, spec = registry.resolve("m")
        request = CompletionRequest(
            model=spec.model_name,
            messages=[
                ChatMessage("system", "You are a terse agent. Reply with JSON."),
                ChatMessage("user", "Tick 3. Inbox: nothing new."),
            ],
            temperature=0.3,
            max_tokens=300,
            timeout=timeout or spec.timeout,
            seed=7,
        )
        policy = RetryPolicy(
            max_attempts=attempts, base_delay=0.01, max_delay=0.05, max_retry_after=max_retry_after
        )
        return await stream_with_retries(
            provider, request, self.on_delta, policy=policy, rng=random.Random(0), sleep=self.sleep
        )


def served_usage(server: ProtocolServer) -> tuple[int, int]:
    last = server.chat_requests[-1]
    assert last.usage is not None
    return last.usage


def assert_succeeded_after(result: CompletionResult, run: Run, kind: str, attempts: int | None = 2) -> None:
    """attempts=None: at least two (a retry after a timeout may itself time out on a loaded box)."""
    assert result.error is None, result.errors
    if attempts is None:
        assert result.attempts >= 2
    else:
        assert result.attempts == attempts
    assert len(result.errors) == result.attempts - 1
    assert all(f": {kind}" in e for e in result.errors), result.errors
    assert result.text == DEFAULT_REPLY
    assert "".join(run.deltas) == DEFAULT_REPLY  # the UI saw the reply start over, then complete


# --- the happy path ----------------------------------------------------------------


async def test_text_streams_through_and_usage_is_reported(protocol, server, registry):
    run = Run()
    result = await run(registry)
    assert result.error is None and result.attempts == 1 and result.errors == []
    assert result.text == DEFAULT_REPLY
    assert server.chat_requests[0].deltas == split_text(DEFAULT_REPLY, 4)
    if protocol.endswith("-workers"):
        # A worker joins the deltas that reach it in one loop iteration: fewer, whole ones, in order.
        assert 1 <= len(run.deltas) <= len(server.chat_requests[0].deltas)
        assert "".join(run.deltas) == DEFAULT_REPLY
    else:
        # Every delta the server sent arrived, in order, as its own delta.
        assert run.deltas == server.chat_requests[0].deltas
    inp, out = served_usage(server)
    assert (result.usage.input_tokens, result.usage.output_tokens) == (inp, out)
    assert not result.usage.estimated
    assert (result.billed.input_tokens, result.billed.output_tokens) == (inp, out)
    assert run.sleeps == []


async def test_sdk_retries_are_off_so_one_request_per_attempt(server, registry):
    server.script(Behaviour.http_status(500), Behaviour.http_status(500))
    result = await Run()(registry, attempts=3)
    assert result.attempts == 3
    assert len(server.chat_requests) == 3  # no hidden SDK retries stacked under ours


# --- rate limits ---------------------------------------------------------------------


async def test_rate_limit_retry_after_is_honoured(protocol, server, registry):
    server.script(Behaviour.rate_limit(retry_after="0.25"))
    run = Run()
    result = await run(registry)
    assert_succeeded_after(result, run, "rate_limit")
    # (Ollama's SDK drops response headers; the adapter keeps them with an httpx hook.)
    assert run.sleeps == [0.25]


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_retry_after_ms_wins_over_retry_after(server, registry):
    server.script(Behaviour.rate_limit(retry_after="3", retry_after_ms="40"))
    run = Run()
    result = await run(registry)
    assert_succeeded_after(result, run, "rate_limit")
    assert run.sleeps == [pytest.approx(0.04)]


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_retry_after_as_http_date(server, registry):
    from tests.support.servers import http_date

    server.script(Behaviour.rate_limit(retry_after=http_date(5)))
    run = Run()
    result = await run(registry)
    assert_succeeded_after(result, run, "rate_limit")
    # HTTP dates have one-second resolution.
    assert len(run.sleeps) == 1 and 3.5 <= run.sleeps[0] <= 5.5


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_retry_after_beyond_the_limit_fails_the_turn_instead_of_waiting(server, registry):
    server.script(Behaviour.rate_limit(retry_after="600"))
    run = Run()
    result = await run(registry, max_retry_after=60)
    assert result.error is not None and result.error.kind == "rate_limit"
    assert result.error.retry_after == 600
    assert result.attempts == 1 and run.sleeps == []
    assert "exceeds" in result.errors[-1]


# --- server errors -------------------------------------------------------------------


async def test_server_error_is_retried_then_succeeds(server, registry):
    server.script(Behaviour.http_status(500))
    run = Run()
    result = await run(registry)
    assert_succeeded_after(result, run, "server")
    assert "HTTP 500" in result.errors[0]
    assert len(run.sleeps) == 1 and 0 <= run.sleeps[0] <= 0.01
    # Only the successful attempt used tokens.
    assert (result.billed.input_tokens, result.billed.output_tokens) == served_usage(server)


async def test_server_errors_until_attempts_run_out_fail_the_call(server, registry):
    server.script(*[Behaviour.http_status(503)] * 3)
    run = Run()
    result = await run(registry, attempts=3)
    assert result.error is not None and result.error.kind == "server"
    assert result.error.status == 503
    assert result.attempts == 3 and len(result.errors) == 3
    assert len(run.sleeps) == 2
    assert result.text == "" and run.deltas == []


@pytest.mark.parametrize("status", [400, 404])
async def test_other_client_errors_are_not_retried(server, registry, status):
    server.script(Behaviour.http_status(status))
    run = Run()
    result = await run(registry)
    assert result.error is not None and result.error.kind == "bad_request"
    assert result.attempts == 1 and run.sleeps == []
    assert len(server.chat_requests) == 1


# --- transport failures ----------------------------------------------------------------


async def test_connection_refused(protocol):
    base = f"http://127.0.0.1:{closed_port()}" + ("/v1" if protocol.startswith("openai") else "")
    reg = ProviderRegistry({"m": spec_for(protocol, base)}, env={"TEST_PROVIDER_KEY": KEY})
    try:
        run = Run()
        result = await run(reg, attempts=3)
    finally:
        await reg.aclose()
    assert result.error is not None and result.error.kind == "connection"
    assert result.attempts == 3
    assert all(": connection" in e for e in result.errors)
    assert KEY not in " ".join(result.errors)


async def test_hang_before_headers_times_out_then_retry_succeeds(server, registry):
    server.script(Behaviour.hang(seconds=5))
    run = Run()
    result = await run(registry, timeout=HANG_TIMEOUT)
    assert_succeeded_after(result, run, "timeout", attempts=None)


async def test_hang_mid_stream_times_out_and_the_partial_reply_is_billed(server, registry):
    server.script(Behaviour.hang(seconds=5, mid_stream=True, after=6))
    run = Run()
    result = await run(registry, timeout=HANG_TIMEOUT)
    assert_succeeded_after(result, run, "timeout", attempts=None)
    assert run.restarts >= 1
    inp, out = served_usage(server)
    assert result.billed.output_tokens > out
    assert result.billed.estimated


async def test_hang_every_attempt_fails_with_timeout(server, registry):
    server.script(Behaviour.hang(seconds=5), Behaviour.hang(seconds=5))
    result = await Run()(registry, attempts=2, timeout=HANG_TIMEOUT)
    assert result.error is not None and result.error.kind == "timeout"
    assert result.attempts == 2


@pytest.mark.parametrize("clean", [False, True], ids=["aborted", "clean-eof"])
async def test_stream_cut_mid_way_is_retried_and_partial_usage_billed(server, registry, clean):
    server.script(Behaviour.cut(after=8, clean=clean))
    run = Run()
    result = await run(registry)
    assert_succeeded_after(result, run, "stream_cut")
    assert run.restarts == 1
    first, second = server.chat_requests
    assert first.deltas and len(first.deltas) < len(second.deltas)
    inp, out = served_usage(server)
    # The cut attempt's tokens are billed too (estimated where the provider never said).
    assert result.billed.input_tokens >= 2 * inp - 1
    assert result.billed.output_tokens >= out + len(first.deltas) // 2
    assert result.billed.estimated
    assert (result.usage.input_tokens, result.usage.output_tokens) == (inp, out)


async def test_stream_cut_on_every_attempt_fails_with_what_was_streamed_billed(server, registry):
    server.script(*[Behaviour.cut(after=8)] * 2)
    result = await Run()(registry, attempts=2)
    assert result.error is not None and result.error.kind == "stream_cut"
    assert result.attempts == 2
    assert result.usage.output_tokens > 0 and result.usage.estimated
    assert result.text  # the partial text of the last attempt, for the inspector


async def test_malformed_chunk_is_retried(server, registry):
    server.script(Behaviour.malformed(after=5))
    run = Run()
    result = await run(registry)
    assert_succeeded_after(result, run, "malformed")


async def test_error_event_inside_the_stream_is_a_server_error(server, registry):
    server.script(Behaviour.error_event(after=5))
    run = Run()
    result = await run(registry)
    assert_succeeded_after(result, run, "server")


# --- keys ----------------------------------------------------------------------------


async def test_wrong_key_is_an_auth_error_not_retried_and_never_echoed(protocol, server):
    wrong = "sk-wrong-93b1d0c4e2"
    reg = ProviderRegistry({"m": spec_for(protocol, server.base_url)}, env={"TEST_PROVIDER_KEY": wrong})
    try:
        provider, _ = reg.resolve("m")
        run = Run()
        result = await run(reg)
    finally:
        await reg.aclose()
    assert result.error is not None and result.error.kind == "auth"
    assert result.error.status == 401
    assert result.attempts == 1 and run.sleeps == []
    assert len(server.chat_requests) == 1
    # The server echoes the key it got (as OpenAI does, partly); we never pass it on.
    everything = " ".join(result.errors) + str(result.error) + repr(result.error) + repr(provider)
    assert wrong not in everything and KEY not in everything


# --- usage not reported ------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["openai", "openai-sdk", "ollama"])
async def test_missing_usage_is_estimated_and_marked(server, registry):
    server.script(Behaviour.no_usage())
    result = await Run()(registry)
    assert result.error is None
    assert result.usage.estimated
    assert result.usage.output_tokens == (len(DEFAULT_REPLY) + 3) // 4
    assert result.usage.input_tokens > 0


# --- a provider that ignores max_tokens ----------------------------------------------


async def test_a_reply_past_the_cap_is_cut_off_and_fails_without_a_retry(server, registry):
    """A server that streams on past what max_tokens allows: the call is cut off at the cap,
    the stream is closed, the turn fails with a line saying why, and nothing is retried."""
    server.script(Behaviour.ok(text="x" * 400))
    provider, spec = registry.resolve("m")
    request = CompletionRequest(model=spec.model_name, messages=[ChatMessage("user", "hi")], max_tokens=300, timeout=10)
    seen: list[str] = []
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, min_reply_chars=200, chars_per_token=0)
    assert policy.reply_cap(300) == 200
    assert RetryPolicy().reply_cap(300) == 262_144 and RetryPolicy().reply_cap(100_000) == 3_200_000
    assert RetryPolicy().reply_cap(None) == 1_000_000
    result = await stream_with_retries(provider, request, lambda t, r: seen.append(t), policy=policy)
    assert result.error is not None and result.error.kind == "too_long" and not result.error.retryable
    assert result.attempts == 1 and len(server.chat_requests) == 1
    assert "passed 200 characters (max_tokens 300)" in str(result.error)
    assert len("".join(seen)) <= 200 and result.text == "".join(seen)  # kept for the inspector
