"""Benchmarks of the run store: write rate, size per turn, and seeking in a long run.

`python -m lemming.tui.bench.store [--quick]` prints one JSON object; `lemming bench`
calls `bench_store()`.

* events_per_s — the store's write rate: the events of a real 100-agent sim run
  (recorded in memory first) written through a RunRecorder, one transaction per
  tick, into a fresh file, the search index filled as a run fills it (wall clock;
  events_per_s_cpu: per second of the process's CPU time, steadier on a busy machine).
  events_per_s_no_search / events_per_s_cpu_no_search: the same with the recorder's
  indexing off (`recorder(..., index=False)`), what the index costs.
* bytes_per_turn — the file's size per agent-turn for that run, and the same
  without the reply text (bytes_per_turn_besides_reply).
* events_per_s_1000_agents — events recorded per second of wall time during a
  headless sim run of 1,000 agents (the engine's pace, with the store writing).
* seek_ms_* — rebuilding the state at random ticks of a run of 10,000 ticks × 100
  agents (`--quick`: 300 ticks), warm (the reader has the run open), with
  snapshots and without; open_ms is a reader's first rebuild, at a random tick (it
  loads the messages up to that tick), open_ms_last_tick the same at the last tick.
  The full size takes a few minutes to build (6.5 million events); --quick about 15 s.

The long run is made from a real run's ticks: the first ticks come from the
engine on the sim, the rest repeat them with their tick numbers, ids and prompt
headers moved on. It goes through the real recorder, so its batches, turns,
prompts and snapshots are what a real run writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from lemming.engine import gcfreeze
from lemming.engine.engine import Engine
from lemming.engine.events import (
    Event,
    MessageCommitted,
    RunStopped,
    TickCompleted,
    TurnFinished,
)
from lemming.engine.messages import OutboxEntry
from lemming.engine.org import Org, load_org
from lemming.engine.state import OrgState
from lemming.engine.store import RunStore


class _ListRecorder:
    def __init__(self) -> None:
        self.batches: list[list[Event]] = []

    async def write(self, events: Sequence[Event]) -> None:
        self.batches.append(list(events))


def _org(root: Path, agents: int) -> Path:
    from lemming.tui.bench.engine import make_bench_org

    return make_bench_org(root, agents)


async def _record_in_memory(root: Path, ticks: int, seed: int = 1) -> tuple[Engine, list[list[Event]]]:
    org = load_org(root)
    rec = _ListRecorder()
    engine = Engine(org, seed=seed, recorder=rec)
    await engine.run(ticks=ticks)
    return engine, rec.batches


def _turns(batches: list[list[Event]]) -> list[Any]:
    return [ev.record for b in batches for ev in b if type(ev) is TurnFinished]  # type: ignore[attr-defined]


async def _write_rate(tmp: Path, quick: bool) -> dict[str, Any]:
    agents, ticks = 100, (15 if quick else 60)
    root = _org(tmp / "org100", agents)
    engine, batches = await _record_in_memory(root, ticks)
    n = sum(len(b) for b in batches)
    turns = _turns(batches)
    rates: dict[str, list[float]] = {"live": [], "own": [], "bare": []}
    cpu_rates: dict[str, list[float]] = {"live": [], "own": [], "bare": []}
    # The recorded batches are this benchmark's fixture, alive all along: out of the
    # collector's full passes, as what is alive when a run starts is in the engine
    # (gcfreeze), so that collections do not walk them at every write.
    gcfreeze.hold()
    try:
        size = await _write_each(tmp, root, engine, batches, ticks, quick, rates, cpu_rates, n)
    finally:
        gcfreeze.release()
    reply = sum(len(r.raw_output.encode()) for r in turns)
    return {
        "events_per_s": round(statistics.median(rates["live"])),
        # CPU time of the process (its SQLite thread included): steadier on a busy machine
        "events_per_s_cpu": round(statistics.median(cpu_rates["live"])),
        "events_per_s_no_search": round(statistics.median(rates["bare"])),
        "events_per_s_cpu_no_search": round(statistics.median(cpu_rates["bare"])),
        "events_per_s_own_fold": round(statistics.median(rates["own"])),
        "write_agents": agents,
        "write_events": n,
        "bytes_per_turn": round(size / len(turns)),
        "bytes_per_turn_besides_reply": round((size - reply) / len(turns)),
        "reply_bytes_per_turn": round(reply / len(turns)),
    }


async def _write_each(tmp: Path, root: Path, engine: Engine, batches: list[list[Event]], ticks: int, quick: bool,
                      rates: dict[str, list[float]], cpu_rates: dict[str, list[float]], n: int) -> int:
    """Write the batches into fresh files (with the engine's live state; the same without
    search indexing; with the recorder's own fold), repeatedly, noting the rates; returns
    the size of the last file written as a run writes it."""
    size = 0
    for i in range(2 if quick else 3):
        for variant in ("live", "bare", "own"):
            live = variant != "own"
            db = tmp / f"write{i}-{variant}.db"
            store = await RunStore.open(db)
            await store.create_run(run_id=engine.run_id, org_root=root, seed=1, definitions_hash=None, target_ticks=ticks)
            # As the engine records: it applies each batch to its own state after the
            # write (its work, not the store's); the recorder snapshots that state.
            state = OrgState(org=Org(root=root, agents={}, models={}), bounded=True) if live else None
            rec = store.recorder(engine.run_id, state=state, index=variant != "bare")
            spent = cpu = 0.0
            for b in batches:
                t0, c0 = time.perf_counter(), time.process_time()
                await rec.write(b)
                spent += time.perf_counter() - t0
                cpu += time.process_time() - c0
                if state is not None:
                    for ev in b:
                        state.apply(ev)
            rates[variant].append(n / spent)
            cpu_rates[variant].append(n / cpu)
            if variant == "live":
                size = (await store.stats())["bytes"]
            await store.close()
    return size


async def _engine_rate(tmp: Path, quick: bool) -> dict[str, Any]:
    agents, ticks = 1000, (1 if quick else 5)
    root = _org(tmp / "org1000", agents)
    org = load_org(root)
    store = await RunStore.open(tmp / "engine.db")
    engine = Engine(org, seed=1, concurrency=10_000)
    await store.create_run(run_id=engine.run_id, org_root=root, seed=1, definitions_hash=None, target_ticks=ticks + 1)
    rec = store.recorder(engine.run_id, state=engine.state)
    counted = {"n": 0}

    class Counting:
        async def write(self, events: Sequence[Event]) -> None:
            counted["n"] += len(events)
            await rec.write(events)

    engine.recorder = Counting()
    try:
        await engine.run(ticks=1)  # warm up (empty inboxes, cold caches)
        counted["n"] = 0
        t0 = time.perf_counter()
        await engine.run(ticks=ticks)
        wall = time.perf_counter() - t0
    finally:
        await store.close()
    return {"events_per_s_1000_agents": round(counted["n"] / wall), "engine_ticks_1000_agents": ticks}


def _moved(ev: Event, t: int, seq: list[int]) -> Event:
    """A template event moved to tick `t` (ids and prompt headers too)."""
    tp = type(ev)
    if tp is MessageCommitted:
        e: OutboxEntry = ev.entry  # type: ignore[attr-defined]
        seq[0] += 1
        entry = dataclasses.replace(e, id=f"{e.agent}-{t}-{e.id.rsplit('-', 1)[-1]}", tick=t, meta={"seq": seq[0]})
        return MessageCommitted(t, entry)
    if tp is TurnFinished:
        r = ev.record  # type: ignore[attr-defined]
        prompt = [dict(m) for m in r.prompt]
        if prompt:
            last = prompt[-1]
            content = last.get("content", "")
            head, _, rest = content.partition(".")
            last["content"] = f"Tick {t}." + rest if head.startswith("Tick ") else content
        from lemming.engine.prompt import prompt_hash

        rec = dataclasses.replace(r, tick=t, prompt=prompt, prompt_hash=prompt_hash(prompt))
        return TurnFinished(t, ev.agent, rec)  # type: ignore[attr-defined]
    return dataclasses.replace(ev, tick=t)  # type: ignore[arg-type]


async def _long_run(tmp: Path, ticks: int, agents: int = 100) -> tuple[Path, str, dict[str, Any]]:
    root = _org(tmp / "org-long", agents)
    warm = 12
    engine, batches = await _record_in_memory(root, warm)
    head = [b for b in batches if type(b[-1]) is not RunStopped]
    templates = [b for b in head if type(b[-1]) is TickCompleted][2:]  # ticks 3..12: inboxes are full
    db = tmp / "long.db"
    store = await RunStore.open(db)
    await store.create_run(run_id=engine.run_id, org_root=root, seed=1, definitions_hash=None, target_ticks=ticks)
    # the engine's part: apply each batch to its state (bounded, as the engine's) after it is recorded
    state = OrgState(org=Org(root=root, agents={}, models={}), bounded=True)
    rec = store.recorder(engine.run_id, state=state)

    async def write(batch: list[Event]) -> None:
        await rec.write(batch)
        for ev in batch:
            state.apply(ev)

    for b in head:
        await write(b)
    seq = [engine.state.seq]
    total = engine.state.total_spend
    n_events = 0
    t0 = time.perf_counter()
    write_s = write_cpu = 0.0
    for t in range(warm + 1, ticks + 1):
        tpl = templates[t % len(templates)]
        batch = [_moved(ev, t, seq) for ev in tpl]
        done = batch[-1]
        total += done.spend  # type: ignore[attr-defined]
        batch[-1] = dataclasses.replace(done, total_spend=total)
        w0, c0 = time.perf_counter(), time.process_time()
        await rec.write(batch)
        write_s += time.perf_counter() - w0
        write_cpu += time.process_time() - c0
        for ev in batch:
            state.apply(ev)
        n_events += len(batch)
    await write([RunStopped(ticks, "completed")])
    stats = await store.stats()
    await store.close()
    return db, engine.run_id, {
        "long_ticks": ticks,
        "long_agents": agents,
        "long_events": n_events,
        "long_build_s": round(time.perf_counter() - t0, 1),
        "events_per_s_sustained": round(n_events / write_s),
        "events_per_s_sustained_cpu": round(n_events / write_cpu),
        "long_db_mb": round(stats["bytes"] / 1e6, 1),
        "long_snapshots": stats["snapshots"],
    }


def _p(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


async def _seeks(db: Path, run_id: str, ticks: int, quick: bool) -> dict[str, Any]:
    rng = random.Random(7)
    store = await RunStore.open(db, readonly=True)
    try:
        t0 = time.perf_counter()
        await store.state_at(run_id, rng.randint(1, ticks))
        open_ms = (time.perf_counter() - t0) * 1000
    finally:
        await store.close()
    store = await RunStore.open(db, readonly=True)
    try:
        t0 = time.perf_counter()
        await store.state_at(run_id, ticks)  # the worst case: every message of the run
        open_last_ms = (time.perf_counter() - t0) * 1000
        warm, warm_cpu = [], []
        for _ in range(30 if quick else 60):
            t = rng.randint(1, ticks)
            t0, c0 = time.perf_counter(), time.process_time()
            await store.state_at(run_id, t)
            warm.append((time.perf_counter() - t0) * 1000)
            warm_cpu.append((time.process_time() - c0) * 1000)
        bare = []
        for _ in range(2 if quick else 3):
            t = rng.randint(1, ticks)
            t0 = time.perf_counter()
            await store.state_at(run_id, t, use_snapshots=False)
            bare.append((time.perf_counter() - t0) * 1000)
    finally:
        await store.close()
    return {
        "open_ms": round(open_ms, 1),
        "open_ms_last_tick": round(open_last_ms, 1),
        "seek_ms_p50": round(_p(warm, 0.5), 1),
        "seek_ms_p95": round(_p(warm, 0.95), 1),
        "seek_cpu_ms_p95": round(_p(warm_cpu, 0.95), 1),
        "seek_ms_p95_no_snapshots": round(_p(bare, 0.95), 1),
        "seek_ms_p50_no_snapshots": round(_p(bare, 0.5), 1),
    }


async def bench_store(quick: bool = False) -> dict[str, Any]:
    """Every store figure in one dict (see the module docstring)."""
    out: dict[str, Any] = {"bench": "store", "quick": quick}
    with tempfile.TemporaryDirectory(prefix="lemming-bench-store-") as tmpname:
        tmp = Path(tmpname)
        out.update(await _write_rate(tmp, quick))
        out.update(await _engine_rate(tmp, quick))
        ticks = 300 if quick else 10_000
        db, run_id, info = await _long_run(tmp, ticks)
        out.update(info)
        out.update(await _seeks(db, run_id, ticks, quick))
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(json.dumps(asyncio.run(bench_store(quick="--quick" in argv))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
