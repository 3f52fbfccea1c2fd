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


def _slow_org(root: Path, *, delay: float, timeout: float) -> Path:
    make_org(root, {"ann": {"model": "scripted", "tools": ["calc/add"]}}, models=sp.SCRIPTED_MODELS)
    entry = {"command": sys.executable, "args": [SERVER, "--start-delay", str(delay)], "timeout": timeout}
    (root / "org.json").write_text(json.dumps({"mcp_servers": {"calc": entry}}))
    return root


def _turns(root: Path, ticks: int, status=None) -> list:
    async def go():
        engine = Engine(load_org(root), seed=1, mcp_wait=False)  # the servers start in the background
        sub = engine.subscribe(tokens=False)
        await engine.run(ticks=ticks)
        return [e.record for e in sub.drain() if isinstance(e, TurnFinished)]

    return asyncio.run(go())


def test_servers_start_in_the_background_and_a_call_waits_for_its_server(tmp_path: Path, monkeypatch) -> None:
    """The first tick does not wait for a slow server: its prompt gives the grant alone,
    and the call in it waits for the server (within the call's timeout) and answers. The
    next run's first prompt lists the tools the server listed in this one."""
    sp.install(monkeypatch)
    root = _slow_org(tmp_path / "org", delay=2.0, timeout=20.0)
    sp.REPLIES["ann"] = {"outbox_entries": [], "tool_calls": [{"tool": "calc/add", "args": {"a": 1, "b": 2}}]}
    (rec,) = _turns(root, 1)
    system = rec.prompt[0]["content"]
    assert "- calc/add: an MCP tool whose server has not listed its tools yet" in system
    assert rec.tool_calls[0]["ok"] and rec.tool_calls[0]["result"] == {"text": "3"}
    (again,) = _turns(root, 1)
    assert "- calc/add {a, b}: Add two integers." in again.prompt[0]["content"]  # from the last run's listing
    assert again.tool_calls[0]["ok"]


def test_a_call_to_a_server_still_starting_is_a_recorded_error_after_the_call_timeout(tmp_path: Path, monkeypatch) -> None:
    sp.install(monkeypatch)
    root = _slow_org(tmp_path / "org", delay=4.0, timeout=0.5)
    sp.REPLIES["ann"] = {"outbox_entries": [], "tool_calls": [{"tool": "calc/add", "args": {"a": 1, "b": 2}}]}
    (rec,) = _turns(root, 1)
    call = rec.tool_calls[0]
    assert not call["ok"] and "is still starting (waited 0.5 s); call it again later" in call["error"]
    assert rec.status == "ok"  # the turn (and the run) went on
