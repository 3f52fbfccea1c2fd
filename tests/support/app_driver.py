"""Helpers for driving the control room in tests, snapshots and the benchmark.

`deterministic_app` builds an app whose screen is the same run after run: a
seeded sim run that starts paused, streams with no delay, shows no wall-clock
text, and has cursor blink and animations off. `advance` steps ticks and waits
until the panes have caught up.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.pilot import Pilot

from lemming.engine.engine import Engine, Recorder
from lemming.engine.recorded_run import CONTROL_ROOM, build_engine
from lemming.tui.app import ControlRoom
from tests.conftest import demo_copy  # noqa: F401  (snapshot tests import it from here too)

REPO = Path(__file__).resolve().parents[2]


def sim_engine(
    org: str | Path,
    *,
    seed: int = 0,
    paused: bool = False,
    interval: float = 0.0,
    tokens_per_s: float = 0.0,
    run_id: str | None = None,
    recorder: Recorder | None = None,
) -> Engine:
    """An engine on `org` with the control room's settings, but `interval` between ticks
    and the sim streaming `tokens_per_s` (0: each reply at once)."""
    # mcp_wait: prompts list the MCP tools from the first tick, whatever the start-up takes.
    settings = CONTROL_ROOM.replace(seed=seed, paused=paused, interval=interval, sim={"tokens_per_s": tokens_per_s}, mcp_wait=True)
    engine = build_engine(org, settings, run_id=run_id)
    engine.recorder = recorder
    return engine


def deterministic_app(
    org: str | Path = REPO,
    *,
    seed: int = 7,
    theme: str | None = "lemming-dark",
    config_dir: Path | None = None,
    run_id: str = "snapshot-run",
    paused: bool = True,
    interval: float = 0.0,
    **kw: object,
) -> ControlRoom:
    if Path(org) == REPO:  # the demo's tools write files: each app gets a fresh copy
        org = demo_copy()
    engine = sim_engine(org, seed=seed, paused=paused, interval=interval, run_id=run_id)
    return ControlRoom(
        engine,
        theme=theme,
        config_dir=config_dir,
        wall_clock=False,
        cursor_blink=False,
        animations=False,
        pump_interval=0.02,
        **kw,  # type: ignore[arg-type]
    )


async def settle(pilot: Pilot, app: ControlRoom, timeout: float = 10.0) -> None:
    """Wait until the pump has shown everything the engine said, then let the screen repaint."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    sub = app.feed
    while loop.time() < deadline:
        await pilot.pause(0.03)
        if sub is not None and len(sub) == 0 and (app.engine is None or not app.engine.thinking):
            await pilot.pause(app.pump_interval + 0.03)
            if len(sub) == 0:
                break
    await pilot.pause()


async def wait_for(pilot: Pilot, predicate, timeout: float = 10.0, what: str = "condition") -> None:  # noqa: ANN001
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def advance(pilot: Pilot, app: ControlRoom, ticks: int, timeout: float = 20.0) -> None:
    """Step `ticks` ticks one by one (the app must be paused) and wait for the panes."""
    await wait_for(pilot, lambda: app.engine.running and app.engine.paused, timeout, "the run to start paused")
    for _ in range(ticks):
        target = app.engine.tick + 1
        await pilot.press("n")
        await wait_for(pilot, lambda: app.engine.tick >= target, timeout, f"tick {target}")
    await wait_for(pilot, lambda: app.view.committed_tick >= app.engine.tick, timeout, "the pump to catch up")
    await settle(pilot, app)
