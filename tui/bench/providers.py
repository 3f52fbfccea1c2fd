"""Benchmark `providers`: a hundred (and a thousand) agents on one model server, through the official SDKs.

For each protocol (OpenAI chat completions, Anthropic messages, Ollama /api/chat) a lean
loopback server (lemming.tui.bench.loopback, in its own process so that its CPU is not
ours) answers every request with the same streamed reply after a fixed latency. Against
it, for N agents:

- ``sdk``: the official SDK alone, N concurrent streams read to the end, on the pooled
  aiohttp transport the adapters use: the floor, what any client built on the SDK costs
  (the OpenAI and Anthropic SDKs build a typed object per chunk; the openai adapter reads
  the chunks as plain JSON and goes below it);
- ``sdk-httpx``: the same on the SDK's default httpx transport, what the adapters used
  before;
- ``engine``: `lemming run --headless` in this process: an organisation of N agents
  calling that model every tick, SDK + engine + store (a real run database), with a
  subscriber draining the event stream as the control room does;
- ``engine+workers``: the same with ``provider_workers`` in org.json, the SDK clients in
  worker processes.

Each line gives the wall time per tick (per batch, for the SDK alone) against the ideal
(the server's latency: every call overlaps), and CPU per call in this process and in the
workers; the time our processes waited for a CPU per tick (Linux schedstat: on a
shared machine, what other jobs took from the wall), and the loopback server's CPU per
request, which must stay small. A tick's first run is a warm-up (worker start, connections, imports) and is not
counted. A benchmark measures; it asserts nothing.

Run: ``lemming bench providers`` or ``python -m lemming.tui.bench.providers --agents 100``.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lemming.tui.bench.loopback import PATHS

PROTOCOLS = tuple(PATHS)
#: The loopback servers check no key; anthropic's adapter insists on one being set.
KEY_ENV = "LEMMING_BENCH_KEY"
MODEL = {"openai": "bench-model", "anthropic": "bench-model", "ollama": "bench-model"}
MESSAGES = [
    {"role": "system", "content": "You are agent 7 of a benchmark organisation. Reply with JSON."},
    {"role": "user", "content": "Tick 1. Inbox: nothing new."},
]


def _cpu() -> float:
    """CPU seconds of this process (all threads)."""
    return time.process_time()


def _waited(pid: int | str = "self") -> float:
    """Seconds the threads of a process have spent runnable but waiting for a CPU (Linux
    schedstat): on a shared machine, the part of a wall time that other jobs took."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    except OSError:
        return 0.0
    return total / 1e9


def _proc_cpu(pid: int) -> float:
    """CPU seconds a live process has used (Linux /proc); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class ServerProcess:
    """A loopback server of one protocol in its own process."""

    def __init__(self, protocol: str, latency_ms: float) -> None:
        self.protocol = protocol
        self.latency_ms = latency_ms
        self.proc: asyncio.subprocess.Process | None = None
        self.base_url = ""

    async def __aenter__(self) -> "ServerProcess":
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lemming.tui.bench.loopback", self.protocol, "--latency-ms", str(self.latency_ms),
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        self.base_url = line.decode().strip()
        if not self.base_url.startswith("http"):
            raise RuntimeError(f"the {self.protocol} benchmark server did not start")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# --- the SDK alone ---------------------------------------------------------------------


def _sdk_call(protocol: str, base_url: str, n: int, transport: str) -> tuple[Any, Any]:
    """(client, one_call) for the official SDK of `protocol`, its pool sized to n."""
    if protocol == "openai":
        import openai

        from lemming.engine.providers.transport import sdk_http_client

        client = openai.AsyncOpenAI(
            api_key="bench", base_url=base_url, max_retries=0, http_client=sdk_http_client(openai, transport, n, 60.0)
        )

        async def call() -> None:
            stream = await client.chat.completions.create(
                model=MODEL[protocol], messages=MESSAGES, stream=True, stream_options={"include_usage": True}  # type: ignore[arg-type]
            )
            async for _ in stream:
                pass

        return client, call
    if protocol == "anthropic":
        import anthropic

        from lemming.engine.providers.transport import sdk_http_client

        aclient = anthropic.AsyncAnthropic(
            api_key="bench", base_url=base_url, max_retries=0, http_client=sdk_http_client(anthropic, transport, n, 60.0)
        )

        async def call() -> None:
            stream = await aclient.messages.create(
                model=MODEL[protocol], max_tokens=512, stream=True,
                system=MESSAGES[0]["content"], messages=[MESSAGES[1]],  # type: ignore[list-item]
            )
            async for _ in stream:
                pass

        return aclient, call
    import httpx
    import ollama

    from lemming.engine.providers.transport import httpx_aiohttp_transport

    pooled: dict[str, Any] = (
        {"transport": httpx_aiohttp_transport(n)} if transport == "aiohttp"
        else {"limits": httpx.Limits(max_connections=n, max_keepalive_connections=n)}
    )
    oclient = ollama.AsyncClient(host=base_url, timeout=60.0, **pooled)

    async def call() -> None:
        async for chunk in await oclient.chat(model=MODEL[protocol], messages=MESSAGES, stream=True):
            if chunk.done:
                break

    return oclient, call


async def sdk_alone(protocol: str, base_url: str, agents: int, latency: float, batches: int, transport: str = "aiohttp", server_pid: int | None = None) -> dict[str, Any]:
    """N concurrent streams through the bare SDK, `batches` times after a warm-up batch."""
    client, call = _sdk_call(protocol, base_url, agents, transport)
    try:
        await asyncio.gather(*(call() for _ in range(agents)))  # warm-up: imports, the pool's sockets
        walls = []
        cpu0, wait0, srv0 = _cpu(), _waited(), _proc_cpu(server_pid) if server_pid else 0.0
        for _ in range(batches):
            t0 = time.perf_counter()
            await asyncio.gather(*(call() for _ in range(agents)))
            walls.append(time.perf_counter() - t0)
        cpu, waited = _cpu() - cpu0, _waited() - wait0
        server = _proc_cpu(server_pid) - srv0 if server_pid else None
    finally:
        close = getattr(client, "close", None)
        await (close() if close is not None else client._client.aclose())
    line = _line(protocol, "sdk" if transport == "aiohttp" else f"sdk-{transport}", agents, latency, walls, cpu, 0.0, agents * batches, 0, None)
    return _extra(line, agents * batches, len(walls), waited, 0.0, server)


def _extra(line: dict[str, Any], calls: int, ticks: int, waited: float, workers_waited: float, server_cpu: float | None) -> dict[str, Any]:
    """The shared machine's share: time our processes waited for a CPU per tick, and the
    loopback server's CPU per request (it must stay small: it is not what is measured)."""
    line["waited_s_per_tick"] = round(waited / max(1, ticks), 3)
    if "worker_cpu_ms_per_call" in line:
        line["workers_waited_s_per_tick"] = round(workers_waited / max(1, ticks), 3)
    if server_cpu is not None:
        line["server_cpu_ms_per_request"] = round(server_cpu / max(1, calls) * 1000, 3)
    return line


# --- the engine ------------------------------------------------------------------------


def write_org(root: Path, protocol: str, base_url: str, agents: int, workers: int | str) -> None:
    """An organisation of `agents` agents on one model of `protocol` at `base_url`."""
    (root / "models.json").write_text(
        json.dumps(
            {
                "bench": {
                    "provider": protocol,
                    "model_name": MODEL[protocol],
                    "base_url": base_url,
                    "api_key_env": KEY_ENV,
                    "prices": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
                    "concurrency": agents,
                    "timeout": 60,
                    "max_attempts": 1,
                }
            }
        )
    )
    (root / "org.json").write_text(
        json.dumps({"name": "bench", "max_concurrency": agents, "default_credits": 1e9, "provider_workers": workers})
    )
    for i in range(agents):
        name = f"agent{i:04d}"
        folder = root / "agents" / name
        folder.mkdir(parents=True)
        (folder / "resume.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "title": f"Agent {i}",
                    "instructions": "Report your status to everyone in one message.",
                    "model": {"key": "bench", "max_tokens": 512},
                    "permissions": {"read_outboxes": [f"agent{(i + 1) % agents:04d}"], "tools": []},
                    "schedule": {"run_every_n_ticks": 1, "phase_offset": 0},
                }
            )
        )


async def engine_run(protocol: str, base_url: str, agents: int, latency: float, ticks: int, workers: int, server_pid: int | None = None) -> dict[str, Any]:
    """`lemming run --headless` on an organisation of `agents` agents: 1 warm-up tick, then `ticks`."""
    from lemming.engine.events import TickCompleted, TurnFinished
    from lemming.engine.recorded_run import RecordedRun, build_engine

    with tempfile.TemporaryDirectory(prefix="lemming-bench-providers-") as tmp:
        root = Path(tmp)
        write_org(root, protocol, base_url, agents, workers)
        engine = build_engine(root)
        run = await RecordedRun.record(engine, root / "runs.db", target_ticks=ticks + 1)
        sub = engine.subscribe()
        tick_s: list[float] = []
        marks: list[tuple[float, float, int, float, float, float]] = []  # (our CPU, workers' CPU, turns, our wait, workers' wait, server CPU) at each tick's end
        seen = {"turns": 0, "failed": 0}
        first_error: list[str] = []

        def workers_cpu() -> float:
            pool = getattr(engine.registry, "_pool", None)
            return sum(_proc_cpu(pid) for pid in pool.pids()) if pool is not None else 0.0

        def workers_waited() -> float:
            pool = getattr(engine.registry, "_pool", None)
            return sum(_waited(pid) for pid in pool.pids()) if pool is not None else 0.0

        async def pump() -> None:
            while True:
                await sub.wait(0.05)
                for ev in sub.drain():
                    if type(ev) is TurnFinished:
                        seen["turns"] += 1
                        if ev.record.status != "ok":
                            seen["failed"] += 1
                            if not first_error:
                                first_error.append(str(getattr(ev.record, "error", ev.record.status)))
                    elif type(ev) is TickCompleted:
                        tick_s.append(ev.duration_ms / 1000)
                        marks.append((
                            _cpu(), workers_cpu(), seen["turns"], _waited(), workers_waited(),
                            _proc_cpu(server_pid) if server_pid else 0.0,
                        ))

        consumer = asyncio.create_task(pump())
        try:
            async with run:
                await engine.run(ticks=ticks + 1)
                await asyncio.sleep(0.06)
        finally:
            consumer.cancel()
    if len(marks) < 2:
        return {**_line(protocol, "engine" + ("+workers" if workers else ""), agents, latency, [], 0.0, 0.0, 0, seen["failed"], None), "error": "fewer than two ticks completed"}
    (c0, w0, n0, q0, wq0, s0), (c1, w1, n1, q1, wq1, s1) = marks[0], marks[-1]
    line = _line(
        protocol, "engine" + ("+workers" if workers else ""), agents, latency, tick_s[1:], c1 - c0, w1 - w0, n1 - n0,
        seen["failed"], first_error[0] if first_error else None,
    )
    line["workers"] = workers
    # The workers' wait is per worker (they run side by side).
    return _extra(line, n1 - n0, len(marks) - 1, q1 - q0, (wq1 - wq0) / max(1, workers), s1 - s0 if server_pid else None)


def _line(protocol: str, path: str, agents: int, latency: float, walls: list[float], cpu: float, worker_cpu: float, calls: int, failed: int, first_error: str | None) -> dict[str, Any]:
    wall = sum(walls) / len(walls) if walls else float("nan")
    out: dict[str, Any] = {
        "bench": "providers",
        "label": f"{protocol} ×{agents} {path}",
        "protocol": protocol,
        "path": path,
        "agents": agents,
        "latency_ms": round(latency * 1000),
        "wall_per_tick_s": round(wall, 3),
        "ideal_s": round(latency, 3),
        "efficiency": round(latency / wall, 3) if walls else 0.0,
        "cpu_ms_per_call": round(cpu / max(1, calls) * 1000, 2),
        "failed": failed,
    }
    if path.endswith("+workers"):
        out["worker_cpu_ms_per_call"] = round(worker_cpu / max(1, calls) * 1000, 2)
    if first_error:
        out["first_error"] = first_error[:200]
    return out


# --- the whole benchmark -----------------------------------------------------------------


async def bench_providers_async(
    agents: tuple[int, ...] = (100, 1000),
    protocols: tuple[str, ...] = PROTOCOLS,
    latency_ms: float = 250,
    ticks: int = 3,
    workers: int | None = None,
    paths: tuple[str, ...] = ("sdk", "sdk-httpx", "engine", "engine+workers"),
) -> list[dict[str, Any]]:
    from lemming.engine.providers.workers import default_workers

    nworkers = workers if workers is not None else max(1, default_workers())
    os.environ.setdefault(KEY_ENV, "bench-key")
    latency = latency_ms / 1000
    lines = []
    for protocol in protocols:
        async with ServerProcess(protocol, latency_ms) as srv:
            for n in agents:
                pid = srv.proc.pid if srv.proc is not None else None
                if "sdk" in paths:
                    lines.append(await sdk_alone(protocol, srv.base_url, n, latency, ticks, server_pid=pid))
                if "sdk-httpx" in paths:
                    # The SDK on httpx, its default: what the adapters used before.
                    lines.append(await sdk_alone(protocol, srv.base_url, n, latency, ticks, transport="httpx", server_pid=pid))
                if "engine" in paths:
                    lines.append(await engine_run(protocol, srv.base_url, n, latency, ticks, 0, server_pid=pid))
                if "engine+workers" in paths:
                    lines.append(await engine_run(protocol, srv.base_url, n, latency, ticks, nworkers, server_pid=pid))
    return lines


def bench_providers(quick: bool = False) -> list[dict[str, Any]]:
    """`lemming bench providers`: 100 and 1,000 agents on each protocol (--quick: 50 agents, one tick)."""
    _raise_fd_limit()
    if quick:
        return asyncio.run(bench_providers_async(agents=(50,), ticks=1, paths=("sdk", "engine", "engine+workers")))
    return asyncio.run(bench_providers_async())


def _raise_fd_limit() -> None:
    """A thousand agents hold a thousand sockets (and the server as many): lift the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def format_line(r: dict[str, Any]) -> str:
    workers = f", workers {r['worker_cpu_ms_per_call']:.2f} ms/call ({r['workers']} processes)" if "worker_cpu_ms_per_call" in r else ""
    waited = f"; waited for a CPU {r['waited_s_per_tick']:.3f} s/tick" if "waited_s_per_tick" in r else ""
    if "workers_waited_s_per_tick" in r:
        waited += f" (each worker {r['workers_waited_s_per_tick']:.3f})"
    server = f"; server {r['server_cpu_ms_per_request']:.2f} ms/request" if "server_cpu_ms_per_request" in r else ""
    err = f"  first error: {r['first_error']}" if r.get("first_error") else ""
    return (
        f"{r['label']:<32} wall/tick {r['wall_per_tick_s']:.3f} s vs ideal {r['ideal_s']:.3f} s "
        f"(efficiency {r['efficiency']:.2f}); CPU here {r['cpu_ms_per_call']:.2f} ms/call{workers}{waited}{server}; failed {r['failed']}{err}"
    )


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m lemming.tui.bench.providers", description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--protocol", choices=PROTOCOLS, nargs="+", default=list(PROTOCOLS))
    p.add_argument("--latency-ms", type=float, default=250)
    p.add_argument("--ticks", type=int, default=3, help="measured ticks (batches), after one warm-up")
    p.add_argument("--workers", type=int, default=None, help="provider_workers for engine+workers (default: what \"auto\" gives, one per core, at least 1)")
    every = ["sdk", "sdk-httpx", "engine", "engine+workers"]
    p.add_argument("--path", choices=every, nargs="+", default=every)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    _raise_fd_limit()
    lines = asyncio.run(
        bench_providers_async(tuple(args.agents), tuple(args.protocol), args.latency_ms, args.ticks, args.workers, tuple(args.path))
    )
    for line in lines:
        print(json.dumps(line) if args.json else format_line(line), flush=True)


if __name__ == "__main__":
    main()
