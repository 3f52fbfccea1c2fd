"""The control room at 80x24, as a user test found it: nothing an operator needs cut off."""

from __future__ import annotations

from pathlib import Path

from lemming.tui.replay_app import ReplayRoom
from lemming.tui.screens.runs import RunsScreen
from textual.widgets._footer import FooterKey

from lemming.tui.widgets.footer import KeysFooter
from tests.support.app_driver import advance, deterministic_app, settle, wait_for
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


async def test_the_footer_keeps_help_and_quit_whatever_the_pane_adds(tmp_path: Path) -> None:
    app = deterministic_app(config_dir=tmp_path / "cfg")
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot, app)
        for pane in "12345":
            await pilot.press(pane)
            await pilot.pause()
            await pilot.pause()
            footer = app.screen.query_one(KeysFooter)
            shown = {k.key: k.region for k in footer.query(FooterKey)}
            # every key in the footer is on screen, whole; Help and Quit always are
            assert all(r.width and r.right <= SMALL[0] for r in shown.values()), (pane, shown)
            assert {"question_mark", "q"} <= set(shown), pane
            if pane == "2":
                assert {"a", "v"} <= set(shown)
            if pane == "5":
                assert "m" in set(shown)
        await pilot.press("q")


def painted(table, y: int) -> str:  # noqa: ANN001
    """What line `y` of a Line API pane shows on screen."""
    return "".join(seg.text for seg in table.render_line(y))


async def test_the_timeline_shows_operator_actions_whole_at_80_columns(tmp_path: Path) -> None:
    app = deterministic_app(config_dir=tmp_path / "cfg")
    async with app.run_test(size=SMALL) as pilot:
        await advance(pilot, app, 1)
        app.engine.inject("check the numbers", ["analyst"])
        app.engine.top_up("qa", 5)
        await advance(pilot, app, 1)
        await pilot.press("4")
        await pilot.pause()
        timeline = app.main.timeline
        lines = [painted(timeline, y) for y in range(timeline.size.height)]
        row = next(line for line in lines if "op:" in line)
        assert "op: ✉→analyst +5→qa" in row, row
        assert "…" in row  # the agents' names gave way
        await pilot.press("q")
