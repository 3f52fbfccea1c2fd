"""Hot reload with real files and the real watcher: edits reach the next turn, bad files
are rejected while the last good definition keeps running, bursts are one change."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable

import pytest

from lemming.engine.engine import Engine
from lemming.engine.events import DefinitionRejected, DefinitionsReloaded, Event, TickStarted, TurnFinished, TurnRecord
from lemming.engine.org import load_org
from lemming.engine.watch import DefinitionWatcher, WatchReport, definition_path
from tests.conftest import REPO, make_org, write_resume

SIM_FAST = {"fast": {"provider": "sim", "model_name": "sim-fast", "prices": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}}


class Harness:
    """A live engine (sim, full speed, 50 ms between ticks) with its watcher, both running."""

    def __init__(self, root: Path, engine: Engine, watcher: DefinitionWatcher) -> None:
        self.root = root
        self.engine = engine
        self.watcher = watcher
        self.sub = engine.subscribe(tokens=False)
        self.events: list[Event] = []
        self.reports: list[WatchReport] = []
        watcher.on_change = self.reports.append

    def of(self, kind: type) -> list:
        self._drain()
        return [e for e in self.events if type(e) is kind]

    def _drain(self) -> None:
        self.events.extend(self.sub.drain())

    async def until(self, cond: Callable[[], object], timeout: float = 8.0, what: str = "") -> object:
        deadline = time.monotonic() + timeout
        while True:
            self._drain()
            got = cond()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or cond}")
            await asyncio.sleep(0.01)

    async def reload(self, n: int = 1) -> DefinitionsReloaded:
        """Wait for the n-th DefinitionsReloaded of the run and return it."""
        await self.until(lambda: len(self.of(DefinitionsReloaded)) >= n, what=f"reload #{n}")
        return self.of(DefinitionsReloaded)[n - 1]

    async def rejection(self, n: int = 1) -> DefinitionRejected:
        await self.until(lambda: len(self.of(DefinitionRejected)) >= n, what=f"rejection #{n}")
        return self.of(DefinitionRejected)[n - 1]

    def turns(self, agent: str) -> list[TurnFinished]:
        return [e for e in self.of(TurnFinished) if e.agent == agent]

    async def turn_after(self, agent: str, tick: int) -> TurnFinished:
        """The first turn of `agent` at a tick after `tick`."""
        def find() -> TurnFinished | None:
            return next((e for e in self.turns(agent) if e.tick > tick), None)

        return await self.until(find, what=f"a turn of {agent} after tick {tick}")  # type: ignore[return-value]


@asynccontextmanager
async def running(root: Path, **watch_kw) -> AsyncIterator[Harness]:
    engine = Engine(load_org(root, strict=watch_kw.pop("strict", True)), interval=0.05)
    watcher = DefinitionWatcher(engine, debounce_ms=watch_kw.pop("debounce_ms", 100), **watch_kw)
    h = Harness(root, engine, watcher)
    stop = asyncio.Event()
    watch_task = asyncio.create_task(watcher.run(stop))
    run_task = asyncio.create_task(engine.run())
    try:
        async with asyncio.timeout(5):
            await watcher.ready.wait()
        await h.until(lambda: engine.tick >= 1, what="the first tick")
        yield h
    finally:
        stop.set()
        engine.stop()
        async with asyncio.timeout(5):
            await asyncio.gather(watch_task, run_task)
        h.sub.close()


def prompt_text(turn: TurnFinished | TurnRecord) -> str:
    record = turn.record if isinstance(turn, TurnFinished) else turn
    return "\n".join(m["content"] for m in record.prompt)


def resume_path(root: Path, name: str) -> Path:
    return root / "agents" / name / "resume.json"


def edit_resume(root: Path, agent: str, **changes) -> None:
    """Rewrite an existing resume.json with some fields changed, as an editor would."""
    path = resume_path(root, agent)
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))


# --- what the watcher listens to -------------------------------------------------------


@pytest.mark.parametrize(
    "rel, wanted",
    [
        ("agents/alice/resume.json", True),
        ("agents/alice", True),
        ("agents", True),
        ("models.json", True),
        ("credits.json", True),
        ("org.json", True),
        ("lemming/config/models.json", True),
        ("lemming/config/org_config.json", True),
        ("agents/alice/.resume.json.swp", False),
        ("agents/alice/resume.json~", False),
        ("agents/alice/4913", False),
        ("agents/alice/#resume.json#", False),
        ("agents/alice/outbox/1.json", False),
        ("agents/.hidden", False),
        ("agents/.hidden/resume.json", False),
        ("agents/alice~/resume.json", False),
        ("agents/agent_template/resume.json", False),
        (".lemming/runs.db", False),
        (".lemming/runs.db-wal", False),
        (".git/index", False),
        ("README.md", False),
        ("lemming/engine.py", False),
    ],
)
def test_which_paths_are_definitions(rel: str, wanted: bool) -> None:
    assert definition_path(tuple(rel.split("/"))) is wanted


# --- edits apply at the next tick boundary ---------------------------------------------


async def test_edited_instructions_are_used_by_the_next_turn(tmp_path: Path) -> None:
    root = make_org(tmp_path / "org", {"alice": {"instructions": "Write plans."}, "bob": {"reads": ["alice"]}})
    async with running(root) as h:
        edit_resume(root, "alice", instructions="Answer only in haiku.")
        ev = await h.reload()
        assert ev.changed == {"alice": ["instructions"]} and not ev.added and not ev.removed
        turn = await h.turn_after("alice", ev.tick)
        assert "Answer only in haiku." in prompt_text(turn)
        # Every turn before the boundary had the old text, every one after has the new.
        for t in h.turns("alice"):
            assert ("haiku" in prompt_text(t)) is (t.tick > ev.tick)
        await h.until(lambda: h.engine.state.last_turn["alice"].tick > ev.tick)
        assert "Answer only in haiku." in prompt_text(h.engine.state.last_turn["alice"])
        assert h.engine.org.agents["alice"].resume.instructions == "Answer only in haiku."
        assert h.watcher.rejected == {}


async def test_a_new_schedule_changes_the_firing_pattern_from_the_next_tick(tmp_path: Path) -> None:
    root = make_org(tmp_path / "org", {"alice": {}, "bob": {}})
    async with running(root) as h:
        edit_resume(root, "alice", schedule={"run_every_n_ticks": 3, "phase_offset": 1})
        ev = await h.reload()
        assert ev.changed == {"alice": ["schedule.phase_offset", "schedule.run_every_n_ticks"]}
        await h.until(lambda: h.engine.tick >= ev.tick + 7, what="seven more ticks")
        for st in h.of(TickStarted):
            alice_fires = "alice" in st.firing
            assert "bob" in st.firing
            if st.tick <= ev.tick:
                assert alice_fires, st
            else:
                assert alice_fires is (st.tick % 3 == 1), st


# --- agents come and go -----------------------------------------------------------------


async def test_agents_are_added_retired_and_renamed(tmp_path: Path) -> None:
    root = make_org(tmp_path / "org", {"alice": {"reads": ["bob"]}, "bob": {"reads": ["alice"]}})
    async with running(root) as h:
        await h.until(lambda: h.engine.state.sent.get("bob", 0) > 0, what="bob to send something")

        write_resume(root, "carol", reads=["*"])
        ev = await h.reload(1)
        assert ev.added == ("carol",) and ev.removed == () and ev.changed == {}
        await h.turn_after("carol", ev.tick)

        shutil.rmtree(root / "agents" / "bob")
        ev = await h.reload(2)
        assert ev.removed == ("bob",) and ev.added == ()
        await h.until(lambda: h.engine.tick >= ev.tick + 3)
        assert not [t for t in h.turns("bob") if t.tick > ev.tick]
        assert h.engine.agent_status("bob") == "retired"
        # Its history stays, and the agent that read it keeps working.
        assert any(e.agent == "bob" for e in h.engine.state.board.all())
        alice_after = [t for t in h.turns("alice") if t.tick > ev.tick]
        assert alice_after and all(t.record.status == "ok" for t in alice_after)

        # A folder renamed along with the name inside: one retirement and one addition.
        (root / "agents" / "carol").rename(root / "agents" / "dora")
        edit_resume(root, "dora", name="dora")
        ev = await h.reload(3)
        assert (ev.added, ev.removed) == (("dora",), ("carol",))
        await h.turn_after("dora", ev.tick)

        # A folder renamed without its name: the old agent retires, the new folder is an error.
        (root / "agents" / "dora").rename(root / "agents" / "erin")
        ev = await h.reload(4)
        assert (ev.added, ev.removed) == ((), ("dora",))
        rej = await h.rejection()
        assert rej.file == "agents/erin/resume.json"
        assert "name: is 'dora' but the folder is 'erin'" in rej.errors[0]
        assert "erin" not in h.engine.org.agents
        assert set(h.watcher.rejected) == {"agents/erin/resume.json"}


async def test_removing_every_agent_is_rejected_and_the_org_keeps_running(tmp_path: Path) -> None:
    root = make_org(tmp_path / "org", {"alice": {}})
    async with running(root) as h:
        shutil.rmtree(root / "agents" / "alice")
        rej = await h.rejection()
        assert rej.file == "agents" and "holds no agent folder" in rej.errors[0]
        tick = h.engine.tick
        await h.turn_after("alice", tick)
        write_resume(root, "alice", instructions="Back again.")
        ev = await h.reload()
        assert ev.changed == {"alice": ["instructions"]}
        assert h.watcher.rejected == {}


async def test_a_replaced_agents_folder_is_one_change_and_stays_watched(tmp_path: Path) -> None:
    root = make_org(tmp_path / "org", {"alice": {}, "bob": {}})
    async with running(root) as h:
        # As a checkout or a sync tool does it: the whole folder goes, a new one comes.
        fresh = make_org(tmp_path / "staging", {"alice": {"instructions": "New era."}, "carol": {}})
        (root / "agents").rename(tmp_path / "agents.old")
        (fresh / "agents").rename(root / "agents")
        ev = await h.reload()
        assert (ev.added, ev.removed, ev.changed) == (("carol",), ("bob",), {"alice": ["instructions"]})
        # Edits inside the new folder are still seen.
        edit_resume(root, "carol", instructions="Still watched.")
        ev = await h.reload(2)
        assert ev.changed == {"carol": ["instructions"]}
        assert h.of(DefinitionRejected) == []


async def test_files_left_out_by_a_lenient_start_are_listed_and_apply_once_fixed(tmp_path: Path) -> None:
    root = make_org(tmp_path / "org", {"alice": {}, "bob": {"model": "gpt-9"}})
    async with running(root, strict=False) as h:
        assert set(h.watcher.rejected) == {"agents/bob/resume.json"}
        assert "unknown model 'gpt-9'" in h.watcher.rejected["agents/bob/resume.json"][0]
        assert h.of(DefinitionRejected) == [] and h.reports == []
        edit_resume(root, "bob", model="sim")
        ev = await h.reload()
        assert ev.added == ("bob",)
        assert h.watcher.rejected == {} and h.reports[-1].fixed == ("agents/bob/resume.json",)
        await h.turn_after("bob", ev.tick)


# --- broken files are rejected; the last good definition keeps running -----------------

BREAKS = {
    "invalid JSON": ('{"name": "alice", "model": "sim",', "line 1 column 34: invalid JSON"),
    "wrong type": ({"schedule": {"run_every_n_ticks": "often"}}, "schedule.run_every_n_ticks: "),
    "unknown model": ({"model": "gpt-9"}, "model.key: unknown model 'gpt-9'"),
    "negative period": ({"schedule": {"run_every_n_ticks": -2}}, "schedule.run_every_n_ticks: "),
    "name mismatch": ({"name": "mallory"}, "name: is 'mallory' but the folder is 'alice'"),
}


@pytest.mark.parametrize("case", list(BREAKS))
async def test_a_broken_file_is_rejected_and_the_fix_applies(tmp_path: Path, case: str) -> None:
    root = make_org(tmp_path / "org", {"alice": {"instructions": "Keep the old ways."}, "bob": {"reads": ["alice"]}})
    breakage, expected = BREAKS[case]
    async with running(root) as h:
        if isinstance(breakage, str):
            resume_path(root, "alice").write_text(breakage)
        else:
            edit_resume(root, "alice", **breakage)
        rej = await h.rejection()
        assert rej.file == "agents/alice/resume.json"
        assert any(expected in e for e in rej.errors), rej.errors
        assert all(e.startswith("agents/alice/resume.json: ") for e in rej.errors)
        assert h.watcher.rejected == {"agents/alice/resume.json": rej.errors}

        # The last good definition keeps running, on its old schedule, with its old text.
        turn = await h.turn_after("alice", rej.tick)
        assert "Keep the old ways." in prompt_text(turn) and turn.record.status == "ok"
        assert h.engine.agent_status("alice") != "retired"
        assert h.of(DefinitionsReloaded) == []

        write_resume(root, "alice", instructions="Fixed and new.")
        ev = await h.reload()
        assert ev.changed == {"alice": ["instructions"]}
        assert h.watcher.rejected == {}
        assert h.reports[-1].fixed == ("agents/alice/resume.json",)
        turn = await h.turn_after("alice", ev.tick)
        assert "Fixed and new." in prompt_text(turn)


async def test_a_file_put_back_as_it_was_leaves_the_rejected_list_without_a_reload(tmp_path: Path) -> None:
    root = make_org(tmp_path / "org", {"alice": {}, "bob": {}})
    good = resume_path(root, "bob").read_text()
    async with running(root) as h:
        resume_path(root, "bob").write_text("{")
        await h.rejection()
        assert list(h.watcher.rejected) == ["agents/bob/resume.json"]
        # An unrelated edit does not announce bob's old news again.
        edit_resume(root, "alice", instructions="Unrelated.")
        await h.reload()
        assert len(h.of(DefinitionRejected)) == 1
        assert list(h.watcher.rejected) == ["agents/bob/resume.json"]
        resume_path(root, "bob").write_text(good)
        report = await h.until(
            lambda: next((r for r in h.reports if r.fixed), None), what="the fix to be noticed"
        )
        assert report.fixed == ("agents/bob/resume.json",) and not report.reload_queued
        assert h.watcher.rejected == {}
        assert len(h.of(DefinitionsReloaded)) == 1


async def test_a_broken_models_json_keeps_the_last_good_models(tmp_path: Path) -> None:
    root = make_org(tmp_path / "org", {"alice": {"model": "fast"}, "bob": {}}, models=SIM_FAST)
    async with running(root) as h:
        (root / "models.json").write_text('{"fast": {"provider": "sim", ')
        rej = await h.rejection()
        # Only models.json is named: the agents that use its models are not blamed.
        assert rej.file == "models.json" and "invalid JSON" in rej.errors[0]
        assert set(h.watcher.rejected) == {"models.json"}
        turn = await h.turn_after("alice", rej.tick)
        assert turn.record.status == "ok" and turn.record.model_name == "sim-fast"

        fixed = {"fast": {**SIM_FAST["fast"], "model_name": "sim-faster"}}
        (root / "models.json").write_text(json.dumps(fixed))
        ev = await h.reload()
        assert ev.changed == {"models.json": ["fast"]}
        turn = await h.turn_after("alice", ev.tick)
        assert turn.record.model_name == "sim-faster"
        assert h.watcher.rejected == {}


# --- bursts and noise ---------------------------------------------------------------------


async def test_a_burst_of_fifty_writes_is_one_change(tmp_path: Path) -> None:
    root = make_org(tmp_path / "org", {"alice": {}, "bob": {}})
    async with running(root, debounce_ms=500) as h:
        path = resume_path(root, "alice")
        data = json.loads(path.read_text())
        for i in range(50):
            # Five groups of ten writes, 60 ms apart: longer than watchfiles' own step (50 ms),
            # so it reports several batches; the watcher's quiet window folds them into one.
            if i and i % 10 == 0:
                await asyncio.sleep(0.06)
            text = json.dumps({**data, "instructions": f"version {i}"})
            # Half the writes are caught half-written, as an editor or a checkout leaves them.
            path.write_text(text if i % 2 else text[: len(text) // 2])
            path.write_text(text)
        ev = await h.reload()
        assert ev.changed == {"alice": ["instructions"]}
        assert h.engine.org.agents["alice"].resume.instructions == "version 49"
        await h.until(lambda: h.engine.tick >= ev.tick + 5)
        assert len(h.of(DefinitionsReloaded)) == 1
        assert h.of(DefinitionRejected) == []
        assert len(h.reports) == 1 and h.reports[0].files == ("agents/alice/resume.json",)


async def test_the_store_editor_leftovers_and_other_files_do_not_wake_it(tmp_path: Path) -> None:
    root = make_org(tmp_path / "org", {"alice": {}})
    async with running(root) as h:
        (root / ".lemming").mkdir()
        (root / ".lemming" / "runs.db").write_bytes(b"x" * 100)
        (root / "agents" / "alice" / ".resume.json.swp").write_text("swap")
        (root / "agents" / "alice" / "resume.json~").write_text("{")
        (root / "agents" / "alice" / "notes.md").write_text("notes")
        (root / "agents" / ".trash").mkdir()
        (root / "agents" / ".trash" / "resume.json").write_text("{")
        (root / "README.md").write_text("readme")
        # Give each a chance to be (wrongly) reported on its own: three quiet windows.
        deadline = time.monotonic() + 0.4
        await h.until(lambda: time.monotonic() > deadline)
        assert h.reports == []
        edit_resume(root, "alice", instructions="Real change.")
        await h.reload()
        assert [r.files for r in h.reports] == [("agents/alice/resume.json",)]


# --- stopping --------------------------------------------------------------------------------


async def test_the_watcher_stops_at_once(tmp_path: Path) -> None:
    root = make_org(tmp_path / "org", {"alice": {}})
    engine = Engine(load_org(root))
    for how in ("stop_event", "cancel"):
        watcher = DefinitionWatcher(engine)
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        async with asyncio.timeout(5):
            await watcher.ready.wait()
        t0 = time.monotonic()
        if how == "stop_event":
            stop.set()
            await task
        else:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert time.monotonic() - t0 < 0.25, how


# --- the headless command ---------------------------------------------------------------------


def test_headless_run_prints_a_line_per_reload_and_rejection(tmp_path: Path) -> None:
    root = make_org(tmp_path / "org", {"alice": {}, "bob": {}})
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from lemming.tui.cli import main; sys.exit(main())",
         "run", "--org", str(root), "--headless", "--interval", "0.05", "--no-record"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    lines: list[str] = []

    def wait_for(text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} in:\n{''.join(lines[-30:])}")

    try:
        wait_for("fired")
        resume_path(root, "alice").write_text("{nope")
        line = wait_for("rejected agents/alice/resume.json")
        assert "invalid JSON" in line
        write_resume(root, "alice", instructions="Fresh orders.")
        line = wait_for("reloaded")
        assert "alice: instructions" in line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
