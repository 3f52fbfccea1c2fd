"""Memory over a long run: the process's RSS at ticks 10,000, 50,000 and 100,000.

The organisation is the demo's shape (eight agents, the demo's reading graph and
schedules, one seat that never calls a model) with budgets no agent ever exhausts,
so every agent keeps firing and writing for the whole run: the worst case for what
the engine keeps in memory. The run goes through the sim at full speed and is
recorded in a run store, as `lemming run --headless` does. RSS is read from
/proc after a full collection at each mark; the figure that matters is the growth
between the first mark and the last (goal: under 10 MB).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from lemming.engine.recorded_run import HEADLESS, RecordedRun

#: (name, reads, run_every_n_ticks, phase_offset): the demo organisation's graph and schedules.
DEMO_SHAPE: tuple[tuple[str, list[str], int, int], ...] = (
    ("analyst", ["*"], 2, 1),
    ("ceo", ["manager", "analyst"], 4, 0),
    ("engineer", ["planner", "qa", "manager"], 1, 0),
    ("manager", ["ceo", "planner", "engineer", "qa"], 1, 0),
    ("planner", ["manager", "researcher"], 2, 1),
    ("qa", ["engineer"], 2, 0),
    ("researcher", ["planner"], 3, 2),
)


def make_long_run_org(root: Path) -> Path:
    """The demo's shape with budgets that never run out (and the demo's human seat)."""
    (root / "agents").mkdir(parents=True, exist_ok=True)
    agents = [*DEMO_SHAPE, ("human", ["*"], 999_999, 0)]
    for name, reads, every, offset in agents:
        folder = root / "agents" / name
        folder.mkdir(exist_ok=True)
        (folder / "resume.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "title": name.title(),
                    "short_description": f"The {name}.",
                    "model": {"key": "none" if name == "human" else "sim", "max_tokens": 400},
                    "permissions": {"read_outboxes": reads, "tools": []},
                    "schedule": {"run_every_n_ticks": every, "phase_offset": offset},
                    "instructions": "Read your inbox, then report in one short message.",
                    "credits": {"max_credits": 1e12},
                }
            )
        )
    models = {"sim": {"provider": "sim", "model_name": "sim-1", "prices": {"input_per_mtok": 1.0, "output_per_mtok": 4.0}, "provider_config": {"tokens_per_s": 0}}}
    (root / "models.json").write_text(json.dumps(models))
    (root / "org.json").write_text(json.dumps({"name": "long-run", "inbox_new_limit": 30, "inbox_context": 3}))
    return root


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def _long_run(root: Path, marks: tuple[int, ...]) -> dict[str, Any]:
    run = await RecordedRun.start(root, HEADLESS.replace(seed=1), root / "runs.db")
    rss: dict[str, float] = {}  # mark → MB
    t0 = time.perf_counter()
    async with run:
        for mark in marks:
            reason = await run.engine.run(until_tick=mark)
            if reason != "completed":
                raise RuntimeError(f"the run stopped at tick {run.engine.tick}: {reason}")
            gc.collect()
            rss[str(mark)] = round(_rss_mb(), 1)
    wall = time.perf_counter() - t0
    at = [rss[str(m)] for m in marks]
    return {
        "ticks": marks[-1],
        "marks": list(marks),
        "rss_mb_first": at[0],
        "rss_mb_middle": at[1],
        "rss_mb_last": at[-1],
        "rss_growth_mb": round(at[-1] - at[0], 1),
        "ticks_per_s": round(marks[-1] / wall, 1),
        "db_mb": round((root / "runs.db").stat().st_size / 2**20, 1),
    }


def bench_memory(quick: bool = False) -> dict[str, Any]:
    """RSS at the marks of one long run (quick: 1,000 / 2,000 / 3,000 ticks)."""
    marks = (1_000, 2_000, 3_000) if quick else (10_000, 50_000, 100_000)
    with tempfile.TemporaryDirectory(prefix="lemming-memory-") as tmp:
        return asyncio.run(_long_run(make_long_run_org(Path(tmp)), marks))
