"""Replay, fork and watch in the control room, driven as an operator would (App.run_test + Pilot).

A seeded run is recorded by the live control room, with the panes' content noted
at a few ticks; the replay of that run must show the same at those ticks, whatever
path the cursor took to get there. Forks continue from their tick; `watch` follows
a run that another process writes; nothing of replay writes to the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from lemming.engine.events import FilesNotWritten, MemoryChanged
from lemming.engine.remote import ControlClient, find_run
from lemming.engine.store import RunStore
from tests.conftest import make_org
from lemming.tui.app import ControlRoom
from lemming.tui.model import RunView
from lemming.tui.replay import VIEW_SKIPS, ReplayPosition, ReplaySource
from lemming.tui.replay_app import ReplayRoom
from lemming.tui.screens.inspector import InspectorScreen
from lemming.tui.screens.main import MainScreen
from lemming.tui.screens.replay import ReplayScreen
from lemming.tui.screens.runs import RunsScreen
from tests.support.app_driver import advance, settle, sim_engine, wait_for
from lemming.tui.widgets.line_table import LineTable

REPO = Path(__file__).resolve().parent.parent
SIZE = (160, 50)
WIDTH = 150
RUN = "recorded-run"
#: Ticks at which the live panes are noted and compared with the replay's.
SAMPLES = (2, 5, 8)
TICKS = 9


def rows(table: LineTable, width: int = WIDTH) -> list[str]:
    return [table.render_row(i, width).plain for i in range(table.row_count())]


def header(table: LineTable, width: int = WIDTH) -> list[str]:
    return [t.plain for t in table.render_header(width)]


def panes(screen: MainScreen, upto: int) -> dict[str, object]:
    """What every pane shows at this tick, as text (the timeline's rows up to `upto`).

    The stream pane is asked to show each agent's reply in turn, as an operator
    moving down the roster would see it.
    """
    timeline = [r.lstrip("▸ ").strip() for r in rows(screen.timeline)]
    timeline = [r for r in timeline if r and r.split()[0].isdigit() and int(r.split()[0]) <= upto]
    streams = {}
    for name in screen.view.order:
        screen.stream.show_agent(name)
        streams[name] = list(screen.stream.lines)
    screen.stream.show_agent(screen.selected_agent)
    s = screen.status
    return {
        "status": (s.tick, round(s.total_spend, 12), s.interval, s.run_id),
        "roster": rows(screen.roster),
        "credits": header(screen.credits) + rows(screen.credits),
        "graph": header(screen.graph) + rows(screen.graph),
        "timeline": timeline,
        "stream": streams,
    }


def org_four(root: Path) -> Path:
    return make_org(
        root,
        {
            "alice": {"reads": ["bob"], "credits": {"max_credits": 10.0, "soft_cap": 5.0}},
            "bob": {"reads": ["alice", "carol"]},
            "carol": {"reads": ["*"], "every": 2, "offset": 1},
            "dave": {"reads": ["carol"], "every": 3},
        },
    )


async def record_live(org: Path, db: Path, cfg: Path) -> tuple[dict[int, dict], dict[int, object]]:
    """Run the live control room on `org`, recording to `db`: TICKS ticks, an injected
    message and a top-up on the way. Returns the panes at each sample tick and, at
    each, the last turn records the engine held."""
    engine = sim_engine(org, seed=3, paused=True, interval=0.0, tokens_per_s=0, run_id=RUN)
    app = ControlRoom(engine, config_dir=cfg, wall_clock=False, cursor_blink=False, animations=False, pump_interval=0.02, record=db, watch=False)
    seen: dict[int, dict] = {}
    turns: dict[int, object] = {}
    async with app.run_test(size=SIZE) as pilot:
        for t in range(1, TICKS + 1):
            await advance(pilot, app, 1)
            if t in SAMPLES:
                seen[t] = panes(app.main, t)
                turns[t] = dict(app.engine.state.last_turn)
            if t == 3:
                app.engine.inject("Ship it by Friday.", ["alice"])
                app.engine.top_up("bob", 2.5)
                await settle(pilot, app)
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.engine.running, what="the run to stop")
    return seen, turns


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory):
    """One live run recorded for the module: (its folder, live panes by tick, last turns by tick)."""
    root = tmp_path_factory.mktemp("recorded")
    org = org_four(root / "org")
    live, turns = asyncio.run(record_live(org, root / "runs.db", root / "cfg"))
    return root, live, turns


@pytest.fixture
def db(recording, tmp_path: Path) -> Path:
    """A copy of the recorded run's database, this test's own."""
    root = recording[0]
    for p in root.glob("runs.db*"):
        shutil.copy(p, tmp_path / p.name)
    return tmp_path / "runs.db"


def replay_app(db: Path, cfg: Path, run: str | None = RUN, **kw) -> ReplayRoom:  # noqa: ANN003
    return ReplayRoom(db, run, config_dir=cfg, wall_clock=False, cursor_blink=False, animations=False, **kw)


async def replay_screen(pilot, app: ReplayRoom) -> ReplayScreen:  # noqa: ANN001
    await wait_for(pilot, lambda: isinstance(app.screen, ReplayScreen) and app.screen.is_mounted, what="the replay screen")
    await pilot.pause()
    return app.screen  # type: ignore[return-value]


async def at_tick(pilot, screen: ReplayScreen, tick: int) -> None:  # noqa: ANN001
    await wait_for(pilot, lambda: screen.position.tick == tick == screen.target, what=f"tick {tick}")
    await pilot.pause()


async def go(pilot, screen: ReplayScreen, tick: int) -> None:  # noqa: ANN001
    """`g`, the tick number, enter."""
    await pilot.press("g")
    await pilot.pause()
    await pilot.press(*str(tick), "enter")
    await at_tick(pilot, screen, tick)


async def test_replay_shows_every_pane_as_it_was_live(recording, db: Path, tmp_path: Path) -> None:
    _, live, live_turns = recording
    app = replay_app(db, tmp_path / "cfg")
    async with app.run_test(size=SIZE) as pilot:
        screen = await replay_screen(pilot, app)
        assert screen.status.mode == "REPLAY"
        assert screen.position.tick == TICKS  # opens at the last tick
        await at_tick(pilot, screen, TICKS)
        for t in SAMPLES:
            await go(pilot, screen, t)
            got = panes(screen, t)
            for pane, want in live[t].items():
                assert got[pane] == want, f"{pane} at tick {t}"
            # The engine's last turns at that tick, whole (prompts included, as the store rebuilds them).
            for name, rec in live_turns[t].items():  # type: ignore[union-attr]
                assert screen.source.state.last_turn[name].raw_output == rec.raw_output
        # The injected message and the top-up are where they happened: on tick 4's row.
        row4 = next(r for r in rows(screen.timeline) if r.strip().split()[0] == "4")
        assert "✉→alice" in row4 and "+2.5→bob" in row4
        assert "REPLAY" in screen.status.render().plain
        await pilot.press("q")
    assert not app.failures


async def test_cursor_moves_back_and_forth_consistently(db: Path, tmp_path: Path) -> None:
    app = replay_app(db, tmp_path / "cfg")
    async with app.run_test(size=SIZE) as pilot:
        screen = await replay_screen(pilot, app)
        await at_tick(pilot, screen, TICKS)
        await pilot.press("home")
        await at_tick(pilot, screen, 1)
        ways: dict[str, dict] = {}
        for _ in range(4):  # 1 → 5 one tick at a time
            await pilot.press("right")
        await at_tick(pilot, screen, 5)
        ways["forward"] = panes(screen, 5)
        await pilot.press("end")
        await at_tick(pilot, screen, TICKS)
        for _ in range(TICKS - 5):
            await pilot.press("left")
        await at_tick(pilot, screen, 5)
        ways["back"] = panes(screen, 5)
        await pilot.press("home")
        await at_tick(pilot, screen, 1)
        await go(pilot, screen, 5)
        ways["jump"] = panes(screen, 5)
        await pilot.press("pagedown")  # 5 + 10 is past the end: the last tick
        await at_tick(pilot, screen, TICKS)
        await pilot.press("pageup")  # 9 - 10 is before the start: the first tick
        await at_tick(pilot, screen, 1)
        await pilot.press("4")  # the timeline pane: its cursor rows are ticks
        await pilot.press("down", "down", "down", "down")
        await at_tick(pilot, screen, 5)
        ways["timeline"] = panes(screen, 5)
        assert ways["forward"] == ways["back"] == ways["jump"] == ways["timeline"]
        assert screen.timeline.selected_tick == 5
        await pilot.press("q")
    assert not app.failures


async def test_inspector_shows_a_recorded_turn_exactly(recording, db: Path, tmp_path: Path) -> None:
    live_turns = recording[2]
    app = replay_app(db, tmp_path / "cfg")
    async with app.run_test(size=SIZE) as pilot:
        screen = await replay_screen(pilot, app)
        await go(pilot, screen, 5)
        screen.select_agent("alice")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, InspectorScreen), what="the inspector")
        inspector: InspectorScreen = app.screen  # type: ignore[assignment]
        want = live_turns[5]["alice"]  # type: ignore[index]
        rec = inspector.record
        assert (rec.tick, rec.agent) == (want.tick, "alice")
        assert rec.prompt == want.prompt and rec.prompt_hash == want.prompt_hash  # rebuilt byte for byte
        assert rec.raw_output == want.raw_output and rec.parsed == want.parsed
        assert [t.tick for t in inspector.turns] == sorted(t.tick for t in inspector.turns)
        assert all(t.tick <= 5 for t in inspector.turns)
        await pilot.press("escape")
        await pilot.press("q")
    assert not app.failures


async def test_fork_continues_from_the_cursor_tick(db: Path, tmp_path: Path) -> None:
    store = await RunStore.open(db, readonly=True)
    parent_at_4 = (await store.state_at(RUN, 4)).fingerprint()
    parent_at_5 = (await store.state_at(RUN, 5)).fingerprint()
    await store.close()
    app = replay_app(db, tmp_path / "cfg", sim_tokens_per_s=0, interval=0.0)
    async with app.run_test(size=SIZE) as pilot:
        screen = await replay_screen(pilot, app)
        await go(pilot, screen, 4)
        await pilot.press("f")
        await wait_for(pilot, lambda: app.mode == "live" and isinstance(app.screen, MainScreen) and app.engine.running, what="the fork to run")
        engine = app.engine
        assert not isinstance(app.screen, ReplayScreen)
        assert engine.tick == 4 and engine.paused
        assert engine.parent_run == RUN and engine.fork_tick == 4
        assert app.main.status.mode == "PAUSED"
        fork_id = engine.run_id
        await advance(pilot, app, 1)  # n: one tick, from 4 to 5
        assert engine.tick == 5
        fork_at_5 = engine.state.fingerprint()
        await pilot.press("q")
        await wait_for(pilot, lambda: not engine.running, what="the fork to stop")
    assert not app.failures
    store = await RunStore.open(db, readonly=True)
    try:
        info = await store.get_run(fork_id)
        assert (info.parent_run, info.fork_tick, info.ticks) == (RUN, 4, 5)
        assert (await store.state_at(fork_id, 4)).fingerprint() == parent_at_4
        # Same seed, same state, same definitions: the fork's tick 5 is the parent's.
        assert fork_at_5["credits"] == parent_at_5["credits"]
        assert (await store.state_at(fork_id, 5)).fingerprint()["credits"] == fork_at_5["credits"]
    finally:
        await store.close()


def _digest(db: Path) -> dict[str, str]:
    out = {}
    for p in sorted(db.parent.glob(db.name + "*")):
        out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


async def test_replay_and_the_run_picker_never_write(db: Path, tmp_path: Path) -> None:
    before = _digest(db)
    app = replay_app(db, tmp_path / "cfg", run=None, can_fork=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.runs, what="the run picker")
        picker: RunsScreen = app.screen  # type: ignore[assignment]
        assert [r.id for r in picker.runs] == [RUN]
        table_text = str(picker.query_one("DataTable").get_row_at(0))
        assert "recorded-run" in table_text and "stopped" in table_text  # the operator quit it
        await pilot.press("enter")
        screen = await replay_screen(pilot, app)
        await at_tick(pilot, screen, TICKS)
        await pilot.press("left", "left", "home", "p")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, InspectorScreen), what="the inspector")
        await pilot.press("escape")
        await pilot.press("f")  # a read-only session: no fork
        await pilot.pause(0.2)
        assert app.mode == "replay"
        assert screen.position.source.store.readonly
        await pilot.press("q")
    # The database is byte for byte what it was. (SQLite's WAL mode makes a reader
    # create the -wal and -shm side files if they are missing; the WAL stays empty.)
    after = _digest(db)
    assert after["runs.db"] == before["runs.db"]
    wal = db.parent / "runs.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0 or after.get("runs.db-wal") == before.get("runs.db-wal")


async def test_the_live_control_room_lists_recorded_runs(db: Path, tmp_path: Path) -> None:
    org = org_four(tmp_path / "org")
    engine = sim_engine(org, seed=1, paused=True, interval=0.0, tokens_per_s=0, run_id="live-now")
    app = ControlRoom(engine, config_dir=tmp_path / "cfg", wall_clock=False, cursor_blink=False, animations=False, record=db, watch=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.recording is not None, what="the recording")
        await pilot.press("ctrl+p")
        await pilot.press(*"Recorded runs", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen) and len(app.screen.runs) == 2, what="the run picker")
        assert {r.id for r in app.screen.runs} == {RUN, "live-now"}  # type: ignore[attr-defined]
        await pilot.press("escape")
        await pilot.press("q")


async def recorded_sim(org: Path, db: Path, run_id: str, *, seed: int):  # noqa: ANN201
    """A sim engine on `org` recorded to `db` as `run_id`, and the store (close it when done)."""
    engine = sim_engine(org, seed=seed, interval=0.0, tokens_per_s=0, run_id=run_id)
    store = await RunStore.open(db)
    await store.create_run(run_id=run_id, org_root=org, seed=seed, definitions_hash=engine.org.definitions_hash(), target_ticks=None)
    engine.recorder = store.recorder(run_id, state=engine.state)
    return engine, store


async def test_definition_changes_show_where_they_happened(tmp_path: Path) -> None:
    from lemming.engine.org import load_org
    from tests.conftest import write_resume

    org = org_four(tmp_path / "org")
    db = tmp_path / "runs.db"
    engine, store = await recorded_sim(org, db, "reloaded", seed=4)
    await engine.run(ticks=3)
    write_resume(org, "erin", reads=["alice"])  # a new agent folder, picked up at the boundary
    engine.reload(load_org(org))
    await engine.run(ticks=3)
    await store.close()
    app = replay_app(db, tmp_path / "cfg", run="reloaded")
    async with app.run_test(size=SIZE) as pilot:
        screen = await replay_screen(pilot, app)
        await go(pilot, screen, 3)
        assert "erin" not in screen.view.order and "erin" not in screen.source.org.agents
        await pilot.press("right")
        await at_tick(pilot, screen, 4)
        assert "erin" in screen.view.order and any(r.split()[1] == "erin" for r in rows(screen.roster))
        row4 = next(r for r in rows(screen.timeline) if r.lstrip("▸ ").split()[0] == "4")
        assert "op: reload" in row4
        assert any("Definitions reloaded" in title and "added erin" in text for _, title, text in app.notices)
        await pilot.press("left")
        await at_tick(pilot, screen, 3)
        assert "erin" not in screen.view.order
        await pilot.press("q")
    assert not app.failures


def test_view_skips_are_what_the_view_ignores() -> None:
    """Replay leaves VIEW_SKIPS out of the view's folds: RunView.apply must ignore them."""
    assert VIEW_SKIPS == {MemoryChanged, FilesNotWritten}
    view = RunView(["alice"])
    ch = view.apply([MemoryChanged(1, "alice", "set", "k", 1)])
    assert ch.empty and view.agents["alice"].last_tick is None and view.committed_tick == 0


async def test_watch_follows_a_run_written_by_another_process(tmp_path: Path) -> None:
    org = org_four(tmp_path / "org")
    db = tmp_path / "runs.db"
    ticks = 10
    writer = subprocess.Popen(
        [sys.executable, "-m", "lemming.tui.cli", "run", "--headless", "--org", str(org), "--db", str(db),
         "--ticks", str(ticks), "--interval", "0.3", "--seed", "2", "--sim-tokens-per-s", "0"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        run_id = None
        for _ in range(600):
            if db.exists():
                try:
                    store = await RunStore.open(db, readonly=True)
                    runs = await store.list_runs()
                    await store.close()
                except Exception:
                    runs = []
                if runs:
                    run_id = runs[0].id
                    break
            await asyncio.sleep(0.05)
        assert run_id is not None, "the writer never recorded its run"
        shown: list[int] = []
        app = replay_app(db, tmp_path / "cfg", run=run_id, follow=True, poll_interval=0.1, on_frame=lambda f: shown.append(f.tick))
        async with app.run_test(size=(120, 36)) as pilot:
            screen = await replay_screen(pilot, app)
            modes = set()

            def done() -> bool:
                modes.add(screen.status.mode)
                return screen.position.tick == ticks and not screen.recorded.writing

            try:
                await wait_for(pilot, done, timeout=60, what="the watcher to reach the writer's last tick")
            except AssertionError as e:
                raise AssertionError(f"{e}: shown {shown}, cursor at {screen.position.tick}, target {screen.target}, run {screen.source.info}") from None
            assert "WATCH" in modes
            await pilot.pause(0.2)
            assert screen.status.tick == ticks
            assert screen.position.index.hi == ticks
            assert [r.lstrip("▸ ").split()[0] for r in rows(screen.timeline)] == [str(t) for t in range(1, ticks + 1)]
            await pilot.press("q")
        assert not app.failures
    finally:
        writer.wait(timeout=30)
    assert writer.returncode == 0, writer.stderr.read() if writer.stderr else ""
    # Each tick committed after the watcher opened was shown, one after the other.
    first = shown[0]
    assert shown == list(range(first, ticks + 1)), shown
    assert first < ticks


async def test_replay_source_folds_agree_with_the_store(tmp_path: Path) -> None:
    """Stepping forward from a light state gives what the store's fold gives."""
    org = org_four(tmp_path / "org")
    db = tmp_path / "runs.db"
    engine = sim_engine(org, seed=5, interval=0.0, tokens_per_s=0, run_id="headless")
    store = await RunStore.open(db)
    await store.create_run(run_id="headless", org_root=org, seed=5, definitions_hash=engine.org.definitions_hash(), target_ticks=12)
    engine.recorder = store.recorder("headless", state=engine.state)
    await engine.run(ticks=12)
    await store.close()
    source = await ReplaySource.open(db, "headless")
    pos = ReplayPosition(source)
    try:
        await pos.goto(1)
        for t in range(2, 13):
            await pos.goto(t)
            truth = await source.store.state_at("headless", t, prompts=False)
            got = pos.at.state
            assert (got.tick, got.credits, got.spent, got.sent, got.enabled) == (truth.tick, truth.credits, truth.spent, truth.sent, truth.enabled)
            assert {k: v.raw_output for k, v in got.last_turn.items()} == {k: v.raw_output for k, v in truth.last_turn.items()}
        assert pos.view.committed_tick == 12
    finally:
        await pos.close()


def test_serve_answers_with_the_textual_serve_page(tmp_path: Path) -> None:
    pytest.importorskip("textual_serve")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tmp_path / "runs.db"
    server = subprocess.Popen(
        [sys.executable, "-m", "lemming.tui.cli", "serve", "--port", str(port), "--db", str(db)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        body = ""
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    body = r.read().decode()
                    break
            except OSError:
                if server.poll() is not None:
                    break
                import time

                time.sleep(0.1)
        assert "LeMMing Control Room" in body and "/ws" in body and "textual" in body.lower()
    finally:
        server.terminate()
        server.wait(timeout=10)
