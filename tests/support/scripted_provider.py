"""A provider whose replies and delays a test scripts, for testing the engine's own rules
(isolation, ordering, cursors). It speaks the real provider protocol; it stands in for
a model, not for any part of the engine."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from lemming.engine.prompt import extract_context
from lemming.engine.providers.base import CompletionRequest, ProbeResult, ProviderConfig, TextDelta, Usage

#: What each call saw: (agent, tick, [ids of new inbox entries])
SEEN: list[tuple[str, int, list[str]]] = []
#: agent -> seconds to wait before answering
DELAYS: dict[str, float] = {}
#: agent -> reply dict (default: one broadcast message)
REPLIES: dict[str, Any] = {}


class ScriptedProvider:
    name = "scripted"

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    async def stream(self, request: CompletionRequest) -> AsyncIterator[TextDelta | Usage]:
        users = [m.content for m in request.messages if m.role == "user"]
        ctx = extract_context(users[0]) or {}
        agent, tick = ctx["you"], ctx["tick"]
        if len(users) == 1:  # a turn's first call (not a tool round)
            SEEN.append((agent, tick, [e["id"] for e in ctx["inbox"]["new"]]))
        await asyncio.sleep(DELAYS.get(agent, 0))
        reply = REPLIES.get(agent)
        if callable(reply):
            reply = reply(ctx)
        if reply is None:
            reply = {"outbox_entries": [{"kind": "message", "payload": {"text": f"{agent}@{tick}"}}], "notes": ""}
        if len(users) > 1 and isinstance(reply, dict):
            # A tool round (the engine gives the results back): the scripted reply again,
            # without its calls, as a model that has what it asked for.
            reply = {k: v for k, v in reply.items() if k != "tool_calls"}
        text = reply if isinstance(reply, str) else json.dumps(reply)
        yield TextDelta(text[: len(text) // 2])
        yield TextDelta(text[len(text) // 2 :])
        yield Usage(input_tokens=1000, output_tokens=100)

    async def probe(self, model: str, timeout: float = 3.0) -> ProbeResult:
        return ProbeResult(True, "scripted")

    async def aclose(self) -> None:
        return None


def install(monkeypatch) -> None:
    from lemming.engine.providers import registry

    monkeypatch.setitem(registry.ADAPTERS, "scripted", ("tests.support.scripted_provider", "ScriptedProvider"))
    SEEN.clear()
    DELAYS.clear()
    REPLIES.clear()


SCRIPTED_MODELS = {
    "scripted": {
        "provider": "scripted",
        "model_name": "scripted-1",
        "prices": {"input_per_mtok": 10.0, "output_per_mtok": 100.0},
    }
}
