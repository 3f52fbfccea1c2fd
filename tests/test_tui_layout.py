"""The control room at 80x24, as a user test found it: nothing an operator needs cut off."""

from __future__ import annotations

from pathlib import Path

from lemming.tui.replay_app import ReplayRoom
from lemming.tui.screens.runs import RunsScreen
from tests.support.app_driver import wait_for
from tests.test_cli_tables import runs_db

SMALL = (80, 24)


async def test_the_run_picker_fits_80_columns(tmp_path: Path) -> None:
    db = await runs_db(tmp_path)
    app = ReplayRoom(db, None, config_dir=tmp_path / "cfg", wall_clock=False, cursor_blink=False, animations=False)
    async with app.run_test(size=SMALL) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen) and len(app.screen.runs) == 2, what="the run picker")
        await pilot.pause()
        table = app.screen.query_one("#runs-table")
        assert table.virtual_size.width <= table.size.width  # every column whole, no horizontal scrolling
        labels = [str(c.label) for c in table.columns.values()]
        assert labels == ["run", "ticks", "status", "spend", "parent", "started"]  # one organisation: no org column
        await pilot.press("q")
