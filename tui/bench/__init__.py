"""The benchmarks behind `lemming bench`: the engine, the store, the UI and replay.

Each benchmark runs in a fresh Python process (`python -m lemming.tui.bench --one NAME`),
so that one's memory, caches and threads never colour another's figures. It is
warmed up and repeated; the table shows medians with min–max, and `--json`
prints one object per benchmark per line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable


#: name → (what it measures, the figures to beat as text, keys that are figures)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "engine": (
        "engine cost per agent-turn: fixed-reply model (remote providers' path) at 100 and 1,000 agents;"
        " the sim at full speed (the same path; its reply composition is model work) at 1,000",
        "fixed-reply ≤ 50 µs/turn with persistence",
    ),
    "concurrency": ("ideal / measured wall time, every turn waiting 200 ms", "efficiency ≥ 0.95"),
    "store": ("write rate (search index filled as a run fills it; and without), bytes per turn, rebuilding a random tick of 10,000 × 100", "≥ 200,000 events/s; ≤ 1 KB/turn; seek p95 < 50 ms"),
    "ui": ("control room under a token storm (100 agents × 50 tokens/s)", "lag p95 < 100 ms; flat memory"),
    "attach": ("an attached control room under the storm of `ui`, beside the embedded one; a served run's tick with 0 and 4 clients", "lag p95 near the embedded one's; serving overhead small"),
    "replay": ("opening a 10,000 × 100 run and moving the cursor", "step p95 < 50 ms"),
    "startup": ("`lemming` to its first full screen", "first paint < 1 s"),
    "providers": (
        "100 and 1,000 agents through each protocol's official SDK to a loopback server answering in 250 ms",
        "openai ×100 engine ≤ 0.5 s/tick",
    ),
    "search": ("find in a run: searching a 10,000 × 100 run (first 200 hits and the count)", "search p95 < 200 ms"),
    "graph": ("the message graph: layout of 40 and 100 agents, drawing 40 in a 70 × 20 pane", "layout (40) < 100 ms; draw < 20 ms"),
    "memory": ("RSS at ticks 10k, 50k, 100k of a demo-shaped run that never goes broke", "growth < 10 MB from the first mark to the last"),
    "tools": ("a tool call: file_read, file_write, sandboxed shell `echo`, bubblewrap alone", "file_read ≤ 200 µs; shell ≤ 100 ms"),
    "structured": ("unreadable replies of the sim at malformed_rate 0.15, reply schema off / on", "contract rate with the schema = 0"),
    "cli": ("8 command-line agents: per turn (`echo`) and stateful (JSON lines)", "per turn ≤ 10 ms/turn of overhead; stateful ≤ 5 ms/turn"),
    "mcp": ("one MCP tool call through the run's hub (mcp-server-time over stdio); the demo's first tick", "call p50 a few ms; start-up once per run, not before the first tick"),
}

FIGURE_KEYS = {
    "engine": ["us_per_turn", "cpu_us_per_turn", "turns_per_s"],
    "concurrency": ["efficiency", "wall_s", "ideal_s"],
    "store": ["events_per_s", "events_per_s_cpu", "events_per_s_no_search", "bytes_per_turn", "bytes_per_turn_besides_reply", "seek_ms_p95", "seek_ms_p95_no_snapshots"],
    "ui": ["lag_ms_p50", "lag_ms_p95", "cpu_share", "rss_growth_mb"],
    "attach": ["lag_ms_p50", "lag_ms_p95", "embedded_lag_ms_p50", "embedded_lag_ms_p95", "ms_per_tick_0", "ms_per_tick_n", "serving_overhead"],
    "replay": ["open_ms", "step_ms_p95", "step_back_ms_p95", "page_ms_p95", "jump_ms_p95"],
    "startup": ["first_paint_ms"],
    "providers": ["wall_per_tick_s", "ideal_s", "cpu_ms_per_call", "worker_cpu_ms_per_call", "failed"],
    "search": ["search_ms_p50", "search_ms_p95", "search_ms_first", "index_mb"],
    "graph": ["layout_ms_40", "layout_ms_100", "draw_ms_40"],
    "memory": ["rss_mb_first", "rss_mb_middle", "rss_mb_last", "rss_growth_mb", "ticks_per_s"],
    "tools": ["file_read_us", "file_write_us", "shell_echo_ms", "bwrap_startup_ms", "process_ms"],
    "structured": ["contract_rate_off", "contract_rate_on", "repaired_rate_off", "repaired_rate_on", "us_per_turn_off", "us_per_turn_on"],
    "cli": ["per_turn_tick_ms", "per_turn_turn_ms", "stateful_tick_ms", "stateful_turn_ms"],
    "mcp": ["call_ms_p50", "call_ms_p95", "start_s", "first_tick_s", "first_tick_wait_s"],
}


def _run_one(name: str, quick: bool, profile: str | None = None) -> list[dict[str, Any]]:
    """Run one benchmark in this process; return its result lines."""
    if name == "engine":
        from lemming.tui.bench.engine import bench_engine

        return [
            bench_engine(agents=100, persist=True, quick=quick, path="fixed-reply"),
            bench_engine(agents=1000, persist=True, quick=quick, path="fixed-reply"),
            bench_engine(persist=True, quick=quick),
            bench_engine(persist=False, quick=quick),
        ]
    if name == "concurrency":
        from lemming.tui.bench.engine import bench_concurrency

        return [bench_concurrency(quick=quick)]
    if name == "store":
        import asyncio

        from lemming.tui.bench.store import bench_store

        return [{"bench": "store", **asyncio.run(bench_store(quick=quick))}]
    if name == "ui":
        from lemming.tui.bench.ui import bench_ui

        return [{"bench": "ui", **bench_ui(seconds=8 if quick else 30)}]
    if name == "attach":
        from lemming.tui.bench.attach import bench_attach

        return [{"bench": "attach", **bench_attach(quick=quick)}]
    if name == "replay":
        from lemming.tui.bench.replay import bench_replay

        return [{"bench": "replay", **bench_replay(quick=quick)}]
    if name == "search":
        import asyncio

        from lemming.tui.bench.search import bench_search

        return [asyncio.run(bench_search(quick=quick))]
    if name == "graph":
        from lemming.tui.bench.graph import bench_graph

        return [bench_graph(quick=quick)]
    if name == "memory":
        from lemming.tui.bench.memory import bench_memory

        return [{"bench": "memory", **bench_memory(quick=quick)}]
    if name == "tools":
        from lemming.tui.bench.tools import bench_tools

        return [bench_tools(quick=quick)]
    if name == "providers":
        from lemming.tui.bench.providers import bench_providers

        return bench_providers(quick=quick)
    if name == "structured":
        from lemming.tui.bench.structured import bench_structured

        return [bench_structured(quick=quick)]
    if name == "cli":
        from lemming.tui.bench.cli import bench_cli

        return [bench_cli(quick=quick)]
    if name == "mcp":
        from lemming.tui.bench.mcp import bench_mcp

        return [{"bench": "mcp", **bench_mcp(quick=quick)}]
    if name == "startup":
        return [{"bench": "startup", **bench_startup(profile=profile and os.path.join(profile, "startup"))}]
    raise ValueError(f"unknown benchmark {name!r}")


def bench_startup(timeout: float = 20.0, profile: str | None = None) -> dict[str, Any]:
    """Time from starting `lemming` (in a pseudo-terminal) to its first full screen.

    With `profile` (a path without suffix), the child runs under pyinstrument and writes
    profile.txt / profile.html when the parent stops it after the first paint."""
    import pty
    import select
    import tempfile

    from lemming.tui.bench.engine import make_bench_org

    with tempfile.TemporaryDirectory(prefix="lemming-startup-") as tmp:
        from pathlib import Path

        make_bench_org(Path(tmp), 8)
        pid, fd = pty.fork()
        if pid == 0:  # the child: exec lemming in a 120×40 terminal
            os.environ.update({"LINES": "40", "COLUMNS": "120", "TERM": "xterm-256color"})
            argv = ["tui", "--org", tmp, "--paused", "--no-record", "--no-watch"]
            if profile:
                os.execv(sys.executable, [sys.executable, "-m", "lemming.tui.bench", "--startup-child", profile, *argv])
            os.execv(sys.executable, [sys.executable, "-m", "lemming.tui.cli", *argv])
        import fcntl
        import struct
        import termios

        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        t0 = time.perf_counter()
        seen = b""
        painted = None
        try:
            while time.perf_counter() - t0 < timeout:
                r, _, _ = select.select([fd], [], [], 0.05)
                if r:
                    try:
                        chunk = os.read(fd, 65536)
                    except OSError:
                        break
                    if not chunk:
                        break
                    seen += chunk
                    # The header's mode word and the footer's keys are on screen: a full frame.
                    if b"PAUSED" in seen and b"quit" in seen.lower():
                        painted = time.perf_counter() - t0
                        break
        finally:
            _stop_child(pid, fd, graceful=bool(profile))
            os.close(fd)
    if painted is None:
        return {"first_paint_ms": None, "error": "no full screen within the timeout"}
    return {"first_paint_ms": round(painted * 1000, 1)}


def _stop_child(pid: int, fd: int, graceful: bool) -> None:
    """SIGKILL the child; a profiled child gets SIGTERM first and up to 10 s to write its profile."""
    import signal

    if graceful:
        os.kill(pid, signal.SIGTERM)
        deadline = time.perf_counter() + 10
        while time.perf_counter() < deadline:
            try:
                os.read(fd, 65536)  # keep the pty drained so the child never blocks writing
            except OSError:
                pass
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
            time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


def _startup_child(profile: str, argv: list[str]) -> None:
    """Run `lemming ARGV` under pyinstrument; on SIGTERM write the profile and exit."""
    import signal

    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()

    def write_and_exit(signum: int, frame: Any) -> None:
        profiler.stop()
        with open(profile + ".txt", "w", encoding="utf-8") as f:
            f.write(profiler.output_text(unicode=True, color=False))
        with open(profile + ".html", "w", encoding="utf-8") as f:
            f.write(profiler.output_html())
        os._exit(0)

    signal.signal(signal.SIGTERM, write_and_exit)
    import runpy

    # The `lemming` command itself, as `python -m lemming.tui.cli ARGV` would run it.
    sys.argv = ["lemming", *argv]
    runpy.run_module("lemming.tui.cli", run_name="__main__")


def _subprocess_one(name: str, quick: bool, profile: str | None = None) -> list[dict[str, Any]]:
    cmd = [sys.executable, "-m", "lemming.tui.bench", "--one", name] + (["--quick"] if quick else [])
    if profile:
        cmd += ["--profile", profile]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        return [{"bench": name, "error": tail}]
    return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


def _summarise(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Median of each numeric figure over repeats, with min and max beside it."""
    out = []
    for lines in zip(*runs):
        base = dict(lines[0])
        for k, v in lines[0].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("agents", "ticks", "limit", "latency_ms", "tokens_per_s"):
                vals = [ln[k] for ln in lines if isinstance(ln.get(k), (int, float))]
                if len(vals) == len(lines):
                    base[k] = round(statistics.median(vals), 3)
                    if len(vals) > 1:
                        base.setdefault("range", {})[k] = [round(min(vals), 3), round(max(vals), 3)]
        base["repeats"] = len(lines)
        out.append(base)
    return out


def run_benchmarks(
    names: list[str],
    quick: bool,
    as_json: bool,
    repeats: int | None = None,
    on_line: Callable[[dict], None] | None = None,
    profile: str | None = None,
) -> list[dict[str, Any]]:
    repeats = repeats or (1 if quick or profile else 3)
    results: list[dict[str, Any]] = []
    for name in names:
        runs = []
        for _ in range(1 if name in ("ui", "attach", "store", "replay", "memory", "providers", "search") and not quick else repeats):
            lines = _subprocess_one(name, quick, profile)
            runs.append(lines)
            if any("error" in ln for ln in lines):
                break
        summary = _summarise(runs) if all(len(r) == len(runs[0]) for r in runs) else runs[0]
        for line in summary:
            if quick:
                line["quick"] = True
            results.append(line)
            if on_line:
                on_line(line)
    return results


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--startup-child":
        _startup_child(sys.argv[2], sys.argv[3:])
        return 0
    ap = argparse.ArgumentParser(prog="python -m lemming.tui.bench")
    ap.add_argument("--one", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", metavar="DIR", default=None)
    a = ap.parse_args()
    profiler = None
    if a.profile and a.one != "startup":  # startup profiles its own child process
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
        profiler.start()
    lines = _run_one(a.one, a.quick, a.profile)
    if profiler is not None:
        profiler.stop()
        base = os.path.join(a.profile, a.one)
        with open(base + ".txt", "w", encoding="utf-8") as f:
            f.write(profiler.output_text(unicode=True, color=False, show_all=False))
        with open(base + ".html", "w", encoding="utf-8") as f:
            f.write(profiler.output_html())
    if a.profile:
        for line in lines:
            line["profiled"] = True
    for line in lines:
        print(json.dumps(line, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
