"""Structured output: how many replies cannot be read, without the reply schema and with it.

The same organisation (agents on the sim with `malformed_rate`, the knob that
makes it write what small local models write: prose, cut-off JSON, wrong shapes,
fenced JSON with trailing commas) runs twice on the same seed, once with
models.json `structured_output: false` and once with `true`. Figures per run:
the share of turns lost as contract violations (nothing could be read), the
share that needed repair, and the engine's cost per turn (the schema rides on
every request; it must cost nothing measurable).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from lemming.engine.engine import Engine
from lemming.engine.events import TurnFinished
from lemming.engine.org import load_org
from lemming.engine.reply_schema import reply_schema
from lemming.tui.bench.engine import make_bench_org

MALFORMED_RATE = 0.15


async def _run(root: Path, ticks: int, seed: int) -> dict[str, Any]:
    engine = Engine(load_org(root), seed=seed)
    sub = engine.subscribe(tokens=False)
    t0 = time.perf_counter()
    await engine.run(ticks=ticks)
    wall = time.perf_counter() - t0
    records = [e.record for e in sub.drain() if isinstance(e, TurnFinished)]
    n = len(records) or 1
    return {
        "turns": len(records),
        "contract_rate": sum(r.status == "contract" for r in records) / n,
        "repaired_rate": sum(any(v.startswith("repaired:") for v in r.violations) for r in records) / n,
        # Read, but parts of it rejected (a wrong shape): the turn did less than it meant to.
        "violation_rate": sum(
            r.status == "ok" and any(not v.startswith("repaired:") for v in r.violations) for r in records
        ) / n,
        "schema_sent_rate": sum(r.reply_schema == "sent" for r in records) / n,
        "us_per_turn": wall / n * 1e6,
    }


def bench_structured(*, quick: bool = False, seed: int = 7) -> dict[str, Any]:
    agents, ticks = (20, 10) if quick else (100, 50)
    out: dict[str, Any] = {"bench": "structured", "agents": agents, "ticks": ticks, "malformed_rate": MALFORMED_RATE}
    with tempfile.TemporaryDirectory() as tmp:
        root = make_bench_org(Path(tmp), agents, sim={"malformed_rate": MALFORMED_RATE}, seed=seed)
        models_path = root / "models.json"
        models = json.loads(models_path.read_text())
        for setting, tag in ((False, "off"), (True, "on")):
            models["sim"]["structured_output"] = setting
            models_path.write_text(json.dumps(models))
            figures = asyncio.run(_run(root, ticks, seed))
            out["turns"] = figures.pop("turns")
            out.update({f"{k}_{tag}": v for k, v in figures.items()})
    out["schema_bytes"] = len(json.dumps(reply_schema([]), separators=(",", ":")))
    return out
