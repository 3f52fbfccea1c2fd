"""Engine benchmarks: overhead per agent-turn, and concurrency efficiency.

Each function builds a synthetic organisation in a temporary folder, runs the
real engine and returns a dict of figures. `lemming bench` (lemming.tui.bench)
runs each in a fresh process, repeats and prints medians.

Two measures of the engine's own cost per agent-turn, each labelled with its `path`:

* `fixed-reply` — an instant model that streams the same LeMMing-style reply every
  time (no model work at all), through the path every remote provider takes: the
  concurrency limits, the retry loop, the stream (a turn runs eagerly and gets a task
  and a timeout only when its provider has to wait, which this one never does). This is
  the figure the engine answers for (issue 17: <= 50 us/turn persisted at 100 and 1,000
  agents).
* `sim` — the sim at full speed, which composes a reply from its prompt (model work, a
  third of the time). Its stream never waits either, so its turns take the same path.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from lemming.engine.engine import Engine
from lemming.engine.org import load_org
from lemming.engine.providers.registry import ProviderRegistry


def make_bench_org(root: Path, agents: int, *, reads: int = 3, sim: dict[str, Any] | None = None, seed: int = 1) -> Path:
    """`agents` agents on the sim, each reading `reads` random others, with ample credits."""
    rng = random.Random(seed)
    names = [f"a{i:05d}" for i in range(agents)]
    (root / "agents").mkdir(parents=True, exist_ok=True)
    for n in names:
        others = rng.sample([m for m in names if m != n], min(reads, agents - 1))
        d = root / "agents" / n
        d.mkdir(exist_ok=True)
        (d / "resume.json").write_text(
            json.dumps(
                {
                    "name": n,
                    "title": "Worker",
                    "short_description": "A benchmark agent.",
                    "model": {"key": "sim", "max_tokens": 400},
                    "permissions": {"read_outboxes": others, "tools": []},
                    "schedule": {"run_every_n_ticks": 1, "phase_offset": 0},
                    "instructions": "Read, then write one short message.",
                    "credits": {"max_credits": 1e9},
                }
            )
        )
    models = {
        "sim": {
            "provider": "sim",
            "model_name": "sim-1",
            "prices": {"input_per_mtok": 1.0, "output_per_mtok": 4.0},
            "provider_config": {"messages_per_turn": 1, **(sim or {})},
        }
    }
    (root / "models.json").write_text(json.dumps(models))
    (root / "org.json").write_text(json.dumps({"max_concurrency": 10_000, "inbox_context": 2}))
    return root


#: The fixed reply: what a LeMMing agent writes each turn — one message to whoever reads
#: its outbox, one memory update, a note.
FIXED_REPLY = json.dumps(
    {
        "outbox_entries": [{"kind": "message", "payload": {"text": "Status: reviewed the inbox; next I will ship a first cut."}}],
        "memory_updates": [{"op": "set", "key": "last_status", "value": "shipping a first cut"}],
        "notes": "Read the inbox, replied to all.",
    }
)


class FixedReplyModel:
    """An instant model for measuring the engine: streams FIXED_REPLY in one delta and
    bills the prompt's estimated tokens, with nothing awaited in between. Its turns take
    the path of every remote provider (stream, retry loop, concurrency limits); as it
    never waits, they need no task (engine/eager.py)."""

    name = "fixed-reply"

    def __init__(self, reply: str = FIXED_REPLY) -> None:
        from lemming.engine.providers.retry import estimate_tokens

        self.reply = reply
        self._estimate = estimate_tokens
        self._out = estimate_tokens(reply)

    async def stream(self, request: Any) -> Any:
        from lemming.engine.providers.base import TextDelta, Usage

        yield TextDelta(self.reply)
        yield Usage(input_tokens=sum(self._estimate(m.content) for m in request.messages), output_tokens=self._out)

    async def probe(self, model: str, timeout: float = 3.0) -> Any:
        from lemming.engine.providers.base import ProbeResult

        return ProbeResult(True, "fixed reply (benchmark)", 0.0)

    async def aclose(self) -> None:
        return None


class FixedReplyRegistry(ProviderRegistry):
    """Every model key resolves to one FixedReplyModel (prices and limits as models.json says)."""

    def __init__(self, models: Any) -> None:
        super().__init__(models)
        self.model = FixedReplyModel()

    def resolve(self, key: str) -> tuple[Any, Any]:
        return self.model, self.spec(key)


async def _engine_once(root: Path, ticks: int, persist: bool, concurrency: int, fixed: bool = False) -> tuple[float, float, int]:
    org = load_org(root)
    store = None
    recorder = None
    registry = FixedReplyRegistry(org.models) if fixed else ProviderRegistry(org.models)
    engine = Engine(org, seed=1, concurrency=concurrency, registry=registry)
    if persist:
        from lemming.engine.store import RunStore

        store = await RunStore.open(root / ".lemming" / "bench.db")
        await store.create_run(
            run_id=engine.run_id, org_root=root, seed=1, definitions_hash=org.definitions_hash(), target_ticks=ticks + 2
        )
        recorder = store.recorder(engine.run_id, state=engine.state)
        engine.recorder = recorder
    try:
        # Warm up: the first ticks have empty inboxes and cold caches.
        await engine.run(ticks=2)
        t0, c0 = time.perf_counter(), time.process_time()
        await engine.run(ticks=ticks)  # continues from tick 2, as a resumed run does
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
    finally:
        if store is not None:
            await store.close()
    return wall, cpu, ticks * len(org.agents)


def bench_engine(
    agents: int = 1000, ticks: int = 10, persist: bool = True, quick: bool = False, path: str = "sim"
) -> dict[str, Any]:
    """The engine's cost per agent-turn: `path` "sim" (the sim at full speed, its reply
    composed from the prompt) or "fixed-reply" (an instant fixed reply, no model work);
    both streamed as remote providers' replies are. Each agent reads 3 others and fires
    every tick."""
    if path not in ("sim", "fixed-reply"):
        raise ValueError(f"unknown engine path {path!r}")
    if quick:
        agents, ticks = min(agents, 200), min(ticks, 5)
    if path == "fixed-reply":
        ticks = max(ticks, 20_000 // agents)  # enough turns to measure at 100 agents too
        if quick:
            ticks = min(ticks, 10)
    with tempfile.TemporaryDirectory(prefix="lemming-bench-") as tmp:
        root = make_bench_org(Path(tmp), agents)
        wall, cpu, turns = asyncio.run(_engine_once(root, ticks, persist, concurrency=10_000, fixed=path == "fixed-reply"))
    return {
        "bench": "engine",
        "path": path,
        "agents": agents,
        "ticks": ticks,
        "us_per_turn": round(wall / turns * 1e6, 1),
        # CPU time of the process (the store's thread included): steadier on a busy machine
        "cpu_us_per_turn": round(cpu / turns * 1e6, 1),
        "turns_per_s": round(turns / wall, 1),
        "persist": persist,
    }


def bench_concurrency(agents: int = 1000, latency_ms: float = 200, limit: int = 64, ticks: int = 1, quick: bool = False) -> dict[str, Any]:
    """Ideal wall time over measured when every turn waits `latency_ms` (the sim's latency)."""
    if quick:
        agents = min(agents, 256)
    with tempfile.TemporaryDirectory(prefix="lemming-bench-") as tmp:
        root = make_bench_org(Path(tmp), agents, sim={"latency_ms": latency_ms})

        async def go() -> float:
            org = load_org(root)
            engine = Engine(org, seed=1, concurrency=limit, registry=ProviderRegistry(org.models))
            t0 = time.perf_counter()
            await engine.run(ticks=ticks)
            return time.perf_counter() - t0

        wall = asyncio.run(go())
    ideal = ticks * math.ceil(agents / limit) * latency_ms / 1000
    return {
        "bench": "concurrency",
        "agents": agents,
        "latency_ms": latency_ms,
        "limit": limit,
        "wall_s": round(wall, 3),
        "ideal_s": round(ideal, 3),
        "efficiency": round(ideal / wall, 3),
    }


if __name__ == "__main__":
    import sys

    quick = "--quick" in sys.argv
    print(json.dumps(bench_engine(persist=False, quick=quick)))
    print(json.dumps(bench_concurrency(quick=quick)))
