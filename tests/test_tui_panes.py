"""The MCP servers view (`M`) and the inspector's workspace browser (`w`), driven as an
operator would (App.run_test + Pilot) on the demo organisation: live against the run's
real MCP server (mcp-server-time), in replay from the record with no server started."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from lemming.engine.engine import Engine
from lemming.engine.events import ToolCallFinished
from lemming.engine.org import load_org
from lemming.tui.actions import LIVE, REPLAY, help_lines
from lemming.tui.replay_app import ReplayRoom
from lemming.tui.screens.inspector import InspectorScreen
from lemming.tui.screens.mcp import McpScreen
from lemming.tui.screens.replay import ReplayScreen
from lemming.tui.screens.workspace import WorkspaceScreen, files_changed_key
from tests.conftest import demo_copy
from tests.support.app_driver import advance, deterministic_app, wait_for

SIZE = (120, 40)


def _children_commands() -> list[str]:
    """The command lines of this process's children (a started MCP server would be one)."""
    out = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                out.append(Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " "))
            except OSError:
                pass
    return out


def shown(widget) -> str:  # noqa: ANN001
    """The text a Static draws (its Rich content printed at the widget's width)."""
    from rich.console import Console

    console = Console(width=max(widget.size.width, 40), record=True, file=open(os.devnull, "w"))
    console.print(widget.content)
    return console.export_text()


async def record_demo(tmp_path: Path, run_id: str, *, seed: int, ticks: int) -> tuple[Path, list[ToolCallFinished]]:
    """A seeded run of a demo copy recorded to tmp_path/runs.db: (the db, its MCP calls)."""
    from lemming.engine.recorded_run import RecordedRun

    db = tmp_path / "runs.db"
    engine = Engine(load_org(demo_copy(tmp_path / "demo")), seed=seed, run_id=run_id)
    sub = engine.subscribe(tokens=False)
    async with await RecordedRun.record(engine, db):
        await engine.run(ticks=ticks)
    return db, [e for e in sub.drain() if isinstance(e, ToolCallFinished) and e.tool.startswith("time/")]


async def replay_at_end(pilot, app: ReplayRoom, tick: int) -> None:  # noqa: ANN001
    await wait_for(pilot, lambda: isinstance(app.screen, ReplayScreen) and app.screen.is_mounted, what="the replay screen")
    await pilot.press("end")
    await wait_for(pilot, lambda: app.screen.position.tick == tick, what="the last tick")


def test_the_key_is_in_the_table_for_live_and_replay() -> None:
    for mode in (LIVE, REPLAY):
        assert any(line.keys == "M" and "MCP servers" in line.what for line in help_lines(mode))


async def test_mcp_view_live_shows_the_server_its_tools_and_the_calls(tmp_path: Path) -> None:
    app = deterministic_app(seed=3, config_dir=tmp_path / "cfg")
    async with app.run_test(size=SIZE) as pilot:
        await advance(pilot, app, 1)
        await pilot.press("M")
        await wait_for(pilot, lambda: isinstance(app.screen, McpScreen) and app.screen.picture is not None, what="the MCP view")
        (row,) = app.screen.picture.rows
        assert row.name == "time" and row.phase == "up" and row.restarts == 0
        assert row.pid is not None and "mcp-server-time" in Path(f"/proc/{row.pid}/cmdline").read_text()
        assert row.uptime_s is not None and row.uptime_s >= 0
        tools = {t.name: t for t in row.tools}
        assert set(tools) == {"get_current_time", "convert_time"}
        assert tools["convert_time"].holders == ("researcher",) and "Convert time" in tools["convert_time"].description
        body = shown(app.screen.query_one("#mcp-body"))
        assert "convert_time" in body and "researcher" in body and "● time  up" in body
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, McpScreen)
        # Run until the researcher has called the server; the view (polled) counts the calls.
        for _ in range(40):
            await advance(pilot, app, 1)
            if app.engine.mcp is not None and app.engine.mcp.status()[0].calls:
                break
        await pilot.press("M")
        await wait_for(pilot, lambda: isinstance(app.screen, McpScreen) and app.screen.picture is not None
                       and app.screen.picture.rows[0].calls > 0, what="the calls in the MCP view")
        row = app.screen.picture.rows[0]
        status = app.engine.mcp.status()[0]
        assert row.calls == sum(n for _, n, _ in status.tool_calls) and row.failed == status.errors
        assert row.last_ms is not None and dict((t.name, t.calls) for t in row.tools)["convert_time"] > 0
        await pilot.press("M")  # the key that opened it closes it
        await pilot.pause()
        assert not isinstance(app.screen, McpScreen)


async def test_mcp_view_in_replay_shows_the_recorded_calls_and_starts_no_server(tmp_path: Path) -> None:
    db, made = await record_demo(tmp_path, "mcp-replay", seed=3, ticks=30)
    assert made, "the researcher never called the time server in 30 ticks"
    app = ReplayRoom(db, "mcp-replay", config_dir=tmp_path / "cfg", wall_clock=False, cursor_blink=False, animations=False)
    async with app.run_test(size=SIZE) as pilot:
        await replay_at_end(pilot, app, 30)
        await pilot.press("M")
        await wait_for(pilot, lambda: isinstance(app.screen, McpScreen) and app.screen.picture is not None, what="the MCP view")
        (row,) = app.screen.picture.rows
        assert row.phase == "recorded" and row.pid is None
        assert row.calls == len(made) and row.failed == sum(not c.ok for c in made)
        called = {t.name: t.calls for t in row.tools}
        assert called["convert_time"] == sum(c.tool == "time/convert_time" for c in made)
        assert "replay never starts a server" in shown(app.screen.query_one("#mcp-where"))
        assert not any("mcp-server-time" in c for c in _children_commands())


async def test_workspace_browser_from_the_inspector_live(tmp_path: Path) -> None:
    app = deterministic_app(seed=7, config_dir=tmp_path / "cfg")
    async with app.run_test(size=SIZE) as pilot:
        await advance(pilot, app, 6)
        root = app.engine.org.root
        writer = next(name for name, rec in app.engine.state.last_turn.items()
                      if any(not f["path"].startswith("shared/") for f in rec.files_changed or []))
        ws = root / "agents" / writer / "workspace"
        (ws / "leak").symlink_to("/etc/passwd")  # leads out: listed as refused, never read
        (ws / "blob.bin").write_bytes(b"\x00\x01\x02binary")
        app.push_screen(InspectorScreen([app.engine.state.last_turn[writer]], 0, wall_clock=False))
        await pilot.pause()
        await pilot.press("w")
        await wait_for(pilot, lambda: isinstance(app.screen, WorkspaceScreen), what="the workspace browser")
        screen: WorkspaceScreen = app.screen  # type: ignore[assignment]
        tree = screen.query_one("#ws-tree")

        def listed() -> dict[str, object]:
            out = {}

            def walk(node) -> None:  # noqa: ANN001
                for c in node.children:
                    if c.data is not None:
                        out[c.data.path] = c.data
                    walk(c)

            walk(tree.root)
            return out

        entries = listed()
        assert entries["leak"].kind == "refused" and "symlink" in entries["leak"].why
        on_disk = {p.relative_to(ws).as_posix(): p.stat().st_size for p in ws.rglob("*") if p.is_file() and not p.is_symlink()}
        for path, size in on_disk.items():
            if "/" not in path:
                assert entries[path].size == size, path
        # The refused link's "content" never shows what it points at.
        screen._show(entries["leak"])
        assert "root:" not in shown(screen.query_one("#ws-content"))
        screen._show(entries["blob.bin"])
        assert "binary file: not shown" in shown(screen.query_one("#ws-content"))
        # A folder opens with enter; down highlights its first file, whose text shows.
        nested = sorted(p for p in on_disk if "/" in p)
        assert nested, f"{writer} wrote no file in a folder of its workspace"
        folder = nested[0].split("/")[0]
        tree.move_cursor(screen._find(tree.root, folder))
        await pilot.press("enter", "down")
        await pilot.pause()
        first = min(p for p in nested if p.startswith(folder + "/") and p.count("/") == 1)
        assert screen.shown_path == first and listed()[first].size == on_disk[first]
        assert (ws / first).read_text()[:40] in shown(screen.query_one("#ws-content"))
        # Live: a turn that records files changed makes the browser read the folders again.
        before = set(listed())
        (ws / "late-note.md").write_text("written outside the run")
        seen = screen._seen
        for _ in range(20):  # the run steps on behind the browser (as n does on the main screen)
            target = app.engine.tick + 1
            app.engine.step()
            await wait_for(pilot, lambda: app.engine.tick >= target, what=f"tick {target}")
            if files_changed_key(app.engine.state) != seen:
                break
        await wait_for(pilot, lambda: "late-note.md" in listed(), what="the browser to read the folder again")
        assert "late-note.md" not in before
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, InspectorScreen)


async def test_workspace_browser_in_replay_says_the_files_are_todays(tmp_path: Path) -> None:
    db, _ = await record_demo(tmp_path, "ws-replay", seed=7, ticks=6)
    app = ReplayRoom(db, "ws-replay", config_dir=tmp_path / "cfg", wall_clock=False, cursor_blink=False, animations=False)
    async with app.run_test(size=SIZE) as pilot:
        await replay_at_end(pilot, app, 6)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, InspectorScreen), what="the inspector")
        await pilot.press("w")
        await wait_for(pilot, lambda: isinstance(app.screen, WorkspaceScreen), what="the workspace browser")
        title = shown(app.screen.query_one("#ws-title"))
        assert "files on disk now, not at tick 6" in title
        assert app.screen.changes is None  # nothing to follow in replay


async def test_mcp_view_attached_asks_the_served_run(tmp_path: Path) -> None:
    """Attached over the socket, the view shows the served run's hub (its process runs the
    server), not a guess from this window's turns."""
    from lemming.engine.remote import ControlServer, RemoteEngine
    from lemming.tui.attach_app import AttachRoom
    from tests.support.app_driver import sim_engine

    root = demo_copy(tmp_path / "demo")
    engine = sim_engine(root, interval=0.05)
    async with ControlServer(engine, root) as server:
        task = asyncio.create_task(engine.run())
        try:
            await asyncio.sleep(0.3)
            remote = await RemoteEngine.attach(server.path)
            app = AttachRoom(remote, wall_clock=False, cursor_blink=False, animations=False, config_dir=tmp_path / "cfg")
            async with app.run_test(size=SIZE) as pilot:
                await wait_for(pilot, lambda: engine.mcp is not None and engine.mcp.status()[0].phase == "up", what="the server up")
                await pilot.press("M")
                await wait_for(pilot, lambda: isinstance(app.screen, McpScreen) and app.screen.picture is not None, what="the MCP view")
                (row,) = app.screen.picture.rows
                assert row.phase == "up" and row.pid == engine.mcp.status()[0].pid
                assert {t.name for t in row.tools} == {"get_current_time", "convert_time"}
                assert "attached" in app.screen.picture.where
                await pilot.press("escape")
                await pilot.press("ctrl+d")
                await pilot.pause(0.2)
        finally:
            engine.stop()
            await task


def test_without_a_hub_the_view_says_whether_the_run_has_not_started_or_has_stopped() -> None:
    from lemming.tui.screens.mcp import live_picture

    org = load_org(demo_copy())
    (before,) = live_picture(org, None, running=False).rows
    assert before.phase == "not started" and "not started it yet" in before.tools_note
    assert [(t.name, t.holders) for t in before.tools] == [("*", ("researcher",))]
    (after,) = live_picture(org, None, running=False, stopped=True).rows
    assert after.phase == "stopped" and "stopped" in after.tools_note
