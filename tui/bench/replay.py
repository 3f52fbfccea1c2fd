"""How fast replay opens a long run and answers the cursor keys.

`python -m lemming.tui.bench.replay [--quick]` (or `lemming bench replay`) records a run of
10,000 ticks × 100 agents on the sim (`--quick`: 600 × 50) through the real
recorder — the first ticks from the engine, the rest repeating them with their
ticks and ids moved on (engine/bench_store.py builds it) — then opens it in the
real control room, headless at 160×50, and measures from a key to the screen
refresh that shows the new tick:

* open_ms — from starting the app to the first screen of the run (its last tick);
* step_ms_* — → and ← one tick, the operator pausing 150 ms between keys (what the
  cursor reads ahead in that time is ready: the next tick's events, a block of
  earlier states); step_ms_p95 is over both directions;
* step_burst_ms_p95 — → and ← pressed again the moment the previous tick shows;
* page_ms_p95 — PgUp / PgDn (ten ticks);
* jump_ms_p95 — `g` to a random tick (from enter in the dialog), the store's seek
  plus the view's ten-tick window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIZE = (160, 50)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))], 1)


_BUILD = """
import asyncio, json, sys
from pathlib import Path
from lemming.tui.bench.store import _long_run  # the store's own long-run builder
db, run_id, _ = asyncio.run(_long_run(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
print(json.dumps([str(db), run_id]))
"""


def _build(tmp: Path, ticks: int, agents: int) -> tuple[Path, str, float]:
    """The long run, built in another process: the one measured starts as `lemming replay` does."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _BUILD, str(tmp), str(ticks), str(agents)], capture_output=True, text=True, check=True)
    db, run_id = json.loads(p.stdout.strip().splitlines()[-1])
    return Path(db), run_id, time.perf_counter() - t0


async def _measure(db: Path, run_id: str, ticks: int, quick: bool) -> dict[str, Any]:
    from lemming.tui.replay_app import ReplayRoom
    from lemming.tui.screens.replay import ReplayScreen

    loop = asyncio.get_running_loop()
    shown: dict[int, float] = {}
    waiting: list[tuple[int, asyncio.Future[float]]] = []
    app: ReplayRoom

    def on_frame(frame) -> None:  # noqa: ANN001
        def painted() -> None:
            now = time.perf_counter()
            shown[frame.tick] = now
            for tick, fut in list(waiting):
                if tick == frame.tick and not fut.done():
                    fut.set_result(now)
                    waiting.remove((tick, fut))

        app.call_after_refresh(painted)

    async def until_shown(tick: int, timeout: float = 60.0) -> float:
        fut: asyncio.Future[float] = loop.create_future()
        waiting.append((tick, fut))
        return await asyncio.wait_for(fut, timeout)

    with tempfile.TemporaryDirectory(prefix="lemming-bench-replay-cfg-") as cfg:
        t0 = time.perf_counter()
        app = ReplayRoom(db, run_id, config_dir=Path(cfg), wall_clock=False, animations=False, cursor_blink=False, on_frame=on_frame)
        async with app.run_test(size=SIZE) as pilot:
            first = await until_shown(ticks)
            open_ms = (first - t0) * 1000
            screen = app.screen
            assert isinstance(screen, ReplayScreen)
            rng = random.Random(7)

            async def key(name: str, expect: int) -> float:
                t = time.perf_counter()
                done = asyncio.ensure_future(until_shown(expect))
                await pilot.press(name)
                return (await done - t) * 1000

            # Start in the middle of the run, then walk: the operator pauses between keys.
            mid = ticks // 2
            arrived = asyncio.ensure_future(until_shown(mid))
            screen.move_to(mid)  # (not measured)
            await arrived
            await asyncio.sleep(1.0)
            fwd, back, burst, page, jump = [], [], [], [], []
            n = 10 if quick else 40
            cur = mid
            for _ in range(n):
                cur += 1
                fwd.append(await key("right", cur))
                await asyncio.sleep(0.15)
            for _ in range(2 * n):
                cur -= 1
                back.append(await key("left", cur))
                await asyncio.sleep(0.15)
            for _ in range(n):
                cur += 1
                burst.append(await key("right", cur))
            for _ in range(n):
                cur -= 1
                burst.append(await key("left", cur))
            for _ in range(5 if quick else 12):
                d = rng.choice((-10, 10))
                if not 1 <= cur + d <= ticks:
                    d = -d
                cur += d
                page.append(await key("pagedown" if d > 0 else "pageup", cur))
                await asyncio.sleep(0.15)
            for _ in range(5 if quick else 12):
                target = rng.randint(1, ticks)
                while target == cur:
                    target = rng.randint(1, ticks)
                await pilot.press("g")
                await pilot.pause()
                await pilot.press(*str(target))
                jump.append(await key("enter", target))
                cur = target
                await asyncio.sleep(0.3)
            await pilot.press("q")
    steps = fwd + back
    return {
        "open_ms": round(open_ms, 1),
        "step_ms_p50": _pct(steps, 0.5),
        "step_ms_p95": _pct(steps, 0.95),
        "step_forward_ms_p95": _pct(fwd, 0.95),
        "step_back_ms_p95": _pct(back, 0.95),
        "step_burst_ms_p95": _pct(burst, 0.95),
        "page_ms_p95": _pct(page, 0.95),
        "jump_ms_p95": _pct(jump, 0.95),
        "jump_ms_p50": _pct(jump, 0.5),
        "keys": len(steps) + len(burst) + len(page) + len(jump),
        "steps_median_ms": round(statistics.median(steps), 1),
    }


def bench_replay(quick: bool = False) -> dict[str, Any]:
    """Build the long run, open it in the control room, time the cursor (module docstring)."""
    ticks, agents = (600, 50) if quick else (10_000, 100)

    async def go() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="lemming-bench-replay-") as tmp:
            db, run_id, build_s = _build(Path(tmp), ticks, agents)
            out = {"ticks": ticks, "agents": agents, "build_s": round(build_s, 1), "db_mb": round(db.stat().st_size / 1e6, 1)}
            out.update(await _measure(db, run_id, ticks, quick))
            return out

    return asyncio.run(go())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lemming.tui.bench.replay")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    print(json.dumps({"bench": "replay", **bench_replay(quick=a.quick)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
