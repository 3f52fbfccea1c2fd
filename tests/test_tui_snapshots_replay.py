"""Snapshot tests of replay mode (pytest-textual-snapshot), kept under tests/snapshots/.

A seeded sim run of the demo organisation is recorded headless (fixed run id, the
sim streaming with no delay), then opened in replay mode at tick 3 of 6. The
replay screen shows no wall-clock text; cursor blink and animations are off.
Update with `pytest tests/test_tui_snapshots_replay.py --snapshot-update` and look
at the SVGs before committing them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pytest_textual_snapshot import SVGImageExtension

from lemming.engine.store import RunStore
from lemming.tui.replay_app import ReplayRoom
from lemming.tui.screens.replay import ReplayScreen
from tests.support.app_driver import demo_copy, sim_engine, wait_for

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
_original_dirname = SVGImageExtension.dirname.__func__  # type: ignore[attr-defined]


def _dirname(cls, *, test_location) -> str:  # noqa: ANN001
    # The control room's snapshots live in tests/snapshots/<module>/ rather than __snapshots__/.
    if Path(test_location.filepath).name.startswith("test_tui_"):
        return str(SNAPSHOTS / test_location.basename)
    return _original_dirname(cls, test_location=test_location)


SVGImageExtension.dirname = classmethod(_dirname)  # type: ignore[method-assign]

RUN = "snapshot-replay"
TICKS = 6
AT = 3


async def _record(db: Path) -> None:
    org = demo_copy()
    engine = sim_engine(org, seed=7, interval=0.0, tokens_per_s=0, run_id=RUN)
    store = await RunStore.open(db)
    try:
        await store.create_run(run_id=RUN, org_root=org, seed=7, definitions_hash=engine.org.definitions_hash(), target_ticks=TICKS)
        engine.recorder = store.recorder(RUN, state=engine.state)
        await engine.run(ticks=TICKS)
    finally:
        await store.close()


@pytest.fixture(scope="module")
def recorded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("replay-snap") / "runs.db"
    asyncio.run(_record(db))
    return db


@pytest.fixture
def app_factory(recorded_db: Path, tmp_path: Path):
    def make() -> ReplayRoom:
        return ReplayRoom(
            recorded_db,
            RUN,
            at=AT,
            theme="lemming-dark",
            config_dir=tmp_path / "cfg",
            wall_clock=False,
            cursor_blink=False,
            animations=False,
        )

    return make


async def _settled(pilot, *keys: str) -> None:  # noqa: ANN001
    app = pilot.app
    await wait_for(pilot, lambda: isinstance(app.screen, ReplayScreen) and app.screen.is_mounted, what="the replay screen")
    screen: ReplayScreen = app.screen
    index = screen.position.index
    await wait_for(pilot, lambda: screen.position.tick == AT, what=f"tick {AT}")
    for key in keys:
        await pilot.press(key)
        await pilot.pause()
    # Timeline rows are read from the store when they come into view: wait for them.
    await pilot.pause(0.05)
    shown = screen.timeline.display and not (screen.compact and screen.active_pane != "timeline")
    await wait_for(pilot, lambda: not shown or all(index.has(t) for t in range(1, TICKS + 1)), what="every row")
    await pilot.pause(0.1)


def test_replay_80x24(snap_compare, app_factory) -> None:
    """Compact layout: the roster at tick 3, REPLAY in the header."""
    assert snap_compare(app_factory(), terminal_size=(80, 24), run_before=_settled)


def test_replay_80x24_timeline(snap_compare, app_factory) -> None:
    """Compact layout, timeline tab: the cursor on tick 3, later ticks dimmed."""
    assert snap_compare(app_factory(), terminal_size=(80, 24), run_before=lambda p: _settled(p, "4"))


def test_replay_160x50(snap_compare, app_factory) -> None:
    """Wide layout: every pane at tick 3."""
    assert snap_compare(app_factory(), terminal_size=(160, 50), run_before=_settled)
