"""The control room at 80x24, as a user test found it: nothing an operator needs cut off."""

from __future__ import annotations

from pathlib import Path

from lemming.tui.replay_app import ReplayRoom
from lemming.tui.screens.runs import RunsScreen
from textual.widgets._footer import FooterKey

from lemming.tui.widgets.footer import KeysFooter
from tests.support.app_driver import advance, deterministic_app, settle, wait_for
from tests.test_cli_tables import runs_db
from tests.test_tui_replay import at_tick, go, org_four, recorded_sim, replay_screen

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
        await pilot.press("4")
        await advance(pilot, app, 24)  # more rows than the pane: a scrollbar takes a column
        app.engine.inject("check the numbers", ["analyst"])
        app.engine.top_up("qa", 5)
        await advance(pilot, app, 1)
        await pilot.pause()
        timeline = app.main.timeline
        assert timeline.show_vertical_scrollbar
        lines = [painted(timeline, y) for y in range(timeline.size.height)]
        row = next(line for line in lines if "op:" in line)
        visible = row[: timeline.size.width - timeline.scrollbar_size_vertical]  # the scrollbar covers the rest
        assert visible.rstrip().endswith("op: ✉→analyst +5→qa"), row
        assert "…" in row  # the agents' names gave way
        await pilot.press("q")


async def rejected_run(tmp_path: Path) -> Path:
    """A recorded run of four agents whose files were rejected at ticks 3, 4 and 5."""
    org = org_four(tmp_path / "org")
    db = tmp_path / "runs.db"
    engine, store = await recorded_sim(org, db, "rejected", seed=4)
    await engine.run(ticks=2)
    for name in ("alice", "bob", "carol"):
        engine.reject_definition(f"agents/{name}/resume.json", [f"agents/{name}/resume.json: line 2 column 1: invalid JSON"])
        await engine.run(ticks=1)
    await engine.run(ticks=3)
    await store.close()
    return db


async def test_replay_playing_does_not_pile_up_toasts(tmp_path: Path) -> None:
    db = await rejected_run(tmp_path)
    app = ReplayRoom(db, "rejected", config_dir=tmp_path / "cfg", wall_clock=False, cursor_blink=False, animations=False)
    async with app.run_test(size=SMALL) as pilot:
        screen = await replay_screen(pilot, app)
        await go(pilot, screen, 1)
        await pilot.press("+", "+", "+", "+")  # 50 ticks a second
        await pilot.press("p")
        await wait_for(pilot, lambda: not screen.playing and screen.position.tick == 8, what="the end of the run")
        await pilot.pause()
        # no toast while playing; the header says what the last tick's notice was
        assert not any("Definition rejected" in title for _, title, _ in app.notices)
        assert not list(app.query("Toast"))
        assert "t5: carol/resume.json rejected" in screen.status.render().plain
        # stepping onto such a tick by hand shows it in full, as before
        await go(pilot, screen, 3)
        assert "t5" not in screen.status.render().plain  # a jump clears the note
        await pilot.press("right")
        await at_tick(pilot, screen, 4)
        assert [title for _, title, _ in app.notices if "Definition rejected" in title] == ["tick 4: Definition rejected"]
        await pilot.press("q")
    assert not app.failures


async def test_all_agents_mode_starts_with_the_turns_already_shown(tmp_path: Path) -> None:
    app = deterministic_app(config_dir=tmp_path / "cfg")
    async with app.run_test(size=SMALL) as pilot:
        await advance(pilot, app, 2)
        stream = app.main.stream
        await pilot.press("2", "a")
        assert stream.mode == "all"
        lines = stream.lines
        assert lines[0] == "── all agents, interleaved ──"
        tagged = [line.split(" │ ") for line in lines if " │ " in line]
        turns = {(name, rec.tick) for name, a in app.view.agents.items() for rec in a.history}
        assert {(tag.strip(), body) for tag, body in tagged if body.startswith("▶ tick")} == {
            (name, f"▶ tick {tick}") for name, tick in turns}
        # oldest first, as they ran; the replies themselves, as conversations
        ticks = [int(body.split()[2]) for _, body in tagged if body.startswith("▶ tick")]
        assert ticks == sorted(ticks) and set(ticks) == {1, 2}
        assert sum(body.startswith("✓ ok") for _, body in tagged) == len(turns)
        await pilot.press("q")


async def test_replay_in_all_agents_mode_shows_each_turn_once(tmp_path: Path) -> None:
    db = await rejected_run(tmp_path)
    app = ReplayRoom(db, "rejected", config_dir=tmp_path / "cfg", wall_clock=False, cursor_blink=False, animations=False)
    async with app.run_test(size=SMALL) as pilot:
        screen = await replay_screen(pilot, app)
        await pilot.press("2", "a")
        await go(pilot, screen, 6)
        starts = [line.replace(" ", "") for line in screen.stream.lines if "▶ tick" in line]
        assert starts and len(starts) == len(set(starts))  # the cursor's tick is not shown twice
        assert any(s.endswith("▶tick6") for s in starts) and any(s.endswith("▶tick5") for s in starts)
        await pilot.press("q")
    assert not app.failures
