"""An attached control room under the token storm, beside the embedded one; and what
serving costs the run.

`lemming bench attach` measures:

* lag_ms_p50 / lag_ms_p95 — from an event leaving the engine to the screen refresh of
  an attached control room (`lemming attach`) that shows it. The run is served by
  another process (the storm of `lemming bench ui`: 100 agents × 50 tokens/s); the
  served run's subscription notes when each event left the engine and the times go
  along with the events, so the lag spans the fan-out, the socket, decoding, the
  window's pump and its paint (both processes read the same monotonic clock).
* arrival_lag_ms_p50 / _p95 — the same, to the event's arrival in the window's
  subscription (decoded, before its pump and paint): the fan-out's and the socket's share.
* embedded_lag_ms_p50 / _p95 — the same storm in the embedded control room (`bench ui`).
* ms_per_tick_0 / ms_per_tick_n — a served, recorded headless run at full speed (100
  agents, the sim without pauses) with no client, then with N clients subscribed to every
  event and token (separate processes that read the bytes as fast as they come and drop
  them): what serving costs the run's tick.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lemming.engine.engine import Engine, Subscription
from lemming.engine.events import Event
from lemming.engine.remote import ControlClient, ControlServer, RemoteEngine, served_runs
from lemming.tui.bench.ui import TimedSubscription, _bucket_pct, bench_ui, make_storm_org

AGENTS = 100
TOKENS_PER_S = 50.0


class StampedSubscription(Subscription):
    """The attached window's subscription, keeping the time each event left the served
    engine (merged token deltas keep their oldest part's)."""

    def __init__(self, engine: Any, tokens: bool) -> None:
        super().__init__(engine, tokens)
        self._times: list[float] = []
        self.last_times: list[float] = []
        #: Lag on arrival (1 ms buckets), before the window's pump: the transport's share.
        self.arrival: list[int] | None = None

    def push_at(self, ev: Event, t: float) -> None:
        if self.arrival is not None:
            self.arrival[min(10_000, int((time.perf_counter() - t) * 1000))] += 1
        n = len(self._queue)
        self.push(ev)
        if len(self._queue) > n:
            self._times.append(t)

    def drain(self, limit: int | None = None) -> list[Event]:
        out = super().drain(limit)
        k = len(out)
        self.last_times, self._times = self._times[:k], self._times[k:]
        return out


class StampedRemote(RemoteEngine):
    def subscribe(self, *, tokens: bool = True) -> Subscription:
        sub = StampedSubscription(self, tokens)
        for ev in self.history:
            sub.push_at(ev, time.perf_counter())
        self._subs.add(sub)
        return sub


def _serve_storm(org: Path, tokens_per_s: float) -> None:
    """(Child process) the storm, served, its subscription timed; until SIGTERM."""
    from lemming.engine.recorded_run import CONTROL_ROOM, build_engine

    async def main() -> None:
        settings = CONTROL_ROOM.replace(seed=1, interval=0.0, sim={"tokens_per_s": tokens_per_s})
        engine: Engine = build_engine(org, settings, run_id="bench-attach")
        engine.subscribe = lambda tokens=True: _timed(engine)  # type: ignore[method-assign]
        async with ControlServer(engine, org):
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, engine.stop)
            await engine.run()

    asyncio.run(main())


def _timed(engine: Engine) -> TimedSubscription:
    sub = TimedSubscription(engine, True)
    engine._subs.add(sub)  # noqa: SLF001 - the benchmark instruments the server's one subscription
    return sub


def _child(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lemming.tui.bench.attach", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_served(org: Path, proc: subprocess.Popen, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the served run exited: {proc.stderr.read().decode(errors='replace') if proc.stderr else ''}")
        for s in served_runs(org, clean=False)[0]:
            if s.pid == proc.pid:
                return s.socket
        time.sleep(0.05)
    raise RuntimeError("the run was not served in time")


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _attached_storm(seconds: float, warmup: float, size: tuple[int, int]) -> dict[str, Any]:
    from lemming.tui.attach_app import AttachRoom

    with tempfile.TemporaryDirectory(prefix="attach-bench-") as tmp:
        org = make_storm_org(Path(tmp) / "org", AGENTS)
        proc = _child("--serve-storm", str(org), str(TOKENS_PER_S))
        try:
            sock = _wait_served(org, proc)
            c = await ControlClient.connect(sock, client="bench")
            state, history = await c.subscribe(tokens=True)
            remote = StampedRemote(c, state, history)
            buckets = [0] * 10_001
            measuring = False
            app: AttachRoom

            def observe(changes, events) -> None:  # noqa: ANN001
                if not measuring:
                    return
                times = remote_sub.last_times

                def painted() -> None:
                    now = time.perf_counter()
                    for t in times:
                        buckets[min(10_000, int((now - t) * 1000))] += 1

                app.call_after_refresh(painted)

            app = AttachRoom(remote, config_dir=Path(tmp) / "cfg", stream_mode="all", pump_observer=observe)
            remote_sub: StampedSubscription = app.feed  # type: ignore[assignment]
            async with app.run_test(size=size) as pilot:
                await asyncio.sleep(warmup)
                remote_sub.arrival = arrival = [0] * 10_001
                measuring = True
                cpu0, wall0, got0 = time.process_time(), time.perf_counter(), remote.received
                await asyncio.sleep(seconds - warmup)
                cpu1, wall1, got1 = time.process_time(), time.perf_counter(), remote.received
                measuring = False
                await pilot.press("ctrl+d")
            await remote.aclose()
        finally:
            _end(proc)
        wall = wall1 - wall0
        return {
            "lag_ms_p50": _bucket_pct(buckets, 0.50),
            "lag_ms_p95": _bucket_pct(buckets, 0.95),
            "arrival_lag_ms_p50": _bucket_pct(arrival, 0.50),
            "arrival_lag_ms_p95": _bucket_pct(arrival, 0.95),
            "events_per_s": round((got1 - got0) / wall, 1),
            "client_cpu_share": round((cpu1 - cpu0) / wall, 3),
            "resyncs": remote.resyncs,
        }


async def _tick_cost(clients: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="attach-bench-") as tmp:
        org = make_storm_org(Path(tmp) / "org", AGENTS)
        proc = subprocess.Popen(
            [sys.executable, "-m", "lemming.tui.cli", "run", "--headless", "--org", str(org), "--no-watch",
             "--sim-tokens-per-s", "0", "--seed", "1"],
            stdout=subprocess.DEVNULL, stderr=open(Path(tmp) / "run.log", "w"),
        )
        readers: list[subprocess.Popen] = []
        try:
            sock = _wait_served(org, proc)

            async def tick() -> int:
                c = await ControlClient.connect(sock, client="bench")
                try:
                    return int((await c.request("status"))["tick"])
                finally:
                    await c.close()

            async def rate() -> float:
                t0, w0 = await tick(), time.perf_counter()
                await asyncio.sleep(seconds)
                t1, w1 = await tick(), time.perf_counter()
                return (w1 - w0) * 1000 / max(1, t1 - t0)

            await asyncio.sleep(min(1.0, seconds))  # warm-up
            alone = await rate()
            readers = [_child("--read", sock) for _ in range(clients)]
            await asyncio.sleep(min(1.0, seconds))
            served = await rate()
        finally:
            for r in readers:
                _end(r)
            _end(proc)
            log = (Path(tmp) / "run.log").read_text()
        return {"clients": clients, "reader_resyncs": log.count("fell behind"), "ms_per_tick_0": round(alone, 2), "ms_per_tick_n": round(served, 2),
                "serving_overhead": round(served / alone - 1, 3)}


def _read_forever(sock: str) -> None:
    """(Child process) a client subscribed to every event and token that reads the bytes as
    fast as the socket gives them and throws them away: what serving costs the run, without
    the clients' own decoding competing for the machine's cores."""
    import socket as socketlib

    from lemming.engine.remote import protocol

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    s = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    s.connect(sock)
    s.sendall(protocol.encode({"op": "hello", "version": protocol.VERSION, "client": "reader"}))
    s.sendall(protocol.encode({"op": "subscribe", "id": 1, "tokens": True}))
    while s.recv(1 << 20):
        pass


def bench_attach(*, quick: bool = False, clients: int = 4, size: tuple[int, int] = (200, 60)) -> dict[str, Any]:
    seconds = 3.0 if quick else 20.0
    warmup = min(5.0, seconds / 3)
    embedded = bench_ui(seconds=seconds, warmup=warmup)
    attached = asyncio.run(_attached_storm(seconds, warmup, size))
    cost = asyncio.run(_tick_cost(clients, 1.5 if quick else 8.0))
    return {
        "agents": AGENTS,
        "target_tokens_per_s": AGENTS * TOKENS_PER_S,
        **attached,
        "embedded_lag_ms_p50": embedded["lag_ms_p50"],
        "embedded_lag_ms_p95": embedded["lag_ms_p95"],
        **cost,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lemming.tui.bench.attach", description=__doc__.split("\n\n")[0])
    ap.add_argument("--serve-storm", nargs=2, metavar=("ORG", "TOKENS_PER_S"), help=argparse.SUPPRESS)
    ap.add_argument("--read", metavar="SOCKET", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args(argv)
    if args.serve_storm:
        _serve_storm(Path(args.serve_storm[0]), float(args.serve_storm[1]))
        return 0
    if args.read:
        _read_forever(args.read)
        return 0
    print(json.dumps(bench_attach(quick=args.quick, clients=args.clients)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
