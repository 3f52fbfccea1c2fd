"""MCP tools inside agents' turns: a real MCP server (tests/support/mcp_server.py, the SDK)
granted in part to a scripted agent; results within the turn, refusals recorded, replay
shows the calls without calling; the demo's sim uses mcp-server-time."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from lemming.engine.engine import Engine
from lemming.engine.events import ToolCallFinished, TurnFinished
from lemming.engine.org import load_org
from tests.conftest import demo_copy, make_org
from tests.support import scripted_provider as sp

SERVER = str(Path(__file__).parent / "support" / "mcp_server.py")


def _org(root: Path) -> Path:
    make_org(root, {"ann": {"model": "scripted", "tools": ["calc/add", "calc/echo"]}}, models=sp.SCRIPTED_MODELS)
    (root / "org.json").write_text(json.dumps({"mcp_servers": {"calc": {"command": sys.executable, "args": [SERVER]}}}))
    return root


def test_granted_mcp_calls_answer_within_the_turn_and_the_rest_are_refused(tmp_path: Path, monkeypatch) -> None:
    sp.install(monkeypatch)
    root = _org(tmp_path / "org")
    sp.REPLIES["ann"] = {
        "outbox_entries": [{"kind": "message", "payload": {"text": "done"}}],
        "tool_calls": [
            {"tool": "calc/add", "args": {"a": 20, "b": 22}},
            {"tool": "calc/add", "args": {"a": "twenty", "b": 22}},  # fails the schema
            {"tool": "calc/big", "args": {"n": 3}},  # the server has it; not granted
            {"tool": "other/x", "args": {}},  # no such server, not granted
        ],
    }

    async def go():
        engine = Engine(load_org(root), seed=1)
        sub = engine.subscribe(tokens=False)
        await engine.run(ticks=1)
        assert engine.mcp is None  # the servers stopped with the run
        return sub.drain()

    events = asyncio.run(go())
    rec = next(e.record for e in events if isinstance(e, TurnFinished))
    assert rec.status == "ok" and len(rec.rounds) == 2
    calls = rec.tool_calls
    assert [c["tool"] for c in calls] == ["calc/add", "calc/add", "calc/big", "other/x"]
    assert calls[0]["ok"] and calls[0]["result"] == {"text": "42"}
    assert not calls[1]["ok"] and "refused before the call" in calls[1]["error"]
    assert not calls[2]["ok"] and "not granted" in calls[2]["error"]
    assert not calls[3]["ok"] and "not granted" in calls[3]["error"]
    # The system prompt listed the granted tools with their descriptions and schemas, and
    # the second request held the first call's result.
    system = rec.prompt[0]["content"]
    assert "- calc/add {a, b}: Add two integers." in system and '"required":["a","b"]' in system
    assert "- calc/echo {text}: Return the text unchanged." in system and "calc/big" not in system
    assert '"42"' in rec.prompt[-1]["content"]
    assert sum(1 for e in events if isinstance(e, ToolCallFinished)) == 4


def test_replay_shows_recorded_calls_without_calling(tmp_path: Path, monkeypatch) -> None:
    from lemming.engine.recorded_run import RecordedRun
    from lemming.engine.store import RunStore

    sp.install(monkeypatch)
    root = _org(tmp_path / "org")
    sp.REPLIES["ann"] = {"outbox_entries": [], "tool_calls": [{"tool": "calc/echo", "args": {"text": "hello mcp"}}]}
    db = tmp_path / "runs.db"

    async def go() -> str:
        engine = Engine(load_org(root), seed=1, run_id="mcp-run")
        async with await RecordedRun.record(engine, db):
            await engine.run(ticks=2)
        # The server is gone: replay must not need it.
        (root / "org.json").write_text(json.dumps({"mcp_servers": {"calc": {"command": "no-such-server"}}}))
        store = await RunStore.open(db, readonly=True)
        try:
            state = await store.state_at("mcp-run", 2)
        finally:
            await store.close()
        return json.dumps(state.last_turn["ann"].tool_calls)

    shown = asyncio.run(go())
    assert "hello mcp" in shown and '"ok": true' in shown


def test_the_demo_sim_calls_mcp_server_time(tmp_path: Path) -> None:
    root = demo_copy(tmp_path / "demo")

    async def go():
        engine = Engine(load_org(root), seed=3)
        sub = engine.subscribe(tokens=False)
        await engine.run(ticks=30)
        return sub.drain()

    events = asyncio.run(go())
    calls = [e for e in events if isinstance(e, ToolCallFinished) and e.tool.startswith("time/")]
    assert calls, "the researcher never called the time server in 30 ticks"
    assert all(c.ok for c in calls), [c for c in calls if not c.ok]
