"""Scaling the provider path: pooled keep-alive clients, and SDK clients in worker processes.

Real SDKs against the protocol-faithful servers; real worker processes, killed for real.
The failure modes through a worker (429, timeouts, cut streams ...) are in
test_providers_failures.py (the "openai-workers" variant).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lemming.engine.engine import Engine
from lemming.engine.events import TurnFinished
from lemming.engine.org import load_org
from lemming.engine.providers.base import ChatMessage, CompletionRequest, ProviderError
from lemming.engine.providers.registry import ProviderRegistry
from lemming.engine.providers.retry import RetryPolicy, stream_with_retries
from lemming.engine.providers.workers import PooledProvider, worker_env
from lemming.engine.resume import ModelSpec, OrgSettings
from tests.conftest import REPO
from tests.support.processes import alive, no_transport_left_open, pids_with
from tests.support.servers import DEFAULT_REPLY, SERVERS, AnthropicServer, OllamaServer, OpenAIServer

KEY = "sk-test-4f9c2a7b1e"
MODEL = {"openai": "gpt-test", "anthropic": "claude-test", "ollama": "llama3.2"}


def spec(protocol: str, base_url: str, **extra) -> ModelSpec:
    return ModelSpec(
        provider=protocol,
        model_name=MODEL[protocol],
        base_url=base_url,
        api_key_env="TEST_PROVIDER_KEY",
        timeout=15,
        prices={"input_per_mtok": 1.0, "output_per_mtok": 2.0},
        **extra,
    )


def request(model: str, i: int = 0) -> CompletionRequest:
    return CompletionRequest(
        model=model,
        messages=[ChatMessage("system", f"You are agent {i}."), ChatMessage("user", "Tick 1. Inbox: empty.")],
        max_tokens=300,
        timeout=15,
    )


async def call(provider, model: str, i: int = 0, attempts: int = 1):
    return await stream_with_retries(
        provider, request(model, i), lambda t, r: None,
        policy=RetryPolicy(max_attempts=attempts, base_delay=0.01, max_delay=0.02), rng=random.Random(i),
    )


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "ollama"])
async def test_one_pooled_client_keeps_its_connections_across_calls(protocol):
    """Three waves of 8 concurrent calls: 8 connections at most, reused (keep-alive), not 24."""
    with SERVERS[protocol](api_key=KEY) as srv:
        reg = ProviderRegistry({"m": spec(protocol, srv.base_url, concurrency=8)}, env={"TEST_PROVIDER_KEY": KEY})
        try:
            provider, s = reg.resolve("m")
            for wave in range(3):
                results = await asyncio.gather(*(call(provider, s.model_name, i) for i in range(8)))
                assert all(r.error is None and r.text == DEFAULT_REPLY for r in results), [r.errors for r in results]
        finally:
            await reg.aclose()
        assert len(srv.chat_requests) == 24
        # Reused (keep-alive), not one per call; a loaded machine may let a socket idle out.
        assert 1 <= srv.connections_opened < 24


def test_the_aiohttp_transport_is_the_default_and_httpx_still_available():
    """The SDK clients ride on aiohttp unless a model asks for httpx; a bad choice is one clear line."""
    import openai

    def http_client(config: dict):
        reg = ProviderRegistry({"m": spec("openai", "http://127.0.0.1:9/v1", provider_config=config)}, env={})
        provider, _ = reg.resolve("m")
        return type(provider._client._client)

    assert "Aio" in http_client({}).__name__
    assert http_client({"transport": "httpx"}) is openai.DefaultAsyncHttpxClient
    with pytest.raises(ProviderError) as e:
        http_client({"transport": "curl"})
    assert e.value.kind == "config" and "transport" in str(e.value) and "'aiohttp' or 'httpx'" in str(e.value)


@pytest.mark.parametrize("protocol", ["anthropic", "ollama"])
async def test_calls_spread_over_two_workers_and_stream_back(protocol):
    with SERVERS[protocol](api_key=KEY, latency=0.2) as srv:
        reg = ProviderRegistry({"m": spec(protocol, srv.base_url)}, env={"TEST_PROVIDER_KEY": KEY})
        reg.use_settings(OrgSettings(provider_workers=2))
        async with no_transport_left_open():  # closing the registry ends the workers and their pipes
            try:
                provider, s = reg.resolve("m")
                assert isinstance(provider, PooledProvider)
                await reg.wait_ready()
                pids = reg._pool.pids()
                assert len(pids) == 2 and os.getpid() not in pids
                seen: list[int] = []

                async def watched(i: int):
                    task = asyncio.ensure_future(call(provider, s.model_name, i))
                    await asyncio.sleep(0.05)  # every call is now in flight, waiting on the latency
                    seen.append(max(len(w.calls) for w in reg._pool._workers))
                    return await task

                results = await asyncio.gather(*(watched(i) for i in range(10)))
                assert all(r.error is None and r.text == DEFAULT_REPLY for r in results), [r.errors for r in results]
                assert all(r.usage.output_tokens > 0 and not r.usage.estimated for r in results)
                assert max(seen) <= 5  # least-loaded: neither worker took more than its half
                probe = await provider.probe(s.model_name)
                assert probe.ok, probe.detail
            finally:
                await reg.aclose()
        assert not any(alive(p) for p in pids)


async def test_secrets_never_reach_a_workers_environment(monkeypatch):
    """The key reaches the worker over its pipe (the server checks it), never through its environment."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-machine-secret-1")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-machine-secret-2")
    monkeypatch.setenv("TEST_PROVIDER_KEY", KEY)
    with OpenAIServer(api_key=KEY) as srv:
        reg = ProviderRegistry({"m": spec("openai", srv.base_url)})
        reg.use_settings(OrgSettings(provider_workers=1))
        try:
            provider, s = reg.resolve("m")
            result = await call(provider, s.model_name)
            assert result.error is None, result.errors
            (pid,) = reg._pool.pids()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        finally:
            await reg.aclose()
    assert b"PATH=" in environ
    for secret in (KEY, "sk-machine-secret-1", "sk-machine-secret-2"):
        assert secret.encode() not in environ
    assert "OPENAI_API_KEY" not in worker_env() and "PATH" in worker_env()


async def test_a_worker_killed_mid_call_fails_the_attempt_and_the_retry_runs_on_a_new_one():
    with OpenAIServer(api_key=KEY, latency=0.5) as srv:
        reg = ProviderRegistry({"m": spec("openai", srv.base_url)}, env={"TEST_PROVIDER_KEY": KEY})
        reg.use_settings(OrgSettings(provider_workers=1))
        try:
            provider, s = reg.resolve("m")
            await reg.wait_ready()
            (first,) = reg._pool.pids()
            task = asyncio.ensure_future(call(provider, s.model_name, attempts=3))
            deadline = time.monotonic() + 10
            while not srv.chat_requests and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            os.kill(first, signal.SIGKILL)
            result = await task
            (second,) = reg._pool.pids()
        finally:
            await reg.aclose()
    assert result.error is None and result.text == DEFAULT_REPLY
    assert result.attempts == 2
    assert "connection" in result.errors[0] and f"pid {first}" in result.errors[0] and "exited" in result.errors[0]
    assert second != first and not alive(first)


async def test_a_model_the_worker_cannot_build_fails_its_turns_as_a_config_error():
    with OpenAIServer() as srv:
        reg = ProviderRegistry(
            {"m": spec("openai", srv.base_url, provider_config={"stream_parser": "xml"})}, env={"TEST_PROVIDER_KEY": KEY}
        )
        reg.use_settings(OrgSettings(provider_workers=1))
        try:
            provider, s = reg.resolve("m")
            await reg.wait_ready()  # says nothing: the turn does
            result = await call(provider, s.model_name, attempts=3)
        finally:
            await reg.aclose()
    assert result.error is not None and result.error.kind == "config" and result.attempts == 1
    assert "stream_parser" in str(result.error)


KILLED_RUN = textwrap.dedent(
    """
    import asyncio, sys
    from lemming.engine.providers.registry import ProviderRegistry
    from lemming.engine.resume import ModelSpec, OrgSettings

    async def main():
        spec = ModelSpec(provider="openai", model_name="gpt-test", base_url=sys.argv[1],
                         prices={"input_per_mtok": 1, "output_per_mtok": 1})
        reg = ProviderRegistry({"m": spec}, env={})
        reg.use_settings(OrgSettings(provider_workers=2))
        reg.resolve("m")
        await reg.wait_ready()
        print(" ".join(map(str, reg._pool.pids())), flush=True)
        await asyncio.sleep(120)

    asyncio.run(main())
    """
)


def test_kill_9_of_the_run_leaves_no_worker_behind():
    with OpenAIServer() as srv:
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_RUN, srv.base_url], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            pids = [int(p) for p in proc.stdout.readline().split()]
            assert len(pids) == 2 and all(alive(p) for p in pids)
        finally:
            proc.kill()
            proc.wait()
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(p) for p in pids)


async def test_the_engine_runs_its_turns_through_workers_and_closes_them(tmp_path):
    from tests.test_providers_engine import write_org

    with (
        OpenAIServer(api_key=KEY) as oa,
        AnthropicServer(api_key=KEY) as an,
        OllamaServer() as ol,
        OpenAIServer() as bad,
    ):
        write_org(tmp_path, oa, an, ol, bad)
        (tmp_path / "org.json").write_text(json.dumps({"provider_workers": 2}))
        org = load_org(tmp_path)
        assert not org.problems, org.problems
        registry = ProviderRegistry(org.models, env={"TEST_OA_KEY": KEY, "TEST_AN_KEY": KEY})
        engine = Engine(org, seed=0, registry=registry, retry_policy=RetryPolicy(max_attempts=1))
        sub = engine.subscribe()
        pids: list[int] = []
        orig = registry.wait_ready

        async def wait_ready() -> None:
            await orig()
            pids.extend(registry._pool.pids())

        registry.wait_ready = wait_ready  # type: ignore[method-assign]
        assert await engine.run(ticks=2) == "completed"
    turns = [ev for ev in sub.drain() if isinstance(ev, TurnFinished)]
    by_agent = {(t.tick, t.agent): t.record for t in turns}
    for tick in (1, 2):
        for agent in ("alice", "bob", "carol"):
            assert by_agent[tick, agent].status == "ok", by_agent[tick, agent]
    assert len(pids) == 2
    assert not any(alive(p) for p in pids)  # the run closed its workers


def test_provider_workers_in_org_json_is_checked():
    assert OrgSettings.model_validate({"provider_workers": "auto"}).provider_workers == "auto"
    for bad in (-1, "many", 1000):
        with pytest.raises(Exception) as e:
            OrgSettings.model_validate({"provider_workers": bad})
        assert "provider_workers" in str(e.value)


def test_kill_9_of_lemming_run_mid_tick_leaves_no_worker_behind(tmp_path):
    """The whole command, as an operator runs it: `lemming run --headless` with its calls in
    two workers, SIGKILLed while every agent's call is in flight; no worker survives it."""
    from lemming.tui.bench.providers import KEY_ENV, write_org

    server = subprocess.Popen(
        [sys.executable, "-m", "lemming.tui.bench.loopback", "openai", "--latency-ms", "3000"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    run = None
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        write_org(tmp_path, "openai", base_url, 6, 2)
        env = {**os.environ, KEY_ENV: "bench-key", "PYTHONPATH": str(REPO)}
        run = subprocess.Popen(
            [sys.executable, "-m", "lemming.tui.cli", "run", "--headless", "--org", str(tmp_path), "--ticks", "20",
             "--db", str(tmp_path / "runs.db"), "--no-watch"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 60
        pids: list[int] = []
        while len(pids) < 2 and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.1)
            pids = pids_with("lemming.engine.providers.worker", parent=run.pid)
        assert len(pids) == 2, f"the run did not start its two workers (exit {run.poll()})"
        time.sleep(1.0)  # the first tick's calls are now in flight (the server answers after 3 s)
        run.send_signal(signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(p) for p in pids)
    finally:
        if run is not None and run.poll() is None:
            run.kill()
            run.wait()
        server.terminate()
        server.wait()


def test_auto_spreads_a_model_over_one_worker_per_core_only_when_many_calls_are_in_flight(monkeypatch):
    from lemming.engine.providers import workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    assert workers.default_workers() == 2
    assert OrgSettings().provider_workers == "auto"  # the default

    def chosen(concurrency: int, max_concurrency: int) -> int:
        reg = ProviderRegistry({"m": spec("openai", "http://127.0.0.1:9/v1", concurrency=concurrency)}, env={})
        reg.use_settings(OrgSettings(max_concurrency=max_concurrency))
        return reg._workers_for(reg.spec("m"))

    assert chosen(100, 100) == 2  # a hundred calls at once to one server: both cores
    assert chosen(100, 16) == 0  # the organisation lets 16 run at once: one loop keeps up
    assert chosen(8, 256) == 0  # the model takes 8 at once
    reg = ProviderRegistry({"m": spec("openai", "http://127.0.0.1:9/v1", concurrency=100)}, env={})
    reg.use_settings(OrgSettings(max_concurrency=100, provider_workers=0))
    assert reg._workers_for(reg.spec("m")) == 0  # an explicit 0 is kept
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
    assert workers.default_workers() == 0  # one core: no workers
