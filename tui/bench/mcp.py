"""`lemming bench mcp`: what one MCP tool call costs an agent's turn.

Runs the demo organisation's MCP server (mcp-server-time, a stdio server installed with
the project) through the run's hub, as a turn would: start-up and tool listing once,
then calls of `convert_time` with fixed arguments (schema check, call, result), timed
one by one.
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


def bench_mcp(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_bench(50 if quick else 500))
