"""The engine, headless, on real provider adapters talking to the three local protocol servers.

A small organisation: one agent per protocol, plus one whose server always
fails. Every turn is recorded and priced from the usage the server reported,
token deltas carry the server's text, and the failing agent never holds up
the others' turns in the same tick.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lemming.engine.engine import Engine
from lemming.engine.events import CreditsCharged, TickCompleted, TokenDelta, TurnFinished
from lemming.engine.org import load_org
from lemming.engine.providers.registry import ProviderRegistry
from lemming.engine.providers.retry import RetryPolicy
from tests.support.processes import open_http_sessions
from tests.support.servers import (
    DEFAULT_REPLY,
    AnthropicServer,
    Behaviour,
    OllamaServer,
    OpenAIServer,
    ProtocolServer,
)

KEY = "sk-test-4f9c2a7b1e"
PRICES = {"input_per_mtok": 1000.0, "output_per_mtok": 3000.0}
BUDGET = 50.0


# Generous timeouts: a loaded 2-core CI machine must not turn a slow first call into a retry.
def write_org(root: Path, oa: OpenAIServer, an: AnthropicServer, ol: OllamaServer, bad: OpenAIServer) -> None:
    models = {
        "gpt": {"provider": "openai", "model_name": "gpt-test", "base_url": oa.base_url,
                "api_key_env": "TEST_OA_KEY", "prices": PRICES, "timeout": 15},
        "claude": {"provider": "anthropic", "model_name": "claude-test", "base_url": an.base_url,
                   "api_key_env": "TEST_AN_KEY", "prices": PRICES, "timeout": 15},
        # LeMMing's shape: base_url inside provider_config.
        "llama": {"provider": "ollama", "model_name": "llama3.2", "provider_config": {"base_url": ol.base_url},
                  "prices": PRICES, "timeout": 15},
        "flaky": {"provider": "openai", "model_name": "gpt-test", "base_url": bad.base_url,
                  "prices": PRICES, "timeout": 2, "max_attempts": 2},
    }
    (root / "models.json").write_text(json.dumps(models, indent=2))
    agents = {
        "alice": {"key": "gpt", "temperature": 0.2, "max_tokens": 400},
        "bob": "claude",
        "carol": {"key": "llama", "max_tokens": 300},
        "dave": "flaky",
    }
    for name, model in agents.items():
        folder = root / "agents" / name
        folder.mkdir(parents=True)
        resume = {
            "name": name,
            "title": name.title(),
            "short_description": f"{name} reports status",
            "instructions": "Report your status in one message to everyone.",
            "model": model,
            "permissions": {"read_outboxes": ["*"], "tools": []},
            "schedule": {"run_every_n_ticks": 1, "phase_offset": 0},
            "credits": {"max_credits": BUDGET},
        }
        (folder / "resume.json").write_text(json.dumps(resume, indent=2))


@pytest.fixture
def servers():
    with (
        OpenAIServer(api_key=KEY) as oa,
        AnthropicServer(api_key=KEY) as an,
        OllamaServer() as ol,
        OpenAIServer() as bad,
    ):
        yield oa, an, ol, bad


def cost(usage: tuple[int, int]) -> float:
    return usage[0] * PRICES["input_per_mtok"] / 1e6 + usage[1] * PRICES["output_per_mtok"] / 1e6


def make_engine(tmp_path: Path, servers) -> Engine:
    write_org(tmp_path, *servers)
    org = load_org(tmp_path)
    registry = ProviderRegistry(org.models, env={"TEST_OA_KEY": KEY, "TEST_AN_KEY": KEY})
    return Engine(
        org, seed=0, concurrency=16, registry=registry,
        retry_policy=RetryPolicy(base_delay=0.01, max_delay=0.02),
    )


async def test_headless_ticks_on_three_protocols_are_recorded_priced_and_streamed(tmp_path, servers):
    oa, an, ol, bad = servers
    bad.script(*[Behaviour.http_status(500)] * 20)  # dave's server never recovers
    engine = make_engine(tmp_path, servers)
    sub = engine.subscribe()
    reason = await engine.run(ticks=3)
    assert reason == "completed"
    events = sub.drain()

    by_agent = {"alice": oa, "bob": an, "carol": ol}
    finished = [e for e in events if isinstance(e, TurnFinished)]
    assert len(finished) == 4 * 3  # every turn of every tick recorded, the failing one too
    ticks = [e for e in events if isinstance(e, TickCompleted)]
    assert [t.tick for t in ticks] == [1, 2, 3]
    for t in ticks:
        assert set(t.fired) == {"alice", "bob", "carol", "dave"}
        assert set(t.failed) == {"dave"}  # the others' turns in the same tick completed

    for name, srv in by_agent.items():
        requests = srv.chat_requests
        assert len(requests) == 3  # one request per tick, no retries
        turns = [e.record for e in finished if e.agent == name]
        for rec, req in zip(turns, requests):
            assert rec.status == "ok", rec.error
            assert rec.attempts == 1
            assert rec.raw_output == DEFAULT_REPLY
            assert (rec.usage.input_tokens, rec.usage.output_tokens) == req.usage
            assert not rec.usage.estimated
            assert rec.cost == pytest.approx(cost(req.usage))
            assert rec.parsed is not None and rec.parsed["outbox_entries"][0]["payload"]["text"].startswith("Status")
        # Credits went down by exactly prices × the tokens the server reported.
        spent = sum(cost(r.usage) for r in requests)
        assert engine.state.credits[name] == pytest.approx(BUDGET - spent)
        charges = [e for e in events if isinstance(e, CreditsCharged) and e.agent == name]
        assert [(c.input_tokens, c.output_tokens) for c in charges] == [r.usage for r in requests]
        # Token deltas carry exactly what the server streamed, per tick (a subscriber that
        # lags gets consecutive deltas merged, so compare the text, not the pieces).
        for tick, req in zip((1, 2, 3), requests):
            deltas = [e for e in events if isinstance(e, TokenDelta) and e.agent == name and e.tick == tick]
            assert deltas and not any(e.restart for e in deltas)
            assert "".join(e.text for e in deltas) == "".join(req.deltas) == DEFAULT_REPLY

    # What each agent's resume asked for reached the wire.
    assert oa.chat_requests[0].json["temperature"] == 0.2
    assert oa.chat_requests[0].json["max_tokens"] == 400
    assert ol.chat_requests[0].json["options"]["num_predict"] == 300
    assert an.chat_requests[0].json["max_tokens"] > 0

    dave = engine.state.last_turn["dave"]
    assert dave.status == "provider"
    assert dave.attempts == 2 and len(bad.chat_requests) == 6
    assert "server (HTTP 500)" in dave.error
    assert dave.cost == 0 and engine.state.credits["dave"] == BUDGET  # nothing billed, nothing charged
    assert KEY not in json.dumps([e.to_dict() for e in events], default=str)

    # Messages were committed: everyone's broadcast reached the board.
    last = engine.state.last_turn
    assert {n for n in ("alice", "bob", "carol") if last[n].status == "ok"} == {"alice", "bob", "carol"}


async def test_a_turn_retried_after_a_rate_limit_and_a_cut_stream_still_completes(tmp_path, servers):
    oa, an, ol, bad = servers
    an.script(Behaviour.rate_limit(retry_after="0.05"), Behaviour.cut(after=10))
    ol.script(Behaviour.hang(5, mid_stream=True, after=4))
    write_org(tmp_path, *servers)
    org = load_org(tmp_path)
    # A short timeout for Ollama only, so its hang costs 0.3 s, not the spec's 15 s.
    org.models["llama"].timeout = 0.3
    engine = Engine(
        org, seed=0, registry=ProviderRegistry(org.models, env={"TEST_OA_KEY": KEY, "TEST_AN_KEY": KEY}),
        retry_policy=RetryPolicy(base_delay=0.01, max_delay=0.02),
    )
    sub = engine.subscribe()
    await engine.run(ticks=1)
    events = sub.drain()
    bob = engine.state.last_turn["bob"]
    carol = engine.state.last_turn["carol"]
    assert bob.status == "ok" and bob.attempts == 3
    assert carol.status == "ok" and carol.attempts >= 2 and carol.error is None
    # The turns succeeded, and still say why the earlier attempts failed (the inspector shows it).
    assert [r.split(":")[1].strip() for r in bob.retries] == ["rate_limit (HTTP 429)", "stream_cut"]
    assert len(carol.retries) == carol.attempts - 1 and "timeout" in carol.retries[0]
    from lemming.tui.screens.inspector import summary_text

    shown = summary_text(bob).plain
    assert "retried     attempt 1: rate_limit (HTTP 429)" in shown and "attempt 2: stream_cut" in shown
    # A UI following bob's stream was told to start over after each failed attempt that streamed.
    bob_deltas = [e for e in events if isinstance(e, TokenDelta) and e.agent == "bob"]
    assert sum(1 for e in bob_deltas if e.restart) == 1
    # (a restart delta means "clear, then append its text": merged deltas may ride on it)
    after_restart = bob_deltas[max(i for i, e in enumerate(bob_deltas) if e.restart) :]
    assert "".join(e.text for e in after_restart) == DEFAULT_REPLY


async def test_tokens_of_a_cut_attempt_are_charged_when_the_retry_succeeds(tmp_path, servers):
    oa, an, ol, bad = servers
    an.script(Behaviour.cut(after=20))
    engine = make_engine(tmp_path, servers)
    await engine.run(ticks=1)
    bob = engine.state.last_turn["bob"]
    assert bob.status == "ok" and bob.attempts == 2
    final = an.chat_requests[-1].usage
    assert bob.cost > cost(final)


async def test_a_run_cancelled_while_it_stops_still_closes_every_sdk_client(tmp_path, servers):
    """An app that shuts down cancels its run, and asyncio.run cancels it again while it
    stops (the control room's quit paths, the tests' app.exit()). The run still closes
    every adapter its registry built, each SDK client with its HTTP session and sockets:
    none is left for the interpreter's exit to report as an unclosed client session."""
    import asyncio

    engine = make_engine(tmp_path, servers)
    before = {id(s) for s in open_http_sessions()}
    task = asyncio.create_task(engine.run())
    deadline = asyncio.get_running_loop().time() + 60
    while engine.tick < 1:
        assert asyncio.get_running_loop().time() < deadline, "the first tick did not complete"
        await asyncio.sleep(0.01)
    opened = [s for s in open_http_sessions() if id(s) not in before]
    assert len(opened) == 4, opened  # one per adapter: gpt, claude, llama, flaky
    task.cancel()  # the app cancels its run ...
    await asyncio.sleep(0)  # ... which starts closing its adapters
    me = asyncio.current_task()
    for other in asyncio.all_tasks():  # ... then asyncio.run cancels every task left, once
        if other is not me:
            other.cancel()
    cancels = 2
    while not task.done():  # and a run may be cancelled again and again meanwhile
        task.cancel()
        cancels += 1
        await asyncio.sleep(0)
    assert (await asyncio.gather(task, return_exceptions=True))[0].__class__ is asyncio.CancelledError
    assert cancels > 2, "the run stopped at the first cancels: the test proved nothing"
    assert [s for s in open_http_sessions() if id(s) not in before] == []
    assert engine.registry._adapters == {}
