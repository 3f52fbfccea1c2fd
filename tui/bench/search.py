"""Benchmark of find in a run: searching a run of 10,000 ticks × 100 agents.

`python -m lemming.tui.bench.search [--quick]` prints one JSON object; `lemming bench
search` runs it in its own process.

The run is the store benchmark's long run (a real 100-agent sim run's ticks repeated
through the real recorder, so the index is filled as a real run fills it; `--quick`:
300 ticks). Figures:

* search_ms_p50 / search_ms_p95 — one search, as `lemming search` and the control
  room's `/` make it (the first 200 hits oldest first and the count), over a mix of
  queries: a word said in most messages, two words, a prefix, a phrase, one agent's
  words, a word said nowhere; each repeated, the store open (warm).
* search_ms_first — the first search after opening the file (cold caches).
* index_mb — the index's share of the file; messages — messages indexed.
* catch_up_s — indexing the whole run from scratch, as the first search of a run
  recorded before the index existed does (measured on the quick size, 100 ticks, or on the full
  run with --full-catch-up: it decodes every batch).
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lemming.engine.store import RunStore
from lemming.engine.store.search import SearchIndex, indexed_rows
from lemming.tui.bench.store import _long_run, _p

QUERIES = ("spec", "measure spec", "summ*", '"the test run"', "nothingsaidlikethis")


async def _searches(db: Path, run_id: str, quick: bool) -> dict[str, Any]:
    store = await RunStore.open(db, readonly=True)
    try:
        idx = SearchIndex(store)
        t0 = time.perf_counter()
        first = await idx.search(run_id, "spec")
        first_ms = (time.perf_counter() - t0) * 1000
        agents = sorted({h.agent for h in first.hits}) or [None]
        rng = random.Random(3)
        times: list[float] = []
        totals: dict[str, int] = {}
        for i in range(4 if quick else 10):
            for q in QUERIES + ("@agent",):
                agent = None
                if q == "@agent":
                    q, agent = "spec", rng.choice(agents)
                t0 = time.perf_counter()
                res = await idx.search(run_id, q, agent=agent)
                times.append((time.perf_counter() - t0) * 1000)
                totals[q if agent is None else f"{q} @{agent}"] = res.total
        indexed = await store.db.call(indexed_rows)
        pages = await store.db.all("SELECT name, sum(pgsize) FROM dbstat WHERE name LIKE 'search_fts%' GROUP BY name") \
            if await _has_dbstat(store) else []
    finally:
        await store.close()
    return {
        "search_ms_first": round(first_ms, 1),
        "search_ms_p50": round(_p(times, 0.5), 1),
        "search_ms_p95": round(_p(times, 0.95), 1),
        "searches": len(times),
        "indexed_rows": indexed,
        "index_mb": round(sum(b for _, b in pages) / 1e6, 1) if pages else None,
        "hits_total_spec": totals.get("spec"),
    }


async def _has_dbstat(store: RunStore) -> bool:
    try:
        await store.db.one("SELECT 1 FROM dbstat LIMIT 1")
        return True
    except Exception:
        return False


async def _catch_up(db: Path, run_id: str) -> dict[str, Any]:
    with sqlite3.connect(db) as c:
        c.execute("DROP TABLE search_fts")  # contentless: rebuilt by the writer's opening, below
        c.execute("DELETE FROM search_upto")
    store = await RunStore.open(db)
    try:
        t0 = time.perf_counter()
        n = await SearchIndex(store).catch_up(run_id)
        return {"catch_up_s": round(time.perf_counter() - t0, 2), "catch_up_batches": n}
    finally:
        await store.close()


async def bench_search(quick: bool = False, full_catch_up: bool = False) -> dict[str, Any]:
    """Every search figure in one dict (see the module docstring)."""
    out: dict[str, Any] = {"bench": "search", "quick": quick}
    with tempfile.TemporaryDirectory(prefix="lemming-bench-search-") as tmpname:
        tmp = Path(tmpname)
        ticks = 100 if quick else 10_000
        db, run_id, info = await _long_run(tmp, ticks)
        out["ticks"], out["agents"] = info["long_ticks"], info["long_agents"]
        out["build_events_per_s"] = info["events_per_s_sustained"]
        out.update(await _searches(db, run_id, quick))
        if quick or full_catch_up:
            out.update(await _catch_up(db, run_id))
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(json.dumps(asyncio.run(bench_search(quick="--quick" in argv, full_catch_up="--full-catch-up" in argv))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
