"""Benchmark: many concurrent turns through the OpenAI adapter, and through the Engine.

Starts the lean OpenAI-protocol server (lemming.tui.bench.loopback) with a
simulated time to first byte, then

1. runs `turns` concurrent completions through OpenAIProvider + stream_with_retries
   (the SDK, HTTP, SSE parsing and our retry loop), and
2. if the engine is importable, runs an organisation of `turns` agents on that
   server through Engine for a couple of ticks, with a subscriber draining the
   event stream as a UI would.

The ideal wall time of a batch is the server's latency (all turns overlap); what
is above it, divided by the tokens streamed, is the overhead per streamed token.
A benchmark measures; it asserts nothing.  Run: ``python -m lemming.tui.bench.providers``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lemming.engine.providers.base import ChatMessage, CompletionRequest, ProviderConfig
from lemming.engine.providers.openai import OpenAIProvider
from lemming.engine.providers.retry import RetryPolicy, stream_with_retries
from lemming.tui.bench.loopback import REPLY as DEFAULT_REPLY
from lemming.tui.bench.loopback import LoopbackServer


async def _adapter_batch(base_url: str, turns: int, parser: str = "json") -> dict[str, Any]:
    provider = OpenAIProvider(ProviderConfig("openai", base_url, None, {"stream_parser": parser}))
    counts = [0] * turns

    def sink(i: int):
        def on_delta(text: str, restart: bool) -> None:
            counts[i] += 1

        return on_delta

    def request(i: int) -> CompletionRequest:
        return CompletionRequest(
            model="gpt-test",
            messages=[ChatMessage("system", "You are agent %d." % i), ChatMessage("user", "Tick 1. Inbox: empty.")],
            temperature=0.2,
            max_tokens=512,
            timeout=30.0,
        )

    try:
        # Warm up: imports, the connection pool, the server's first accept.
        await stream_with_retries(provider, request(0), lambda t, r: None)
        cpu0, t0 = time.process_time(), time.perf_counter()
        results = await asyncio.gather(
            *(
                stream_with_retries(provider, request(i), sink(i), policy=RetryPolicy(max_attempts=1), rng=random.Random(i))
                for i in range(turns)
            )
        )
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        await provider.aclose()
    failed = [r.errors for r in results if r.error is not None]
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "deltas": sum(counts),
        "output_tokens": sum(r.usage.output_tokens for r in results),
        "failed": len(failed),
        "first_error": failed[0][-1] if failed else None,
    }


def _write_org(root: Path, base_url: str, agents: int, parser: str) -> None:
    (root / "models.json").write_text(
        json.dumps(
            {
                "bench": {
                    "provider": "openai",
                    "model_name": "gpt-test",
                    "base_url": base_url,
                    "prices": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
                    "concurrency": agents,
                    "timeout": 30,
                    "max_attempts": 1,
                    "provider_config": {"stream_parser": parser},
                }
            }
        )
    )
    (root / "org.json").write_text(json.dumps({"name": "bench", "max_concurrency": agents, "default_credits": 1000}))
    for i in range(agents):
        name = f"agent{i:03d}"
        folder = root / "agents" / name
        folder.mkdir(parents=True)
        (folder / "resume.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "title": f"Agent {i}",
                    "instructions": "Report your status to everyone in one message.",
                    "model": {"key": "bench", "max_tokens": 512},
                    "permissions": {"read_outboxes": [f"agent{(i + 1) % agents:03d}"], "tools": []},
                    "schedule": {"run_every_n_ticks": 1, "phase_offset": 0},
                }
            )
        )


async def _engine_batch(base_url: str, agents: int, ticks: int, parser: str = "json") -> dict[str, Any]:
    from lemming.engine.engine import Engine
    from lemming.engine.events import TickCompleted, TokenDelta, TurnFinished
    from lemming.engine.org import load_org
    from lemming.engine.providers.registry import ProviderRegistry

    with tempfile.TemporaryDirectory(prefix="lemming-bench-") as tmp:
        root = Path(tmp)
        _write_org(root, base_url, agents, parser)
        org = load_org(root)
        engine = Engine(org, seed=0, concurrency=agents, registry=ProviderRegistry(org.models, env={}))
        sub = engine.subscribe()
        seen = {"deltas": 0, "events": 0, "turns": 0, "failed": 0, "output_tokens": 0}
        tick_ms: list[float] = []

        async def pump() -> None:
            # A UI-like consumer: wakes up, takes everything queued, counts it.
            while True:
                await sub.wait(0.05)
                batch = sub.drain()
                for ev in batch:
                    seen["events"] += 1
                    if type(ev) is TokenDelta:
                        seen["deltas"] += 1
                    elif type(ev) is TurnFinished:
                        seen["turns"] += 1
                        seen["failed"] += ev.record.status != "ok"
                        seen["output_tokens"] += ev.record.usage.output_tokens
                    elif type(ev) is TickCompleted:
                        tick_ms.append(ev.duration_ms)

        consumer = asyncio.create_task(pump())
        cpu0, t0 = time.process_time(), time.perf_counter()
        try:
            await engine.run(ticks=ticks)
        finally:
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            await asyncio.sleep(0.06)
            consumer.cancel()
    output_tokens = seen["output_tokens"]
    return {
        "ticks": ticks,
        "wall_s": wall,
        "cpu_s": cpu,
        "tick_ms": tick_ms,
        "turns": seen["turns"],
        "failed": seen["failed"],
        "events_seen": seen["events"],
        "delta_events_seen": seen["deltas"],
        "output_tokens": output_tokens,
    }


class _ServerProcess:
    """The OpenAI-protocol server in its own process, so its CPU is not counted as ours."""

    def __init__(self, latency_ms: float) -> None:
        self.latency_ms = latency_ms
        self.proc: asyncio.subprocess.Process | None = None
        self.base_url = ""

    async def __aenter__(self) -> "_ServerProcess":
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lemming.tui.bench.loopback", "openai",
            "--latency-ms", str(self.latency_ms),
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        self.base_url = line.decode().strip()
        if not self.base_url.startswith("http"):
            raise RuntimeError("the benchmark server did not start")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def bench_openai_concurrency(
    turns: int = 200,
    latency_ms: float = 100,
    engine_ticks: int = 2,
    *,
    parsers: tuple[str, ...] = ("json", "sdk"),
    server: str = "process",
) -> dict[str, Any]:
    """Run the benchmark; returns wall times against the ideal and the overhead per streamed token.

    `parsers`: the OpenAI adapter's stream parsers to measure ("json": plain-JSON chunks,
    "sdk": the SDK's typed chunk objects). `server`: "process" (its own process, the
    default) or "thread" (in this process, sharing the GIL: numbers include its CPU).
    """
    latency = latency_ms / 1000.0
    out: dict[str, Any] = {
        "turns": turns,
        "latency_ms": latency_ms,
        "cpus": os.cpu_count(),
        "reply_chars": len(DEFAULT_REPLY),
        "server": server,
        "runs": {},
    }
    if server == "thread":
        ctx: Any = LoopbackServer("openai", latency=latency)
    else:
        ctx = _ServerProcess(latency_ms)
    async with ctx as srv:
        for parser in parsers:
            a = await _adapter_batch(srv.base_url, turns, parser)
            tokens = max(1, a["output_tokens"])
            a["ideal_s"] = latency
            a["over_ideal_s"] = a["wall_s"] - latency
            a["overhead_us_per_token"] = a["over_ideal_s"] / tokens * 1e6
            a["cpu_us_per_token"] = a["cpu_s"] / tokens * 1e6
            e = await _engine_batch(srv.base_url, turns, engine_ticks, parser)
            tokens_e = max(1, e["output_tokens"])
            per_tick = e["wall_s"] / max(1, engine_ticks)
            e["ideal_s"] = latency * engine_ticks
            e["wall_per_tick_s"] = per_tick
            e["overhead_us_per_token"] = (e["wall_s"] - e["ideal_s"]) / tokens_e * 1e6
            # What the engine adds over the bare adapter, per streamed token.
            e["engine_extra_us_per_token"] = (per_tick - a["wall_s"]) / (tokens_e / engine_ticks) * 1e6
            e["cpu_us_per_token"] = e["cpu_s"] / tokens_e * 1e6
            out["runs"][parser] = {"adapter": a, "engine": e}
    return out


def _print(result: dict[str, Any]) -> None:
    print(
        f"{result['turns']} concurrent turns on the local OpenAI-protocol server "
        f"(latency {result['latency_ms']:g} ms, {result['reply_chars']}-char replies in 4-char deltas; "
        f"server in a {result['server']}; {result['cpus']} CPUs)"
    )
    for parser, run in result["runs"].items():
        a, e = run["adapter"], run["engine"]
        print(f"stream_parser={parser}")
        print(
            f"  adapter: wall {a['wall_s'] * 1000:.0f} ms vs ideal {a['ideal_s'] * 1000:.0f} ms; "
            f"{a['output_tokens']} tokens; overhead {a['overhead_us_per_token']:.1f} us/token "
            f"(CPU {a['cpu_us_per_token']:.1f} us/token); failed {a['failed']}"
        )
        ticks_ms = ", ".join(f"{t:.0f}" for t in e["tick_ms"])
        print(
            f"  engine:  {result['turns']} agents x {e['ticks']} ticks: wall {e['wall_s'] * 1000:.0f} ms vs ideal "
            f"{e['ideal_s'] * 1000:.0f} ms (ticks {ticks_ms} ms); {e['output_tokens']} tokens; "
            f"overhead {e['overhead_us_per_token']:.1f} us/token (CPU {e['cpu_us_per_token']:.1f} us/token), "
            f"of which the engine over the bare adapter {e['engine_extra_us_per_token']:.1f} us/token; "
            f"turns {e['turns']} (failed {e['failed']}); a UI saw {e['events_seen']} events "
            f"({e['delta_events_seen']} token-delta batches)"
        )


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--turns", type=int, default=200)
    p.add_argument("--latency-ms", type=float, default=100)
    p.add_argument("--ticks", type=int, default=2)
    p.add_argument("--parser", choices=["json", "sdk", "both"], default="both")
    p.add_argument("--server", choices=["process", "thread"], default="process")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    parsers = ("json", "sdk") if args.parser == "both" else (args.parser,)
    result = asyncio.run(
        bench_openai_concurrency(args.turns, args.latency_ms, args.ticks, parsers=parsers, server=args.server)
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)


if __name__ == "__main__":
    main()
