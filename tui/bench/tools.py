"""What a tool call costs on this machine: the runner's own overhead and the sandbox's.

`lemming bench tools` times, each many times on a real workspace:

* file_read_us — a `file_read` of a 1 KB file through the runner (grant check,
  argument check, path confinement, the read, the result);
* file_write_us — a `file_write` staged for the commit (with its diff);
* shell_echo_ms — a `shell` call of `echo hi`: the scratch copy of the workspace,
  bubblewrap's start-up, the program, the comparison of the files after it;
* bwrap_startup_ms — bubblewrap running `/bin/true` alone (no copy, no runner);
* process_ms — `/bin/true` started unsandboxed through the same spawn code.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from lemming.engine.org import load_org
from lemming.engine.tools.runner import ToolRunner
from lemming.engine.tools.sandbox import Limits, Mount, SandboxPolicy, bwrap_path, run_process, run_sandboxed

_TOOLS = ["file_read", "file_write", "shell"]


def _org(root: Path):
    import json

    (root / "agents" / "ann").mkdir(parents=True)
    (root / "agents" / "ann" / "resume.json").write_text(
        json.dumps({"name": "ann", "model": "sim", "permissions": {"read_outboxes": [], "tools": _TOOLS}})
    )
    (root / "org.json").write_text(json.dumps({"shell_allow": ["echo", "true"]}))
    ws = root / "agents" / "ann" / "workspace"
    ws.mkdir()
    (ws / "note.md").write_text("x" * 1024)
    for i in range(20):
        (ws / f"f{i}.txt").write_text(f"file {i}\n")
    return load_org(root)


def _median(xs: list[float]) -> float:
    return round(statistics.median(xs), 3)


async def _measure(quick: bool) -> dict[str, Any]:
    n_fast = 300 if quick else 3000
    n_proc = 10 if quick else 50
    with tempfile.TemporaryDirectory(prefix="lemming-bench-tools-") as tmp:
        org = _org(Path(tmp))
        runner = ToolRunner(org, "ann", 1, {}, _TOOLS)
        out: dict[str, Any] = {"bench": "tools"}
        times = []
        for _ in range(n_fast):
            t0 = time.perf_counter()
            shown, _ = await runner.run("file_read", {"path": "note.md"})
            times.append((time.perf_counter() - t0) * 1e6)
            assert shown["ok"], shown
        out["file_read_us"] = _median(times)
        times = []
        for i in range(min(n_fast, 200)):
            t0 = time.perf_counter()
            shown, _ = await runner.run("file_write", {"path": f"w/{i}.md", "content": "hello\n"})
            times.append((time.perf_counter() - t0) * 1e6)
        out["file_write_us"] = _median(times)
        times = []
        for _ in range(n_proc):
            t0 = time.perf_counter()
            await run_process(["/bin/true"], cwd=tmp, env={"PATH": "/usr/bin:/bin"}, limits=Limits())
            times.append((time.perf_counter() - t0) * 1e3)
        out["process_ms"] = _median(times)
        if bwrap_path() is None:
            out["error"] = "bubblewrap is not installed (make system-deps)"
            return out
        times = []
        ws = Path(tmp) / "agents" / "ann" / "workspace"
        for _ in range(n_proc):
            t0 = time.perf_counter()
            await run_sandboxed(["/bin/true"], mounts=[Mount(ws, "/workspace", writable=False)], cwd="/workspace", policy=SandboxPolicy())
            times.append((time.perf_counter() - t0) * 1e3)
        out["bwrap_startup_ms"] = _median(times)
        times = []
        runner = ToolRunner(org, "ann", 1, {}, _TOOLS)
        for _ in range(n_proc):
            t0 = time.perf_counter()
            shown, _ = await runner.run("shell", {"command": "echo hi"})
            times.append((time.perf_counter() - t0) * 1e3)
            assert shown["ok"] and shown["result"]["output"] == "hi\n", shown
        out["shell_echo_ms"] = _median(times)
        out["calls"] = n_fast
        return out


def bench_tools(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_measure(quick))
