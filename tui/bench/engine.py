"""Engine benchmarks: overhead per agent-turn, and concurrency efficiency.

Each function builds a synthetic organisation in a temporary folder, runs the
real engine on the sim provider and returns a dict of figures. `lemming bench`
(lemming.tui.bench) runs each in a fresh process, repeats and prints medians.
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


async def _engine_once(root: Path, ticks: int, persist: bool, concurrency: int) -> tuple[float, int]:
    org = load_org(root)
    store = None
    recorder = None
    engine = Engine(org, seed=1, concurrency=concurrency, registry=ProviderRegistry(org.models))
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
        t0 = time.perf_counter()
        await engine.run(ticks=ticks)  # continues from tick 2, as a resumed run does
        wall = time.perf_counter() - t0
    finally:
        if store is not None:
            await store.close()
    return wall, ticks * len(org.agents)


def bench_engine(agents: int = 1000, ticks: int = 10, persist: bool = True, quick: bool = False) -> dict[str, Any]:
    """The engine's own overhead per agent-turn on the sim at full speed."""
    if quick:
        agents, ticks = min(agents, 200), min(ticks, 5)
    with tempfile.TemporaryDirectory(prefix="lemming-bench-") as tmp:
        root = make_bench_org(Path(tmp), agents)
        wall, turns = asyncio.run(_engine_once(root, ticks, persist, concurrency=10_000))
    return {
        "bench": "engine",
        "agents": agents,
        "ticks": ticks,
        "us_per_turn": round(wall / turns * 1e6, 1),
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
