"""How the control room keeps up under a token storm.

`python -m lemming.tui.bench.ui` (or `lemming bench`) runs the real app headless on a
synthetic organisation — by default 100 agents on the sim, each streaming 50
tokens/s, firing every tick back to back — and measures:

* lag: from an event leaving the engine (pushed into the app's subscription)
  to the screen refresh that shows it, per event: median and p95;
* tokens_per_s: reply tokens that reached the app per second;
* cpu_share: CPU time of the process (engine, sim and UI share one event
  loop) over wall time while measuring; ui_share: the part spent in the pump
  applying batches to the panes;
* rss_growth_mb: resident memory at the end minus after the warm-up.

The stream pane runs in "all" mode (every agent's text is written, tagged):
the heaviest thing the UI does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lemming.engine.engine import Engine, Subscription
from lemming.engine.events import Event, TokenDelta

if TYPE_CHECKING:
    from lemming.engine.recorded_run import RunSettings

TOKEN_RE = re.compile(r"\s*\S{1,8}|\s+")  # the sim's own tokenisation


def make_storm_org(root: Path, agents: int, *, reads: int = 4, seed: int = 1) -> Path:
    """`agents` agents on the sim, each reading `reads` others, all firing every tick."""
    rng = random.Random(seed)
    names = [f"agent{i:03d}" for i in range(agents)]
    for n in names:
        others = rng.sample([m for m in names if m != n], min(reads, agents - 1))
        d = root / "agents" / n
        d.mkdir(parents=True, exist_ok=True)
        (d / "resume.json").write_text(
            json.dumps(
                {
                    "name": n,
                    "title": "Storm worker",
                    "model": {"key": "sim", "max_tokens": 400},
                    "permissions": {"read_outboxes": others},
                    "schedule": {"run_every_n_ticks": 1, "phase_offset": 0},
                    "instructions": "Read, then write a short message.",
                    "credits": {"max_credits": 1e9},
                }
            )
        )
    models = {"sim": {"provider": "sim", "model_name": "sim-1", "prices": {"input_per_mtok": 1.0, "output_per_mtok": 4.0}}}
    (root / "models.json").write_text(json.dumps(models))
    (root / "org.json").write_text(json.dumps({"name": "storm", "max_concurrency": max(16, agents), "inbox_context": 2}))
    return root


class TimedSubscription(Subscription):
    """A subscription that remembers when each queued event left the engine.

    Merged token deltas keep the time of the oldest part, so the lag measured is
    that of the oldest token shown.
    """

    def __init__(self, engine: Engine, tokens: bool) -> None:
        super().__init__(engine, tokens)
        self._times: deque[float] = deque()
        self.last_times: list[float] = []

    def push(self, ev: Event) -> None:
        n = len(self._queue)
        super().push(ev)
        if len(self._queue) > n:
            self._times.append(time.perf_counter())

    def drain(self, limit: int | None = None) -> list[Event]:
        out = super().drain(limit)
        self.last_times = [self._times.popleft() for _ in range(len(out))]
        return out


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError):  # pragma: no cover - not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def _bucket_pct(buckets: list[int], q: float) -> float | None:
    """The q-quantile of a 1 ms histogram, in ms (the bucket's middle)."""
    total = sum(buckets)
    if not total:
        return None
    want = q * total
    seen = 0
    for ms, n in enumerate(buckets):
        seen += n
        if seen >= want:
            return ms + 0.5
    return float(len(buckets))


def _storm_settings(tokens_per_s: float) -> "RunSettings":
    """The control room's settings, ticks back to back, the sim at `tokens_per_s`."""
    from lemming.engine.recorded_run import CONTROL_ROOM

    return CONTROL_ROOM.replace(seed=1, interval=0.0, sim={"tokens_per_s": tokens_per_s})


async def _storm(agents: int, tokens_per_s: float, seconds: float, stream_mode: str, size: tuple[int, int], warmup: float | None) -> dict[str, Any]:
    from lemming.engine.recorded_run import build_engine
    from lemming.tui.app import ControlRoom

    with tempfile.TemporaryDirectory(prefix="tui-bench-") as tmp:
        root = make_storm_org(Path(tmp) / "org", agents)
        engine = build_engine(root, _storm_settings(tokens_per_s), run_id="bench")
        timed = TimedSubscription(engine, True)
        engine._subs.add(timed)  # noqa: SLF001 - the benchmark instruments the one subscription the app uses
        engine.subscribe = lambda tokens=True: timed  # type: ignore[method-assign]

        if warmup is None:
            warmup = min(10.0, seconds / 3)
        # Lags go into 1 ms buckets: a list of floats would itself grow by megabytes a minute.
        buckets = [0] * 10_001  # the last one holds everything from 10 s up
        lag_max = 0.0
        tokens = 0
        pump_time = 0.0
        measuring = False
        app: ControlRoom

        def observe(changes, events) -> None:  # noqa: ANN001
            nonlocal tokens
            if not measuring:
                return
            times = timed.last_times
            for ev in events:
                if type(ev) is TokenDelta:
                    tokens += len(TOKEN_RE.findall(ev.text))  # type: ignore[attr-defined]

            def painted() -> None:
                nonlocal lag_max
                now = time.perf_counter()
                for t in times:
                    ms = (now - t) * 1000
                    buckets[min(10_000, int(ms))] += 1
                    if ms > lag_max:
                        lag_max = ms

            app.call_after_refresh(painted)

        app = ControlRoom(
            engine,
            config_dir=Path(tmp) / "cfg",
            stream_mode=stream_mode,
            pump_observer=observe,
            wall_clock=True,
        )
        # Time spent inside the pump's apply (the UI's own work, without Textual's painting).
        original_apply = app.apply_events

        def timed_apply(events):  # noqa: ANN001
            nonlocal pump_time
            t0 = time.perf_counter()
            try:
                return original_apply(events)
            finally:
                if measuring:
                    pump_time += time.perf_counter() - t0

        app.apply_events = timed_apply  # type: ignore[method-assign]

        async with app.run_test(size=size) as pilot:
            await asyncio.sleep(warmup)
            rss_warm = _rss_mb()
            rss_samples = [rss_warm]
            measuring = True
            cpu0, wall0 = time.process_time(), time.perf_counter()
            tick0 = engine.tick
            end = wall0 + seconds - warmup
            while time.perf_counter() < end:
                await asyncio.sleep(1.0)
                rss_samples.append(_rss_mb())
            cpu1, wall1 = time.process_time(), time.perf_counter()
            measuring = False
            ticks = engine.tick - tick0
            await pilot.press("q")
            for _ in range(200):
                if not engine.running:
                    break
                await asyncio.sleep(0.05)
        wall = wall1 - wall0
        count = sum(buckets)
        half = rss_samples[len(rss_samples) // 2 :]
        return {
            "agents": agents,
            "target_tokens_per_s": agents * tokens_per_s,
            "tokens_per_s": round(tokens / wall, 1),
            "events": count,
            "ticks": ticks,
            "lag_ms_p50": _bucket_pct(buckets, 0.50),
            "lag_ms_p95": _bucket_pct(buckets, 0.95),
            "lag_ms_max": round(lag_max, 1) if count else None,
            "cpu_share": round((cpu1 - cpu0) / wall, 3),
            "ui_share": round(pump_time / wall, 3),
            "rss_mb": round(rss_samples[-1], 1),
            "rss_growth_mb": round(rss_samples[-1] - rss_warm, 1),
            "rss_growth_second_half_mb": round(half[-1] - half[0], 1) if len(half) > 1 else 0.0,
            "seconds": seconds,
            "warmup_s": warmup,
            "stream_mode": stream_mode,
            "run_stopped": not engine.running,
        }


async def _engine_only(agents: int, tokens_per_s: float, seconds: float, warmup: float | None) -> dict[str, Any]:
    """The same storm with no UI (events drained and dropped): the engine's own memory growth."""
    from lemming.engine.recorded_run import build_engine

    with tempfile.TemporaryDirectory(prefix="tui-bench-") as tmp:
        root = make_storm_org(Path(tmp) / "org", agents)
        engine = build_engine(root, _storm_settings(tokens_per_s), run_id="bench")
        sub = engine.subscribe(tokens=True)
        if warmup is None:
            warmup = min(10.0, seconds / 3)

        async def drain() -> None:
            while True:
                await asyncio.sleep(0.1)
                sub.drain()

        drainer = asyncio.create_task(drain())
        run = asyncio.create_task(engine.run())
        await asyncio.sleep(warmup)
        rss_warm = _rss_mb()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds - warmup)
        cpu1, wall1 = time.process_time(), time.perf_counter()
        rss_end = _rss_mb()
        engine.stop(abort=True)
        await run
        drainer.cancel()
        return {
            "engine_cpu_share": round((cpu1 - cpu0) / (wall1 - wall0), 3),
            "engine_rss_growth_mb": round(rss_end - rss_warm, 1),
        }


def bench_ui(
    agents: int = 100,
    tokens_per_s: float = 50,
    seconds: float = 30,
    *,
    stream_mode: str = "all",
    size: tuple[int, int] = (200, 60),
    warmup: float | None = None,
) -> dict[str, Any]:
    """Run the control room headless under a token storm; return the figures (see module doc).

    `seconds` includes the warm-up (default: a third of the run, at most 10 s), which is
    not measured.
    """
    return asyncio.run(_storm(agents, tokens_per_s, seconds, stream_mode, size, warmup))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lemming.tui.bench.ui", description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--tokens-per-s", type=float, default=50, help="per agent")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--stream-mode", choices=("all", "selected"), default="all")
    ap.add_argument("--warmup", type=float, default=None, help="seconds not measured (default: a third, at most 10)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--baseline", action="store_true", help="also run the storm without the UI (in a fresh process) to tell the engine's memory growth from the UI's")
    ap.add_argument("--engine-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.engine_only:
        print(json.dumps(asyncio.run(_engine_only(args.agents, args.tokens_per_s, args.seconds, args.warmup))))
        return 0
    r = bench_ui(args.agents, args.tokens_per_s, args.seconds, stream_mode=args.stream_mode, warmup=args.warmup)
    if args.baseline:
        import subprocess
        import sys

        cmd = [sys.executable, "-m", "lemming.tui.bench.ui", "--engine-only", "--agents", str(args.agents), "--tokens-per-s", str(args.tokens_per_s), "--seconds", str(args.seconds)]
        if args.warmup is not None:
            cmd += ["--warmup", str(args.warmup)]
        base = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        r.update(base)
        r["ui_rss_growth_mb"] = round(r["rss_growth_mb"] - base["engine_rss_growth_mb"], 1)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"control room under a token storm: {r['agents']} agents × {args.tokens_per_s:g} tokens/s for {r['seconds']:g} s ({r['warmup_s']:g} s warm-up)")
    print(f"  tokens shown     {r['tokens_per_s']:>10,.0f} /s   (target {r['target_tokens_per_s']:,.0f}/s while every agent streams)")
    print(f"  ticks            {r['ticks']:>10}")
    print(f"  lag p50 / p95    {r['lag_ms_p50']:>7} ms / {r['lag_ms_p95']} ms   (max {r['lag_ms_max']} ms; goal p95 < 100 ms, issue 8)")
    print(f"  CPU share        {r['cpu_share']:>10.1%}   (engine + sim + UI, one process); UI pump {r['ui_share']:.1%}")
    print(f"  RSS              {r['rss_mb']:>7.1f} MB   growth after warm-up {r['rss_growth_mb']:+.1f} MB; second half {r['rss_growth_second_half_mb']:+.1f} MB")
    if "engine_rss_growth_mb" in r:
        print(f"  without the UI   engine alone grows {r['engine_rss_growth_mb']:+.1f} MB;"
              f" the UI's share {r['ui_rss_growth_mb']:+.1f} MB; engine alone CPU {r['engine_cpu_share']:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
