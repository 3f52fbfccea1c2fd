"""The attached control room (`lemming attach`) and the watch header, as an operator sees them.

A sim run is served in this process the way `lemming run --headless` serves it (its own
hot-reload watcher beside it, the server closed as soon as the run ends), and an
AttachRoom follows it over the real socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import AsyncIterator

from lemming.engine.events import CommandRejected
from lemming.engine.remote import ControlServer, RemoteEngine
from lemming.engine.watch import watch_org
from lemming.tui.attach_app import AttachRoom
from lemming.tui.screens.definitions import DefinitionsScreen
from lemming.tui.screens.inject import InjectDialog
from tests.conftest import make_org, write_resume
from tests.support.app_driver import sim_engine, wait_for


def header(app: AttachRoom) -> str:
    return app.main.status.render().plain


def footer_keys(app: AttachRoom) -> set[str]:
    return {b.key for _, b, _, _ in app.screen.active_bindings.values() if b.show}


@contextlib.asynccontextmanager
async def served(org: Path, *, interval: float = 0.05, watch: bool = True, flush: float = 0.02) -> AsyncIterator[tuple]:
    """(engine, server, the run's task) for an engine on `org`, served and running; at the
    end the run is stopped and the server closed, in the headless run's order."""
    engine = sim_engine(org, interval=interval)
    stop_watching = asyncio.Event()
    server = await ControlServer(engine, org, flush=flush).start()
    task = asyncio.create_task(engine.run())
    watcher = asyncio.create_task(watch_org(engine, stop_event=stop_watching)) if watch else None
    try:
        yield engine, server, task
    finally:
        if engine.running:
            engine.stop()
        await task
        stop_watching.set()
        if watcher is not None:
            await watcher
        await server.close()


def room(remote: RemoteEngine, tmp_path: Path) -> AttachRoom:
    return AttachRoom(remote, wall_clock=False, cursor_blink=False, animations=False, config_dir=tmp_path / "cfg")


def two_agents(tmp_path: Path) -> Path:
    return make_org(tmp_path / "org", {"alice": {"reads": ["bob"]}, "bob": {"reads": ["alice"]}})


async def test_a_rejected_file_is_counted_listed_and_editable_in_the_attached_room(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    org = two_agents(tmp_path)
    async with served(org) as (engine, server, _):
        await asyncio.sleep(0.5)  # the run's watcher is up
        app = room(await RemoteEngine.attach(server.path), tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.watcher is not None and app.watcher.ready.is_set(), what="this window's watcher")
            (org / "agents" / "bob" / "resume.json").write_text("{broken")
            # The run rejects it (its toast), and this window counts it until it is fixed.
            await wait_for(pilot, lambda: any(t == "Definition rejected" for _, t, _ in app.notices), timeout=15, what="the rejection")
            await wait_for(pilot, lambda: "✗ 1 bad file (D)" in header(app), what="the header's count")
            await pilot.press("D")
            await wait_for(pilot, lambda: isinstance(app.screen, DefinitionsScreen), what="the list")
            listed = str(app.screen.query_one("#definitions-text").render())
            assert "agents/bob/resume.json" in listed and "invalid JSON" in listed
            await pilot.press("escape")
            # E: the org folder is on this machine, so the control room's editor opens it
            # (here, with no terminal to hand over, it names the file).
            app.main.select_agent("bob")
            await pilot.press("E")
            await wait_for(pilot, lambda: any(t == "Edit" for _, t, _ in app.notices), what="the edit notice")
            assert str(org / "agents" / "bob" / "resume.json") in next(text for _, t, text in app.notices if t == "Edit")
            # Put back as it runs: no event from the run, but the count goes.
            write_resume(org, "bob", reads=["alice"])
            await wait_for(pilot, lambda: "bad file" not in header(app), timeout=15, what="the fix")
            await pilot.press("ctrl+d")
        assert engine.running and not app.failures


async def test_edit_says_so_when_the_run_s_files_are_not_on_this_machine(tmp_path: Path) -> None:
    org = two_agents(tmp_path)
    async with served(org, watch=False) as (_, server, _):
        remote = await RemoteEngine.attach(server.path)
        remote.state.org.root = tmp_path / "elsewhere"  # as a run served from another file system shows it
        app = room(remote, tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.main.selected_agent is not None, what="an agent selected")
            await pilot.press("E")
            await wait_for(pilot, lambda: any(t == "Edit" for _, t, _ in app.notices), what="the edit notice")
            text = next(text for _, t, text in app.notices if t == "Edit")
            assert "not on this machine" in text and str(tmp_path / "elsewhere") in text
            assert app.watcher is None
            await pilot.press("ctrl+d")


async def test_stopping_the_run_from_the_attached_room_shows_it_stopped(tmp_path: Path) -> None:
    org = two_agents(tmp_path)
    # The server's batches wait a while: the run's last events are still queued when it closes.
    async with served(org, watch=False, flush=0.3) as (engine, server, task):
        app = room(await RemoteEngine.attach(server.path), tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.remote.tick >= 2, what="a few ticks")
            await pilot.press("X")
            await task
            await server.close()  # at once, as the headless run does when its run ends
            await wait_for(pilot, lambda: app.run_result is not None, what="the end of the stream")
            await pilot.pause(0.2)
            assert app.main.status.mode == "STOPPED" and "STOPPED" in header(app)
            assert app.remote.state.stopped == "stopped" and app.remote.tick == engine.tick
            await pilot.press("ctrl+d")


async def test_a_read_only_window_says_so_and_offers_no_steering(tmp_path: Path) -> None:
    from lemming.tui.screens.help import HelpScreen

    org = two_agents(tmp_path)
    async with served(org, watch=False) as (engine, server, _):
        app = room(await RemoteEngine.attach(server.path, read_only=True), tmp_path)
        async with app.run_test(size=(200, 40)) as pilot:
            await wait_for(pilot, lambda: app.remote.tick >= 1, what="a tick")
            await pilot.pause(0.2)
            assert "READ-ONLY" in header(app) and "X stops" not in header(app)
            keys = footer_keys(app)
            assert {"enter", "q", "question_mark"} <= keys
            assert not keys & {"space", "n", "i", "t", "e", "plus", "X", "E"}
            for key in ("space", "i", "X", "t"):
                before = len(app.notices)
                await pilot.press(key)
                await pilot.pause(0.1)
                assert not isinstance(app.screen, InjectDialog)
                assert "read-only" in app.notices[-1][2] and len(app.notices) == before + 1
            assert not engine.paused and not engine.state.stopped
            await pilot.press("question_mark")
            await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help")
            shown = str(app.screen.query_one("Static").render())
            assert "detach" in shown and "pause / resume" not in shown and "inject" not in shown
            await pilot.press("escape")
            await pilot.press("ctrl+d")


async def test_a_rejected_command_is_said_once_without_its_name_twice(tmp_path: Path) -> None:
    org = two_agents(tmp_path)
    async with served(org, watch=False) as (_, server, _):
        remote = await RemoteEngine.attach(server.path)
        looker = await RemoteEngine.attach(server.path, read_only=True)
        subs = remote.subscribe(), looker.subscribe()
        follow = [asyncio.create_task(r.run()) for r in (remote, looker)]
        remote.top_up("nobody", 1.0)  # the engine rejects it: its event is in the stream
        looker.pause()  # the server refuses it
        await asyncio.sleep(0.5)
        rejected = [[e for e in s.drain() if type(e) is CommandRejected] for s in subs]
        assert [(e.command, e.error) for e in rejected[0]] == [("top_up", "no such agent: nobody")]
        assert sorted((e.command, e.error) for e in rejected[1]) == [("pause", "this connection is read-only"), ("top_up", "no such agent: nobody")]
        for r in (remote, looker):
            r.detach()
        await asyncio.gather(*follow)


async def test_the_attached_header_keeps_the_run_id_at_80_columns(tmp_path: Path) -> None:
    org = two_agents(tmp_path)
    async with served(org, watch=False) as (engine, server, _):
        for size, hint in (((80, 24), None), ((200, 40), "attached as")):
            app = room(await RemoteEngine.attach(server.path), tmp_path)
            async with app.run_test(size=size) as pilot:
                await wait_for(pilot, lambda: app.remote.tick >= 1, what="a tick")
                await pilot.pause(0.2)
                line = header(app)
                assert line.startswith(" org  LIVE  tick ") and f"run {engine.run_id}" in line, line
                assert hint is None or (hint in line and "X stops the run" in line), line
                await pilot.press("ctrl+d")


async def test_watch_shows_the_rate_the_ticks_land_at(tmp_path: Path) -> None:
    from lemming.engine.recorded_run import RecordedRun
    from lemming.tui.replay_app import ReplayRoom
    from lemming.tui.screens.replay import ReplayScreen

    org = two_agents(tmp_path)
    db = tmp_path / "runs.db"
    engine = sim_engine(org, interval=0.1, run_id="watched")
    async with await RecordedRun.record(engine, db):
        task = asyncio.create_task(engine.run())
        try:
            app = ReplayRoom(db, "watched", follow=True, poll_interval=0.1, config_dir=tmp_path / "cfg", cursor_blink=False, animations=False)
            async with app.run_test(size=(120, 30)) as pilot:
                await wait_for(pilot, lambda: isinstance(app.screen, ReplayScreen) and app.screen.is_mounted, what="the watch screen")
                await wait_for(pilot, lambda: app.main.status.mode == "WATCH" and app.main.status.tick >= 3, timeout=20, what="watching")
                await wait_for(pilot, lambda: app.main.status.tick_rate() != "—", timeout=10, what="a tick rate")
                assert 1 <= float(app.main.status.tick_rate()) <= 20
                assert " t/s" in header(app) and "— t/s" not in header(app)
                await pilot.press("q")
        finally:
            engine.stop()
            await task
