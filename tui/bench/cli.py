"""Command-line agent benchmark: what a cli turn costs beyond its program's own work.

Eight agents on `echo` (one process per turn: spawn, stream, reap the group) and
eight on a stateful JSON-lines loop (one process per agent for the run, one frame per
turn), each run alone on the real engine for some ticks. Figures: wall milliseconds
per tick and per turn, for each mode.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lemming.engine.engine import Engine
from lemming.engine.org import load_org

AGENTS = 8

_LOOP = """
import json, sys
for line in sys.stdin:
    json.loads(line)
    sys.stdout.write('{"type": "delta", "text": "done"}\\n{"type": "end"}\\n')
    sys.stdout.flush()
"""


def _org(root: Path, model: dict[str, Any]) -> Path:
    for i in range(AGENTS):
        d = root / "agents" / f"c{i}"
        d.mkdir(parents=True)
        (d / "resume.json").write_text(json.dumps({"name": f"c{i}", "model": "tool", "credits": {"max_credits": 1e9}}))
    (root / "models.json").write_text(json.dumps({"tool": model}))
    return root


def _per_tick_ms(root: Path, ticks: int) -> float:
    async def go() -> float:
        engine = Engine(load_org(root))
        await engine.run(ticks=1)  # warm: first spawns, the stateful processes start
        t0 = time.perf_counter()
        await engine.run(ticks=ticks)
        elapsed = time.perf_counter() - t0
        bad = [r for r in engine.state.last_turn.values() if r.status != "ok"]
        if bad:
            raise RuntimeError(f"cli bench turn failed: {bad[0].error}")
        return elapsed * 1000 / ticks

    return asyncio.run(go())


def bench_cli(quick: bool = False) -> dict[str, Any]:
    ticks = 10 if quick else 40
    with tempfile.TemporaryDirectory(prefix="lemming-bench-cli-") as tmp:
        per_turn = _org(Path(tmp) / "per_turn", {"provider": "cli", "provider_config": {"command": ["echo"]}})
        script = Path(tmp) / "loop.py"
        script.write_text(_LOOP)
        stateful = _org(
            Path(tmp) / "stateful",
            {"provider": "cli", "provider_config": {"command": [sys.executable, str(script)], "mode": "stateful"}},
        )
        per_turn_ms = _per_tick_ms(per_turn, ticks)
        stateful_ms = _per_tick_ms(stateful, ticks)
    return {
        "bench": "cli",
        "agents": AGENTS,
        "ticks": ticks,
        "per_turn_tick_ms": round(per_turn_ms, 2),
        "per_turn_turn_ms": round(per_turn_ms / AGENTS, 2),
        "stateful_tick_ms": round(stateful_ms, 2),
        "stateful_turn_ms": round(stateful_ms / AGENTS, 2),
    }
