"""`lemming bench mcp`: what one MCP tool call costs an agent's turn.

Runs the demo organisation's MCP server (mcp-server-time, a stdio server installed with
the project) through the run's hub, as a turn would: start-up and tool listing once,
then calls of `convert_time` with fixed arguments (schema check, call, result), timed
one by one. Then the first tick of 8 sim agents (one granted the time server's tools),
from `run()` to its commit: with the servers starting in the background (`first_tick_s`, the engine's way)
and with the run waiting for them first (`first_tick_wait_s`, `engine.mcp_wait`).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from typing import Any

from lemming.engine.mcp import McpHub, McpServerSpec

ARGS = {"source_timezone": "Europe/London", "time": "14:30", "target_timezone": "Asia/Tokyo"}


async def _bench(calls: int) -> dict[str, Any]:
    spec = McpServerSpec(command="mcp-server-time", args=["--local-timezone", "UTC"])
    with tempfile.TemporaryDirectory() as root:
        hub = McpHub({"time": spec}, root=root, log_dir=f"{root}/logs")
        try:
            started = time.perf_counter()
            await hub.tools("time")
            start_s = time.perf_counter() - started
            for _ in range(5):  # warm-up
                await hub.call("time/convert_time", ARGS)
            times = []
            for _ in range(calls):
                result = await hub.call("time/convert_time", ARGS)
                if not result.ok:
                    raise RuntimeError(f"bench call failed: {result.error}")
                times.append(result.duration_s * 1000)
        finally:
            await hub.aclose()
    times.sort()
    return {
        "server": "mcp-server-time (stdio)",
        "calls": calls,
        "start_s": round(start_s, 3),
        "call_ms_p50": round(statistics.median(times), 3),
        "call_ms_p95": round(times[int(len(times) * 0.95) - 1], 3),
    }


async def _first_tick(wait: bool) -> float:
    """Seconds from `run()` to the first tick committed of 8 sim agents, one of which holds
    the time server's tools (the demo's shape)."""
    import json
    from pathlib import Path

    from lemming.engine.engine import Engine
    from lemming.engine.events import TickCompleted
    from lemming.engine.org import load_org

    with tempfile.TemporaryDirectory(prefix="lemming-bench-mcp-") as tmp:
        org = Path(tmp)
        for i in range(8):
            d = org / "agents" / f"a{i}"
            d.mkdir(parents=True)
            tools = ["time/*"] if i == 0 else []
            (d / "resume.json").write_text(json.dumps({"name": f"a{i}", "model": "sim", "permissions": {"tools": tools}}))
        (org / "models.json").write_text(json.dumps({"sim": {"provider": "sim", "model_name": "sim-1", "provider_config": {"tokens_per_s": 0}}}))
        (org / "org.json").write_text(json.dumps({"mcp_servers": {"time": {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]}}}))
        engine = Engine(load_org(org), seed=1, mcp_wait=wait)
        engine.freeze_gc = False
        sub = engine.subscribe(tokens=False)
        started = time.perf_counter()
        task = asyncio.create_task(engine.run(ticks=1))
        while not any(type(e) is TickCompleted for e in sub.drain()):
            await sub.wait(0.01)
        took = time.perf_counter() - started
        await task
        return took


def bench_mcp(quick: bool = False) -> dict[str, Any]:
    out = asyncio.run(_bench(50 if quick else 500))
    out["first_tick_s"] = round(asyncio.run(_first_tick(False)), 3)
    out["first_tick_wait_s"] = round(asyncio.run(_first_tick(True)), 3)
    return out
