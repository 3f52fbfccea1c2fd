"""The control room driven as an operator would (App.run_test + Pilot).

Each test asserts on the engine's state AND on what the panes show.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from textual import work

from tests.conftest import make_org, write_resume
from lemming.tui.app import ControlRoom
from tests.support.app_driver import advance, settle, sim_engine, wait_for
from lemming.tui.widgets.line_table import LineTable

SIZE = (110, 30)  # the smallest wide layout: every pane on screen


def org_with_broken_model(root: Path) -> Path:
    """alice, bob, carol, dave as in `org_dir`, but bob's model cannot be called."""
    return make_org(
        root,
        {
            "alice": {"reads": ["bob"], "credits": {"max_credits": 10.0, "soft_cap": 5.0}},
            "bob": {"reads": ["alice", "carol"], "model": "broken"},
            "carol": {"reads": ["*"], "every": 2, "offset": 1},
            "dave": {"reads": ["carol"], "every": 3},
        },
        models={
            # A model whose key is missing: every turn fails with a config error.
            "broken": {
                "provider": "openai",
                "model_name": "gpt-none",
                "api_key_env": "LEMMING_TUI_TEST_MISSING_KEY",
            }
        },
    )


def make_app(org: Path, tmp_path: Path, *, paused: bool = True, tokens_per_s: float = 0, interval: float = 0.0, **kw) -> ControlRoom:
    engine = sim_engine(org, seed=1, paused=paused, interval=interval, tokens_per_s=tokens_per_s, run_id="test-run")
    return ControlRoom(
        engine,
        config_dir=tmp_path / "cfg",
        wall_clock=False,
        cursor_blink=False,
        animations=False,
        pump_interval=0.02,
        **kw,
    )


def rows(table: LineTable, width: int = 110) -> list[str]:
    """The text of every row of a list pane, as the pane draws it."""
    return [table.render_row(i, width).plain for i in range(table.row_count())]


def header(app: ControlRoom) -> str:
    return app.main.status.render().plain


def row_of(table: LineTable, name: str) -> str:
    for line in rows(table):
        if f" {name} " in f" {line} ":
            return line
    raise AssertionError(f"{name} not in {rows(table)}")


async def test_the_engine_runs_under_the_app(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path, paused=False, interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine.tick >= 3, what="three ticks")
        await wait_for(pilot, lambda: app.view.committed_tick >= 3, what="the pump")
        await pilot.pause(0.1)
        assert app.engine.running
        assert "LIVE" in header(app)
        shown = int(re.search(r"tick (\d+)", header(app)).group(1))
        assert 3 <= shown <= app.engine.tick
        assert "test-run" in header(app)
        roster = rows(app.main.roster)
        assert [r.split()[1] for r in roster] == ["alice", "bob", "carol", "dave"]
        assert "t1 ok" in row_of(app.main.roster, "alice") or "ok" in row_of(app.main.roster, "alice")
        timeline = rows(app.main.timeline)
        assert any(line.split()[0] == "1" and "alice" in line for line in timeline)
        assert app.view.rows[0].status == "done"


async def test_pause_holds_the_tick_and_resume_continues(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path, paused=False, interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine.tick >= 2, what="two ticks")
        await pilot.press("space")
        await wait_for(pilot, lambda: app.engine.paused, what="the pause")
        held = app.engine.tick
        await pilot.pause(0.5)
        await settle(pilot, app)
        assert app.engine.tick == held
        assert "PAUSED" in header(app) and f"tick {held}" in header(app)
        last = rows(app.main.timeline)[-1]
        assert last.startswith("⏸") and str(held + 1) in last and "paused" in last
        await pilot.press("space")
        await wait_for(pilot, lambda: app.engine.tick >= held + 2, what="the run to resume")
        await wait_for(pilot, lambda: "LIVE" in header(app), what="the header to say LIVE")


async def test_step_advances_exactly_one_tick(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine.running and app.engine.paused, what="a paused start")
        assert app.engine.tick == 0
        await pilot.press("n")
        await wait_for(pilot, lambda: app.engine.tick == 1, what="tick 1")
        await pilot.pause(0.4)
        assert app.engine.tick == 1
        await pilot.press("n")
        await wait_for(pilot, lambda: app.engine.tick == 2, what="tick 2")
        await pilot.pause(0.4)
        await settle(pilot, app)
        assert app.engine.tick == 2
        assert "tick 2" in header(app) and "PAUSED" in header(app)
        done = [r for r in app.view.rows if r.status == "done"]
        assert [r.tick for r in done] == [1, 2]


async def test_step_while_running_is_refused_with_a_hint(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path, paused=False, interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine.tick >= 1, what="a tick")
        await pilot.press("n")
        assert any("Step works while paused" in text for _, _, text in app.notices)


async def test_inject_reaches_exactly_the_chosen_recipients_at_the_next_tick(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine.running and app.engine.paused, what="a paused start")
        await pilot.press("i")
        await pilot.pause()
        dialog = app.screen
        assert type(dialog).__name__ == "InjectDialog"
        await pilot.press(*"hello team")
        # Recipients, by keyboard: alice (the selected agent) is ticked; untick her, tick bob and carol.
        await pilot.press("tab", "tab")  # text -> (buttons are later) ... move to the recipients list
        from textual.widgets import SelectionList

        recipients = dialog.query_one(SelectionList)
        recipients.focus()
        await pilot.pause()
        recipients.highlighted = 0
        await pilot.press("space", "down", "space", "down", "space")
        assert sorted(recipients.selected) == ["bob", "carol"]
        await pilot.press("f2")
        await wait_for(pilot, lambda: "operator" in app.engine.state.board.outboxes, what="the injected message")
        entry = app.engine.state.board.outboxes["operator"][0]
        assert entry.recipients == ("bob", "carol")
        assert entry.text == "hello team"
        assert entry.tick == 0  # committed at the boundary: agents read it from tick 1
        await settle(pilot, app)
        assert "✉→bob,carol" in rows(app.main.timeline)[-1]
        await advance(pilot, app, 1)
        turns = app.engine.state.last_turn
        assert {"alice", "bob", "carol"} <= set(turns)  # all three fired at tick 1
        assert "hello team" in json.dumps(turns["bob"].prompt)
        assert "hello team" in json.dumps(turns["carol"].prompt)
        assert "hello team" not in json.dumps(turns["alice"].prompt)
        assert "✉→bob,carol" in row_of(app.main.timeline, "1")


async def test_inject_dialog_validates_before_sending(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine.running, what="the run")
        await pilot.press("i")
        await pilot.pause()
        await pilot.press("f2")
        await pilot.pause()
        from textual.widgets import Static

        error = app.screen.query_one("#inject-error", Static)
        assert "Write some text" in str(error.render())
        await pilot.press(*"hi")
        from textual.widgets import SelectionList

        app.screen.query_one(SelectionList).deselect_all()
        await pilot.press("f2")
        await pilot.pause()
        assert "Pick at least one recipient" in str(error.render())
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert "operator" not in app.engine.state.board.outboxes


async def test_top_up_changes_the_selected_agents_credits(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine.running, what="the run")
        await pilot.press("down")  # bob
        assert app.main.selected_agent == "bob"
        before = app.engine.state.credits["bob"]
        await pilot.press("t")
        await pilot.pause()
        await pilot.press("ctrl+a", "ctrl+k", *"2.5", "enter")
        await wait_for(pilot, lambda: app.engine.state.credits["bob"] == pytest.approx(before + 2.5), what="the top-up")
        await settle(pilot, app)
        assert f"{before + 2.5:.2f}" in row_of(app.main.credits, "bob")
        assert "+2.5→bob" in rows(app.main.timeline)[-1]


async def test_enable_disable_changes_what_the_engine_runs(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine.running, what="the run")
        await pilot.press("down", "down")  # carol fires at tick 1
        assert app.main.selected_agent == "carol"
        await pilot.press("e")
        await wait_for(pilot, lambda: app.engine.state.enabled.get("carol") is False, what="carol disabled")
        await advance(pilot, app, 1)
        assert "carol" not in app.engine.state.last_turn
        assert "disabled" in row_of(app.main.roster, "carol")
        assert "⊘carol(disabled)" in row_of(app.main.timeline, "1")
        await pilot.press("e")
        await wait_for(pilot, lambda: app.engine.state.enabled.get("carol") is True, what="carol enabled")
        await advance(pilot, app, 2)  # carol fires at tick 3
        assert app.engine.state.last_turn["carol"].tick == 3
        assert "idle" in row_of(app.main.roster, "carol")


async def test_interval_keys_change_the_engine_interval(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path, interval=1.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine.running, what="the run")
        await pilot.press("plus")
        await wait_for(pilot, lambda: app.engine.state.interval == 2.0, what="a longer interval")
        await pilot.press("minus", "minus")
        await wait_for(pilot, lambda: app.engine.state.interval == 0.5, what="a shorter interval")


async def test_a_failed_turn_marks_the_agent_and_the_timeline_and_enter_shows_why(tmp_path: Path) -> None:
    org = org_with_broken_model(tmp_path / "org")
    app = make_app(org, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await advance(pilot, app, 1)
        rec = app.engine.state.last_turn["bob"]
        assert rec.status != "ok" and rec.error
        assert app.engine.agent_status("bob") == "error"
        assert "error" in row_of(app.main.roster, "bob")
        assert "✗bob" in row_of(app.main.timeline, "1")
        await pilot.press("down")  # bob
        await pilot.press("enter")
        await pilot.pause()
        from textual.widgets import Static

        assert type(app.screen).__name__ == "InspectorScreen"
        summary = str(app.screen.query_one("#summary-body", Static).render())
        assert rec.error.split(":")[0] in summary
        assert "bob" in summary
        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ == "MainScreen"


async def test_enter_on_a_timeline_row_inspects_that_ticks_turn(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await advance(pilot, app, 2)
        await pilot.press("tab", "tab")  # roster -> credits -> timeline
        assert app.main.focused is app.main.timeline
        await pilot.press("home", "enter")
        await pilot.pause()
        assert type(app.screen).__name__ == "InspectorScreen"
        assert app.screen.record.tick == 1 and app.screen.record.agent == "alice"


async def test_quit_stops_the_run_at_a_tick_boundary(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path, paused=False, tokens_per_s=400)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine.tick >= 1 and bool(app.engine.thinking), what="a tick in flight")
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.engine.running, what="the run to stop")
        await pilot.pause(0.2)
    engine = app.engine
    assert not engine.running
    assert engine.state.stopped == "stopped"
    assert not engine.thinking
    # Nothing of a tick past the last committed one was written.
    assert all(e.tick <= engine.tick for e in engine.state.board.all())
    assert all(r.tick <= engine.tick for r in engine.state.last_turn.values())
    assert app.return_code == 0


async def test_quit_aborts_a_slow_tick_after_the_grace_period(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path, paused=False, tokens_per_s=3, quit_grace=0.3)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: bool(app.engine.thinking), what="a tick in flight")
        tick_before = app.engine.tick
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.engine.running, timeout=10, what="the run to stop")
        await pilot.pause(0.2)
    engine = app.engine
    assert engine.tick == tick_before  # the slow tick was aborted, not committed
    assert all(e.tick <= engine.tick for e in engine.state.board.all())
    assert not engine.thinking


async def test_a_crashing_pane_stops_the_run_and_says_so(org_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lemming.tui.widgets.timeline import Timeline

    def boom(self, index: int, width: int):  # noqa: ANN001
        raise RuntimeError("timeline exploded")

    monkeypatch.setattr(Timeline, "render_row", boom)
    app = make_app(org_dir, tmp_path, paused=False, interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: not app.engine.running and app.run_result is not None, what="the run to stop")
        await settle(pilot, app)
        assert app.run_result == "stopped"
        assert any("timeline" in title and sev == "error" for sev, title, _ in app.notices)
        assert "timeline pane failed" in header(app)
        assert "STOPPED" in header(app)
        # The run stopped at a boundary: what is committed is whole.
        engine = app.engine
        assert all(e.tick <= engine.tick for e in engine.state.board.all())
        assert app.is_running  # the operator still sees the screen and the error


async def test_tab_moves_between_panes_and_digits_show_them(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        seen = []
        for _ in range(5):
            seen.append(app.main.focused.id)
            await pilot.press("tab")
        assert seen == ["roster", "credits", "timeline", "stream", "graph"]
        assert app.main.focused.id == "roster"
        await pilot.press("5")
        assert app.main.focused.id == "graph"


async def test_small_terminal_shows_one_pane_at_a_time(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        main = app.main
        assert main.compact
        shown = [p for p in ("roster", "stream", "credits", "timeline", "graph") if main.pane(p).display]
        assert shown == ["roster"]
        await pilot.press("tab")
        await pilot.pause()
        shown = [p for p in ("roster", "stream", "credits", "timeline", "graph") if main.pane(p).display]
        assert shown == ["stream"] and main.focused.id == "stream"
        assert main.tabs.active == "stream"


async def test_wide_terminal_shows_every_pane_without_overlap(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path)
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        main = app.main
        assert not main.compact
        regions = [main.pane(p).region for p in ("roster", "stream", "credits", "timeline", "graph")]
        assert all(r.width > 20 and r.height >= 5 for r in regions)
        for i, a in enumerate(regions):
            for b in regions[i + 1 :]:
                assert not a.overlaps(b)


async def test_stream_shows_the_selected_agent_and_all_mode_tags_lines(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await advance(pilot, app, 1)
        stream = app.main.stream
        text = "\n".join(stream.lines)
        assert "alice · tick 1" in text and "✓ ok" in text
        # the finished turn is a conversation: each message under its arrow, no JSON
        rec = app.view.agents["alice"].history[-1]
        entry = rec.parsed["outbox_entries"][0]
        to = ", ".join(entry["recipients"]) or "all"
        assert f"alice → {to} · {entry['kind']}" in text and "outbox_entries" not in text
        words = entry["payload"]["text"].split()
        assert " ".join(" ".join(stream.lines).split()).count(" ".join(words)) == 1  # wrapped, whole
        assert f"note: {rec.parsed['notes']}" in text
        await pilot.press("2", "v")  # the raw reply, as the model wrote it
        assert stream.raw and "outbox_entries" in "\n".join(stream.lines)
        await pilot.press("v")
        assert not stream.raw and "outbox_entries" not in "\n".join(stream.lines)
        await pilot.press("1", "down")  # bob
        text = "\n".join(stream.lines)
        assert "bob · tick 1" in text
        await pilot.press("2", "a")
        assert stream.mode == "all"
        await advance(pilot, app, 1)
        tagged = [line for line in stream.lines if " │ " in line]
        assert {line.split(" │ ")[0].strip() for line in tagged} >= {"alice", "bob"}


async def test_keys_help_and_palette_come_from_one_table(org_dir: Path, tmp_path: Path) -> None:
    """Every bound key of each mode is in that mode's help; every palette entry runs an action that exists."""
    from lemming.tui.actions import LIVE, REPLAY, bindings, palette
    from lemming.tui.commands import RoomCommands
    from lemming.tui.screens.help import help_text
    from lemming.tui.screens.main import MainScreen
    from lemming.tui.screens.replay import ReplayScreen

    shown_as = {"question_mark": "?", "plus": "+", "minus": "-", "left": "←", "right": "→", "pageup": "PgUp", "pagedown": "PgDn", "slash": "/"}
    for mode, screen in ((LIVE, MainScreen), (REPLAY, ReplayScreen)):
        assert [b.id for b in screen.BINDINGS] == [b.id for b in bindings(mode)]
        text = help_text(mode).plain
        for b in screen.BINDINGS:
            assert b.id, f"binding {b.key} has no id"
            key = shown_as.get(b.key, b.key)
            key = "1-5" if key.isdigit() else key
            assert key in text, f"{mode}: {key} missing from help"
    assert "fork" in help_text(REPLAY).plain and "fork" not in help_text(LIVE).plain
    app = make_app(org_dir, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for _, _, action in palette(LIVE):
            namespace, _, name = action.partition(".")
            target = app if namespace == "app" else app.screen
            assert hasattr(target, "action_" + name.split("(")[0]), action
        provider = RoomCommands(app.screen)
        titles = [hit.display for hit in [h async for h in provider.discover()]]
        assert any("Theme: High contrast" in str(t) for t in titles)
        assert len(titles) == len(palette(LIVE)) + 4
        await pilot.press("question_mark")
        await pilot.pause()
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("q")  # closes help, does not quit
        await pilot.pause()
        assert type(app.screen).__name__ == "MainScreen"
        assert app.engine.running


def test_main_opens_the_app_without_mouse_when_asked(monkeypatch: pytest.MonkeyPatch, org_dir: Path, tmp_path: Path) -> None:
    import argparse

    import lemming.tui.app as app_module
    from lemming.tui.cli.rooms import cmd_tui

    seen: dict = {}

    def fake_run(self, **kw):  # noqa: ANN001
        seen.update(kw)
        seen["theme"] = self.theme
        seen["tokens"] = self.engine.registry._overrides
        return 0

    monkeypatch.setattr(app_module.ControlRoom, "run", fake_run)
    args = argparse.Namespace(
        org=org_dir, seed=3, paused=True, interval=None, no_mouse=True, theme="lemming-ansi",
        sim_tokens_per_s=None, db=None, no_record=True,
    )
    assert cmd_tui(args) == 0
    assert seen["mouse"] is False
    assert seen["theme"] == "lemming-ansi"
    assert seen["tokens"]["sim"]["tokens_per_s"] == 40.0


def test_main_reports_an_invalid_organisation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from lemming.tui.cli.rooms import cmd_tui as main

    (tmp_path / "agents" / "x").mkdir(parents=True)
    (tmp_path / "agents" / "x" / "resume.json").write_text("{not json")
    args = argparse.Namespace(org=tmp_path, seed=0, paused=False, interval=None, no_mouse=False, theme=None, sim_tokens_per_s=None, db=None, no_record=True)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "agents/x/resume.json" in err and "invalid JSON" in err


async def test_the_run_is_recorded_in_the_store_when_asked(org_dir: Path, tmp_path: Path) -> None:
    from lemming.engine.store import RunStore

    db = tmp_path / "runs.db"
    app = make_app(org_dir, tmp_path, record=db)
    async with app.run_test(size=(80, 24)) as pilot:
        await advance(pilot, app, 2)
        assert app.recording == str(db)
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.engine.running, what="the run to stop")
    store = await RunStore.open(db, readonly=True)
    try:
        info = await store.get_run("test-run")
    finally:
        await store.close()
    assert info.ticks == 2 and info.status == "stopped"


async def test_the_inspector_scrolls_with_the_keys_of_its_section(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await advance(pilot, app, 1)
        await pilot.press("enter", "2")
        await pilot.pause()
        scroll = app.screen.focused
        assert scroll is not None and scroll.parent.id == "prompt"
        await pilot.press("end")
        await pilot.pause()
        assert scroll.scroll_y > 0
        await pilot.press("left_square_bracket")  # no older turn: stays, rings the bell
        assert app.screen.record.tick == 1


async def test_a_rejected_command_is_notified(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.engine.running, what="the run")
        app.engine.top_up("nobody", 1.0)  # the UI never sends this; an API client might
        await wait_for(pilot, lambda: any(t == "Command rejected" for _, t, _ in app.notices), what="the notice")
        assert any("no such agent: nobody" in text for _, _, text in app.notices)


async def test_an_engine_error_stops_the_run_and_is_shown(org_dir: Path, tmp_path: Path) -> None:
    class FailingRecorder:
        async def write(self, events) -> None:  # noqa: ANN001
            if any(type(e).__name__ == "TickCompleted" for e in events):
                raise OSError("disk full")

    engine = sim_engine(org_dir, seed=1, paused=True, interval=0, tokens_per_s=0, run_id="test-run", recorder=FailingRecorder())
    app = ControlRoom(engine, config_dir=tmp_path / "cfg", wall_clock=False, animations=False, pump_interval=0.02)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: engine.running, what="the run")
        await pilot.press("n")
        await wait_for(pilot, lambda: app.run_result is not None, what="the run to stop")
        await settle(pilot, app)
        assert app.run_result.startswith("error: OSError: disk full")
        assert engine.tick == 0  # the failed tick was not committed
        assert any(t == "The engine stopped" and sev == "error" for sev, t, _ in app.notices)
        assert "STOPPED" in header(app)
        await pilot.press("n")  # nothing to steer any more: said, not crashed
        assert any("The run has stopped" in text for _, _, text in app.notices)
        await pilot.press("q")
        await pilot.pause(0.2)
    assert app.return_code == 1


async def test_a_broken_agent_file_is_notified_and_the_run_goes_on(tmp_path: Path) -> None:
    org = make_org(tmp_path / "org", {"alice": {"reads": ["bob"]}, "bob": {"reads": ["alice"]}})
    app = make_app(org, tmp_path, watch=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await advance(pilot, app, 1)
        await pilot.pause(0.5)  # the watcher is up
        (org / "agents" / "bob" / "resume.json").write_text("{broken")
        await wait_for(pilot, lambda: any(t == "Definition rejected" for _, t, _ in app.notices), timeout=15, what="the rejection")
        text = next(text for _, t, text in app.notices if t == "Definition rejected")
        assert "agents/bob/resume.json" in text and "invalid JSON" in text
        await advance(pilot, app, 1)
        assert app.engine.state.last_turn["bob"].tick == 2  # the last good definition keeps running
        # The file stays listed until it is fixed: a count in the header, the list on D.
        await wait_for(pilot, lambda: "1 bad file" in header(app), what="the header's count")
        await pilot.press("D")
        await pilot.pause(0.2)
        listed = str(app.screen.query_one("#definitions-text").render())
        assert "agents/bob/resume.json" in listed and "invalid JSON" in listed
        await pilot.press("escape")
        write_resume(org, "bob", reads=["alice"], instructions="Fixed.")
        await wait_for(pilot, lambda: "bad file" not in header(app), timeout=15, what="the fix")
        await advance(pilot, app, 1)
        assert "Fixed." in app.engine.state.last_turn["bob"].prompt[0]["content"]


async def test_edit_key_names_the_file_where_no_terminal_can_be_handed_over(tmp_path: Path) -> None:
    org = make_org(tmp_path / "org", {"alice": {}})
    app = make_app(org, tmp_path, watch=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await advance(pilot, app, 1)
        await pilot.press("E")
        await wait_for(pilot, lambda: any(t == "Edit" for _, t, _ in app.notices), what="the edit notice")
        text = next(text for _, t, text in app.notices if t == "Edit")
        assert str(org / "agents" / "alice" / "resume.json") in text


async def test_the_palette_runs_actions_and_switches_themes_which_are_remembered(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.engine.running and app.engine.paused, what="a paused start")
        await pilot.press("ctrl+p")
        await pilot.pause(0.1)
        await pilot.press(*"step")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.engine.tick == 1, what="the palette's step")
        assert app.theme == "lemming-dark"
        await pilot.press("ctrl+p")
        await pilot.pause(0.1)
        await pilot.press(*"contrast")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.theme == "lemming-contrast", what="the theme")
    # The choice is remembered for the next run.
    saved = json.loads((tmp_path / "cfg" / "tui.json").read_text())
    assert saved["theme"] == "lemming-contrast"
    assert make_app(org_dir, tmp_path).theme == "lemming-contrast"


async def test_clicking_a_roster_row_selects_the_agent(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        roster = app.main.roster
        # Row 0 is the header: the third agent (carol) is on the third row after it.
        await pilot.click(roster, offset=(5, 1 + roster.header_height + 2))
        await pilot.pause()
        assert app.main.selected_agent == "carol"
        assert app.main.credits.selected == "carol" and app.main.graph.selected == "carol"
        assert app.main.stream.agent == "carol"


async def test_keys_can_be_remapped_in_the_settings_file(org_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "tui.json").write_text(json.dumps({"keymap": {"run.step": "s"}}))
    app = make_app(org_dir, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.engine.running and app.engine.paused, what="a paused start")
        await pilot.press("s")
        await wait_for(pilot, lambda: app.engine.tick == 1, what="a step on s")


async def test_another_app_plugs_its_own_run_into_a_room(org_dir: Path, tmp_path: Path) -> None:
    """Room's hook (what an attaching app uses): a source, a control and a feed of its own;
    the panes, keys and pump work unchanged, and the steering goes through the control."""
    from lemming.engine.engine import Engine
    from lemming.tui.room import Room
    from lemming.tui.run_source import EventFeed, RunControl, RunSource

    engine = sim_engine(org_dir, seed=1, paused=True, run_id="elsewhere")
    commands: list[str] = []

    class CountingControl:
        """A run controlled from afar: every command is noted, then passed on."""

        def __init__(self, engine: Engine) -> None:
            self.engine = engine

        def __getattr__(self, name: str):  # noqa: ANN204
            value = getattr(self.engine, name)
            if callable(value):
                def call(*args, **kw):  # noqa: ANN002, ANN003, ANN202
                    commands.append(name)
                    return value(*args, **kw)

                return call
            return value

        @property
        def paused(self) -> bool:
            return self.engine.paused

        @property
        def running(self) -> bool:
            return self.engine.running

    class Attached(Room):
        def start(self) -> None:
            self._attach()

        @work(exclusive=True, group="attach")
        async def _attach(self) -> None:
            await self.show_run(engine, control=CountingControl(engine), feed=engine.subscribe(tokens=True))  # type: ignore[arg-type]
            self.run_live(engine)

    assert isinstance(engine, RunSource) and isinstance(engine, RunControl)
    assert isinstance(engine.subscribe(), EventFeed)
    app = Attached(config_dir=tmp_path / "cfg", wall_clock=False, cursor_blink=False, animations=False, pump_interval=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: engine.running and app.view.run_id == "elsewhere", what="the run to show")
        await pilot.press("n")
        await wait_for(pilot, lambda: app.view.committed_tick == 1, what="tick 1 on screen")
        assert commands == ["step"]
        assert app.main.status.tick == 1 and "elsewhere" in app.main.status.run_id
        await pilot.press("q")
    assert "stop" in commands and not engine.running


def test_the_control_room_closes_its_runs_sdk_clients_when_the_app_shuts_down(tmp_path: Path, monkeypatch) -> None:
    """The app exits with its run still going (paused between ticks): the run is cancelled,
    and asyncio.run cancels what is left at its end. Every SDK client the run opened is
    closed all the same: none is left for the interpreter's exit to report as an unclosed
    aiohttp session over the operator's terminal."""
    import asyncio

    from tests.support.app_driver import deterministic_app
    from tests.support.processes import open_http_sessions
    from tests.support.servers import AnthropicServer, OllamaServer, OpenAIServer

    before = {id(s) for s in open_http_sessions()}
    opened: list[int] = []
    prices = {"input_per_mtok": 1.0, "output_per_mtok": 1.0}
    with OpenAIServer() as oa, AnthropicServer() as an, OllamaServer() as ol:
        # Four adapters per SDK (one per key variable): closing them all takes a while,
        # long enough for the app's shutdown to cut into it.
        models = {}
        for i in range(4):
            monkeypatch.setenv(f"TUI_TEST_KEY_{i}", f"sk-tui-test-{i}")
            key = {"api_key_env": f"TUI_TEST_KEY_{i}", "prices": prices}
            models[f"gpt{i}"] = {"provider": "openai", "model_name": "gpt-t", "base_url": oa.base_url, **key}
            models[f"claude{i}"] = {"provider": "anthropic", "model_name": "claude-t", "base_url": an.base_url, **key}
            models[f"llama{i}"] = {"provider": "ollama", "model_name": "llama3.2", "base_url": ol.base_url, **key}
        root = make_org(tmp_path / "org", {name: {"model": name} for name in models}, models=models)

        async def go() -> None:
            app = deterministic_app(root, config_dir=tmp_path / "cfg")
            async with app.run_test(size=(120, 40)) as pilot:
                await advance(pilot, app, 1, timeout=60)
                opened.extend(id(s) for s in open_http_sessions() if id(s) not in before)
                app.exit()

        asyncio.run(go())
    assert len(opened) == 12  # the run did open them, one per adapter
    assert [s for s in open_http_sessions() if id(s) not in before] == []
