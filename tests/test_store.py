"""The run store on real SQLite files: folds, snapshots, atomic ticks, forks, prompts, schema."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any, Callable

import pytest

from lemming.engine.engine import Engine
from lemming.engine.events import TickCompleted, TurnFinished
from lemming.engine.org import load_org
from lemming.engine.prompt import prompt_hash
from lemming.engine.replay import ReplayCursor, export_dicts, fork_state
from lemming.engine.state import OrgState
from lemming.engine.store import RunStore, StoreError, codec, schema, writes
from lemming.engine.store.encoding import compress, decompress, unpickle_head
from tests.conftest import make_org, write_resume


def fp(state: OrgState, prompts: bool = True) -> str:
    d = state.fingerprint()
    if not prompts:
        for rec in d["last_turn"].values():
            rec["prompt"] = None
    return json.dumps(d, sort_keys=True, default=str)


class LiveCapture:
    """A recorder in front of the store's that notes the engine's live state at the end
    of every tick (the engine applies a batch after it is written, so at the next
    write the state is exactly the end of the previous tick)."""

    def __init__(self, inner, engine: Engine, on_tick: Callable[[Engine, int], None] | None = None) -> None:
        self.inner = inner
        self.engine = engine
        self.on_tick = on_tick
        self.live: dict[int, str] = {}
        self.records: dict[tuple[int, str], Any] = {}
        self._pending = False

    async def write(self, events) -> None:
        if self._pending:
            self.live[self.engine.state.tick] = fp(self.engine.state)
            self._pending = False
        await self.inner.write(events)
        for ev in events:
            if type(ev) is TurnFinished:
                self.records[(ev.tick, ev.agent)] = ev.record
        if type(events[-1]) is TickCompleted:
            self._pending = True
            if self.on_tick:
                self.on_tick(self.engine, events[-1].tick)


def rich_org(root: Path) -> Path:
    """Five agents with schedules, a broke one, a soft cap, malformed replies and tools."""
    return make_org(
        root,
        {
            "alice": {"reads": ["bob"], "credits": {"max_credits": 10.0, "soft_cap": 9.999}, "tools": ["clock", "memory_read"]},
            "bob": {"reads": ["alice", "carol"]},
            "carol": {"reads": ["*"], "every": 2, "offset": 1},
            "dave": {"reads": ["carol"], "every": 3, "credits": {"max_credits": 0.004}},
            "human": {"model": "none", "reads": ["*"]},
        },
        models={"sim": {"provider": "sim", "model_name": "sim-1", "prices": {"input_per_mtok": 1.0, "output_per_mtok": 4.0},
                        "structured_output": False,  # the broken replies are the point
                        "provider_config": {"malformed_rate": 0.15}}},
    )


async def record_run(org_dir: Path, db: Path, ticks: int, *, seed: int = 1, on_tick=None, snapshot_every: int = 4,
                     live: bool = True, **open_kw):
    org = load_org(org_dir)
    store = await RunStore.open(db, snapshot_every=snapshot_every, **open_kw)
    engine = Engine(org, seed=seed)
    await store.create_run(run_id=engine.run_id, org_root=org.root, seed=seed, definitions_hash=org.definitions_hash(), target_ticks=ticks)
    # live: snapshots from the engine's state; else from the recorder's own fold
    cap = LiveCapture(store.recorder(engine.run_id, state=engine.state if live else None), engine, on_tick)
    engine.recorder = cap
    await engine.run(ticks=ticks)
    return store, engine, cap


def operator_script(org_dir: Path) -> Callable[[Engine, int], None]:
    """Commands at fixed ticks: inject, disable/enable, top-up, a reload, pause+step+resume."""

    def on_tick(engine: Engine, t: int) -> None:
        if t == 2:
            engine.inject("all hands: status please")
            engine.inject("bob only", ["bob"])
        elif t == 4:
            engine.set_enabled("bob", False)
            engine.top_up("dave", 0.01)
        elif t == 6:
            engine.set_enabled("bob", True)
            engine.set_interval(0.0)
            engine.top_up("nobody", 1.0)  # rejected, and recorded as such
        elif t == 7:
            write_resume(org_dir, "erin", reads=["alice"])
            write_resume(org_dir, "alice", reads=["bob", "erin"], instructions="Changed at tick 7.")
            engine.reload(load_org(org_dir))
        elif t == 9:
            engine.pause()
            engine.step()
        elif t == 10:
            engine.resume()

    return on_tick


@pytest.mark.parametrize("live", [True, False], ids=["live-snapshots", "folded-snapshots"])
async def test_fold_at_every_tick_equals_the_live_state(tmp_path: Path, live: bool) -> None:
    org_dir = rich_org(tmp_path / "org")
    store, engine, cap = await record_run(org_dir, tmp_path / "runs.db", 16, seed=3, on_tick=operator_script(org_dir),
                                          snapshot_every=3, live=live)
    try:
        assert sorted(cap.live) == list(range(1, 17))
        kinds = {e.type for e in await store.events(engine.run_id)}
        assert {"definitions_reloaded", "command_applied", "command_rejected", "run_paused", "agent_skipped",
                "soft_cap_reached", "credits_topped_up"} <= kinds
        assert any(r.status == "contract" for r in cap.records.values())  # the malformed replies happened
        for t, live in cap.live.items():
            assert fp(await store.state_at(engine.run_id, t)) == live, f"tick {t} (snapshots)"
            assert fp(await store.state_at(engine.run_id, t, use_snapshots=False)) == live, f"tick {t} (pure fold)"
        assert fp(await store.state_at(engine.run_id)) == fp(engine.state)
        # the writer took snapshots; the fold above used them
        assert (await store.stats())["snapshots"] >= 3
    finally:
        await store.close()


async def test_snapshots_refer_to_the_turn_records_batches_hold(tmp_path: Path) -> None:
    """A writer's snapshot names the batch and place of each last turn record instead of
    holding a copy; a reference that no longer decodes is a clear error, not a wrong state."""
    from lemming.engine.store.encoding import pack_blob, unpack_blob

    org_dir = rich_org(tmp_path / "org")
    db = tmp_path / "runs.db"
    store, engine, cap = await record_run(org_dir, db, 9, seed=3, snapshot_every=3)
    await store.close()
    con = sqlite3.connect(db)
    snaps = con.execute("SELECT batch, tick, body FROM snapshots ORDER BY batch").fetchall()
    assert len(snaps) >= 2
    decoded = [unpack_blob(body) for _, _, body in snaps]
    assert all(d["last_turn_at"] and not d["last_turn"] for d in decoded)
    reader = await RunStore.open(db, readonly=True)
    try:
        for (_, tick, _), d in zip(snaps, decoded):
            assert fp(await reader.state_at(engine.run_id, tick)) == cap.live[tick]
    finally:
        await reader.close()
    batch, tick, _ = snaps[-1]
    d = decoded[-1]
    agent = next(iter(d["last_turn_at"]))
    d["last_turn_at"][agent] = (d["last_turn_at"][agent][0], 999)
    con.execute("UPDATE snapshots SET body=? WHERE batch=?", (pack_blob(d, 1), batch))
    con.commit()
    con.close()
    reader = await RunStore.open(db, readonly=True)
    try:
        with pytest.raises(StoreError, match="refers to a turn record"):
            await reader.state_at(engine.run_id, tick)
    finally:
        await reader.close()


async def test_a_reader_store_and_a_replay_cursor_agree_with_the_live_run(tmp_path: Path) -> None:
    org_dir = rich_org(tmp_path / "org")
    db = tmp_path / "runs.db"
    store, engine, cap = await record_run(org_dir, db, 12, seed=9, on_tick=operator_script(org_dir), snapshot_every=3)
    await store.close()
    reader = await RunStore.open(db, readonly=True)
    try:
        order = [7, 2, 12, 3, 11, 1, 7]  # random access, in and out of the message cache
        for t in order:
            assert fp(await reader.state_at(engine.run_id, t)) == cap.live[t]
        cursor = ReplayCursor(reader, engine.run_id)
        await cursor.seek(0)
        for t in range(1, 13):
            state = await cursor.step()
            assert state is not None and fp(state, prompts=False) == fp_no_prompts(cap.live[t])
        assert await cursor.step() is None
        with pytest.raises(StoreError, match="open read-only"):
            reader.recorder(engine.run_id)
    finally:
        await reader.close()


def test_the_fold_may_skip_what_apply_ignores(tmp_path: Path) -> None:
    """The store's fold does not build the events in FOLD_SKIPS; `apply` must ignore them.
    (A skip is folded: an agent skipped as broke is shown broke until topped up.)"""
    from lemming.engine.events import CommandRejected, DefinitionRejected, FilesNotWritten, McpServerFailed, TickAborted, TickStarted, TurnStarted

    samples = {
        TickStarted: TickStarted(3, ("alice",)),
        TurnStarted: TurnStarted(3, "alice", "sim", 100),
        CommandRejected: CommandRejected(3, "top_up", "no"),
        DefinitionRejected: DefinitionRejected(3, "agents/a/resume.json", ("bad",)),
        TickAborted: TickAborted(3),
        FilesNotWritten: FilesNotWritten(3, "alice", ("shared/a.md: disk full",)),
        McpServerFailed: McpServerFailed(3, "time", "failed to start: boom", ".lemming/mcp/time.log"),
    }
    assert set(samples) == set(codec.FOLD_SKIPS)
    state = OrgState.initial(load_org(rich_org(tmp_path / "org")))
    before = json.dumps(state.to_dict(), sort_keys=True, default=str), state.paused, state.stopped
    for ev in samples.values():
        state.apply(ev)
    assert (json.dumps(state.to_dict(), sort_keys=True, default=str), state.paused, state.stopped) == before


def fp_no_prompts(live: str) -> str:
    d = json.loads(live)
    for rec in d["last_turn"].values():
        rec["prompt"] = None
    return json.dumps(d, sort_keys=True, default=str)


async def test_every_turn_keeps_its_exact_prompt(tmp_path: Path) -> None:
    org_dir = rich_org(tmp_path / "org")
    store, engine, cap = await record_run(org_dir, tmp_path / "runs.db", 40, seed=4)
    try:
        for (tick, agent), live in list(cap.records.items())[::7]:
            rec = await store.turn(engine.run_id, tick, agent)
            assert rec is not None
            assert rec.prompt == live.prompt and rec.prompt_hash == prompt_hash(live.prompt)
            assert rec.raw_output == live.raw_output and rec.parsed == live.parsed and rec.usage == live.usage
        assert await store.turn(engine.run_id, 3, "nobody") is None
        # exported turn records carry their prompts too, rebuilt along the delta chains
        for ev in await store.events(engine.run_id, since_tick=30):
            if type(ev) is TurnFinished:
                assert ev.record.prompt == cap.records[(ev.tick, ev.agent)].prompt
    finally:
        await store.close()


async def test_a_failed_write_leaves_no_partial_tick_and_the_run_resumes(tmp_path: Path, monkeypatch) -> None:
    org_dir = rich_org(tmp_path / "org")
    db = tmp_path / "runs.db"
    # The reference: the same run, never interrupted.
    ref_store, ref_engine, _ = await record_run(org_dir, tmp_path / "ref.db", 10, seed=2)
    reference = [json.dumps(d, sort_keys=True) for d in export_dicts(await ref_store.events(ref_engine.run_id), canonical_form=True)]
    await ref_store.close()

    real_insert_turns = writes.insert_turns

    def failing_insert_turns(conn, plan):
        real_insert_turns(conn, plan)  # the batch and its turns are written ...
        if plan.kind == "tick" and plan.tick == 6:
            raise sqlite3.OperationalError("disk I/O error (injected)")  # ... then the transaction fails

    monkeypatch.setattr(writes, "insert_turns", failing_insert_turns)
    org = load_org(org_dir)
    store = await RunStore.open(db, snapshot_every=2)
    engine = Engine(org, seed=2)
    await store.create_run(run_id=engine.run_id, org_root=org.root, seed=2, definitions_hash=org.definitions_hash(), target_ticks=10)
    engine.recorder = store.recorder(engine.run_id)
    with pytest.raises(StoreError, match="injected"):
        await engine.run(ticks=10)
    assert engine.state.tick == 5  # the engine did not apply what was not recorded
    monkeypatch.setattr(writes, "insert_turns", real_insert_turns)
    con = sqlite3.connect(db)
    try:
        assert con.execute("SELECT count(*) FROM batches WHERE tick >= 6 AND kind = 'tick'").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM turns WHERE tick >= 6").fetchone()[0] == 0
        assert con.execute("SELECT max(batch) FROM messages").fetchone()[0] <= con.execute("SELECT max(id) FROM batches").fetchone()[0]
        assert con.execute("SELECT ticks FROM runs").fetchone()[0] == 5
    finally:
        con.close()
    info = await store.get_run(engine.run_id)
    assert info.ticks == 5
    # Resume from what was committed: the result is the uninterrupted run.
    state = await store.state_at(engine.run_id)
    assert state.tick == 5
    again = Engine(state.org, seed=2, state=state, run_id=engine.run_id, recorder=store.recorder(engine.run_id))
    assert await again.run(until_tick=10) == "completed"
    got = [json.dumps(d, sort_keys=True) for d in export_dicts(await store.events(engine.run_id), canonical_form=True)]
    assert got == reference
    assert (await store.get_run(engine.run_id)).status == "completed"
    await store.close()


async def test_fork_starts_from_the_parents_state_and_keeps_its_lineage(tmp_path: Path) -> None:
    org_dir = rich_org(tmp_path / "org")
    db = tmp_path / "runs.db"
    store, parent, cap = await record_run(org_dir, db, 10, seed=5, snapshot_every=3)
    try:
        start = await fork_state(store, parent.run_id, 4)
        assert fp(start) == cap.live[4]

        async def fork(of: str, at: int, seed: int, until: int) -> Engine:
            st = await fork_state(store, of, at)
            e = Engine(st.org, seed=seed, state=st, parent_run=of, fork_tick=at)
            await store.create_run(run_id=e.run_id, org_root=st.org.root, seed=seed, definitions_hash=st.org.definitions_hash(),
                                   target_ticks=until, parent_run=of, fork_tick=at, base_state=st)
            e.recorder = store.recorder(e.run_id)
            assert await e.run(until_tick=until) == "completed"
            return e

        same = await fork(parent.run_id, 4, 5, 10)
        # Same seed, same state: the fork lives the parent's ticks 5..10 again.
        assert fp(await store.state_at(same.run_id, 10)) == cap.live[10]
        mine = [json.dumps(d, sort_keys=True) for d in export_dicts(await store.events(same.run_id, since_tick=5), canonical_form=True)
                if d["type"] not in ("run_started", "run_stopped")]
        theirs = [json.dumps(d, sort_keys=True) for d in export_dicts(await store.events(parent.run_id, since_tick=5), canonical_form=True)
                  if d["type"] not in ("run_started", "run_stopped")]
        assert mine == theirs
        info = await store.get_run(same.run_id)
        assert (info.parent_run, info.fork_tick, info.ticks) == (parent.run_id, 4, 10)
        # Before the fork point a fork's state is its parent's.
        for t in (0, 2, 4):
            assert fp(await store.state_at(same.run_id, t)) == cap.live.get(t, fp(await store.state_at(parent.run_id, t)))
        assert (await store.turn(same.run_id, 3, "alice")).prompt == cap.records[(3, "alice")].prompt

        other = await fork(parent.run_id, 4, 99, 8)  # another seed: another future
        assert fp(await store.state_at(other.run_id, 8)) != cap.live[8]
        # A fork of a fork, from a tick before the first fork point: only ticks <= 2 of the root.
        deep = await fork(other.run_id, 2, 5, 10)
        assert fp(await store.state_at(deep.run_id, 10)) == cap.live[10]
        assert (await store.state_at(deep.run_id, 2)).board.count == start.board.count - sum(
            1 for e in start.board.all() if e.tick > 2
        )
        # The parent goes on after being forked; its forks do not see its new messages.
        more = await store.state_at(parent.run_id)
        again = Engine(more.org, seed=5, state=more, run_id=parent.run_id, recorder=store.recorder(parent.run_id))
        await again.run(until_tick=14)
        assert fp(await store.state_at(same.run_id, 10)) == cap.live[10]
        assert fp(await store.state_at(same.run_id)) == cap.live[10]
        with pytest.raises(StoreError, match="cannot fork at 15"):
            await fork_state(store, parent.run_id, 15)
    finally:
        await store.close()


async def test_runs_list_get_by_prefix_and_status(tmp_path: Path) -> None:
    org_dir = rich_org(tmp_path / "org")
    db = tmp_path / "runs.db"
    store, engine, _ = await record_run(org_dir, db, 3)
    try:
        for rid in ("dup-a", "dup-b"):
            await store.create_run(run_id=rid, org_root=org_dir, seed=0, definitions_hash=None, target_ticks=None)
        runs = await store.list_runs()
        assert [r.id for r in runs] == [engine.run_id, "dup-a", "dup-b"]
        assert runs[0].status == "completed" and runs[0].ticks == 3 and runs[0].target_ticks == 3 and runs[0].spend > 0
        assert runs[0].org_path == str(org_dir.resolve())
        assert runs[1].status == "running"  # its writer (this process) is alive
        assert (await store.get_run(engine.run_id[:12])).id == engine.run_id
        assert (await store.get_run("dup-b")).id == "dup-b"
        with pytest.raises(StoreError, match="several runs"):
            await store.get_run("dup-")
        with pytest.raises(StoreError, match="no run"):
            await store.get_run("zzz")
        assert (await store.last_run(org_dir)).id in {r.id for r in runs}
        assert await store.last_run(tmp_path / "elsewhere") is None
        # A run whose writer died without a RunStopped is "interrupted".
        await store.db.call(lambda c: c.execute("UPDATE runs SET writer='%s:999999:1' WHERE id=?" % __import__("socket").gethostname(), (runs[1].id,)))
        assert (await store.get_run(runs[1].id)).status == "interrupted"
    finally:
        await store.close()


async def test_sizes_stay_small(tmp_path: Path) -> None:
    """What a turn costs in the file beyond its reply text (the issue's budget is 1 KB)."""
    org_dir = make_org(tmp_path / "org", {f"a{i}": {"reads": [f"a{(i + 1) % 12}", f"a{(i + 2) % 12}"]} for i in range(12)})
    store, engine, cap = await record_run(org_dir, tmp_path / "runs.db", 40, snapshot_every=10)
    try:
        stats = await store.stats()
        reply = sum(len(r.raw_output.encode()) for r in cap.records.values())
        per_turn = (stats["bytes"] - reply) / len(cap.records)
        assert per_turn < 1024, per_turn
    finally:
        await store.close()


# --- the file itself: schema versions, corruption, locks ---------------------------------


async def _small_db(tmp_path: Path) -> tuple[Path, str]:
    org_dir = rich_org(tmp_path / "org")
    db = tmp_path / "runs.db"
    store, engine, _ = await record_run(org_dir, db, 3)
    await store.close()
    return db, engine.run_id


async def test_a_newer_schema_is_refused_and_an_older_one_migrated(tmp_path: Path, monkeypatch) -> None:
    db, run_id = await _small_db(tmp_path)
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 99")
    con.commit()
    con.close()
    for ro in (False, True):
        with pytest.raises(StoreError, match="newer lemming .*schema 99"):
            await RunStore.open(db, readonly=ro)

    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")
    con.commit()
    con.close()
    # Pretend this lemming is one schema ahead, with a migration for the step.
    calls = []

    def migrate(conn: sqlite3.Connection) -> None:
        calls.append(1)
        conn.execute("ALTER TABLE runs ADD COLUMN note TEXT")

    monkeypatch.setattr(schema, "SCHEMA_VERSION", schema.SCHEMA_VERSION + 1)
    monkeypatch.setitem(schema.MIGRATIONS, schema.SCHEMA_VERSION - 1, migrate)
    monkeypatch.setattr(schema, "READ_AS_IS", frozenset({schema.SCHEMA_VERSION}))  # the old one needs the step
    with pytest.raises(StoreError, match="older store schema"):
        await RunStore.open(db, readonly=True)  # a reader never migrates
    store = await RunStore.open(db)
    try:
        assert calls == [1]
        assert (await store.get_run(run_id)).ticks == 3
        assert (await store.state_at(run_id)).tick == 3
    finally:
        await store.close()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    con.close()


async def test_corrupt_foreign_and_locked_files_give_clear_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 200)
    for ro in (False, True):
        with pytest.raises(StoreError, match="corrupt or not a LeMMing run database"):
            await RunStore.open(junk, readonly=ro)

    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a LeMMing run database"):
        await RunStore.open(other)

    with pytest.raises(StoreError, match="no run database"):
        await RunStore.open(tmp_path / "missing.db", readonly=True)

    db, run_id = await _small_db(tmp_path)
    # Damage the stored bodies: reads fail with a clear error, not a traceback.
    con = sqlite3.connect(db)
    con.execute("UPDATE batches SET body = X'00112233' WHERE kind = 'tick'")
    con.commit()
    con.close()
    store = await RunStore.open(db, readonly=True)
    try:
        with pytest.raises(StoreError, match="corrupt"):
            await store.state_at(run_id, 2, use_snapshots=False)
        with pytest.raises(StoreError, match="corrupt"):
            await store.events(run_id)
    finally:
        await store.close()

    # Another process holds the write lock: a writer gives up with a clear message.
    db2, run2 = await _small_db(tmp_path / "b")
    holder = sqlite3.connect(db2)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked by another process"):
            store = await RunStore.open(db2, timeout=0.2)
            try:
                await store.create_run(run_id="x", org_root=tmp_path, seed=0, definitions_hash=None, target_ticks=None)
            finally:
                await store.close()
    finally:
        holder.rollback()
        holder.close()


async def test_a_damaged_prompt_is_detected(tmp_path: Path) -> None:
    db, run_id = await _small_db(tmp_path)
    con = sqlite3.connect(db)
    agent, tick, batch = con.execute("SELECT agent, tick, batch FROM turns LIMIT 1").fetchone()
    (blob,) = con.execute("SELECT body FROM prompts WHERE batch=?", (batch,)).fetchone()
    text = decompress(blob).replace(b"Tick", b"Tock")
    con.execute("UPDATE prompts SET body=? WHERE batch=?", (compress(text), batch))
    con.commit()
    con.close()
    store = await RunStore.open(db, readonly=True)
    try:
        with pytest.raises(StoreError, match="does not match its hash"):
            await store.turn(run_id, tick, agent)
    finally:
        await store.close()


async def test_the_wal_stays_bounded_while_a_reader_keeps_reading(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(schema, "WAL_TRUNCATE_BYTES", 256 * 1024)
    org_dir = make_org(tmp_path / "org", {f"a{i}": {"reads": ["*"]} for i in range(8)})
    db = tmp_path / "runs.db"
    stop = asyncio.Event()
    sizes: list[int] = []

    async def reader() -> None:
        while not db.exists():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        r = await RunStore.open(db, readonly=True)
        try:
            while not stop.is_set():
                for info in await r.list_runs():
                    await r.last_batch(info.id)
                wal = Path(str(db) + "-wal")
                if wal.exists():
                    sizes.append(wal.stat().st_size)
                await asyncio.sleep(0.002)
        finally:
            await r.close()

    task = asyncio.create_task(reader())
    store, engine, _ = await record_run(org_dir, db, 150, snapshot_every=50)
    stop.set()
    await task
    written = (await store.stats())["bytes"]
    await store.close()
    grown = sum(max(0, b - a) for a, b in zip(sizes, sizes[1:]))
    # Far more went through the WAL than it ever held: it was truncated on the way.
    assert max(sizes) < 2 * 1024 * 1024 and grown > 2 * max(sizes), (max(sizes), grown, written)


def _as_schema_2(con: sqlite3.Connection, body: bytes) -> tuple[list[list[Any]], bytes]:
    """A batch body of now (codec.py) in the form store schema 2 wrote: the rows as
    ``[code, *fields]`` lists with None where the record or entry was, then the records
    pickled as ``[code, *fields]`` lists (prompt None, usage ``(code, *fields)``)."""
    from lemming.engine.store.encoding import pack, unpickle

    layouts = {code: (name, json.loads(f)) for code, name, f in con.execute("SELECT code, name, fields FROM codec")}
    (codes, rows), records = unpickle_head(decompress(body))
    old_rows = []
    for code, row in zip(codes, rows):
        name, fields = layouts[code]
        vals = list(row)
        nested = {"turn_finished": "record", "message_committed": "entry"}.get(name)
        if nested:
            vals.insert(fields.index(nested), None)
        old_rows.append([code, *vals])
    if not records:
        return old_rows, b""
    rcode, ucode, rrows = unpickle(records)
    rfields, ufields = layouts[rcode][1], layouts[ucode][1]
    p, u = rfields.index("prompt"), rfields.index("usage") - 1
    k = len(ufields)
    old_recs = []
    for r in rrows:
        vals = list(r)
        vals[u:u + k] = [(ucode, *vals[u:u + k])]
        vals.insert(p, None)
        old_recs.append([rcode, *vals])
    return old_rows, pack(old_recs)


async def _everything(store: RunStore, run_id: str) -> tuple[Any, ...]:
    """What a reader makes of a run: its events, states (with and without snapshots),
    every turn whole, a search (whose hits are decoded from the bodies)."""
    from lemming.engine.store.search import SearchIndex

    events = [e.to_dict() for e in await store.events(run_id)]
    states = [fp(await store.state_at(run_id, t, use_snapshots=snaps)) for t in (1, 2, 3) for snaps in (True, False)]
    turns = [(t, a) for t, a, _, _ in await store.turns(run_id)]
    whole = [(await store.turn(run_id, t, a)).to_dict() for t, a in turns]  # type: ignore[union-attr]
    found = [h.to_dict() for h in (await SearchIndex(store).search(run_id, "the")).hits]
    return events, states, whole, found


async def test_bodies_of_store_schema_2_are_read_as_they_are(tmp_path: Path) -> None:
    """A file an older lemming wrote (schema 2: rows and records as lists) opens read-only
    without a migration and reads as the same run; a writer marks it schema 3 and adds
    batches of now beside the old ones."""
    from lemming.engine.store.encoding import pack

    db, run_id = await _small_db(tmp_path)
    store = await RunStore.open(db, readonly=True)
    try:
        before = await _everything(store, run_id)
    finally:
        await store.close()
    assert before[2] and before[3]  # turns, and search hits
    con = sqlite3.connect(db)
    for bid, body in con.execute("SELECT id, body FROM batches").fetchall():
        rows, records = _as_schema_2(con, body)
        con.execute("UPDATE batches SET body=? WHERE id=?", (compress(pack(rows) + records), bid))
    con.execute("PRAGMA user_version = 2")
    con.commit()
    con.close()
    store = await RunStore.open(db, readonly=True)
    try:
        assert await _everything(store, run_id) == before
    finally:
        await store.close()
    store = await RunStore.open(db)
    await store.close()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION == 3
    con.close()


async def test_events_written_with_another_layout_are_read_by_name(tmp_path: Path) -> None:
    """A newer engine added a field to TickCompleted and registered its layout after this
    reader opened the file: the reader reloads the layouts and maps fields by name. The
    rewritten bodies are JSON rows in zlib streams, as an older lemming wrote them: read alike."""
    import zlib

    db, run_id = await _small_db(tmp_path)
    reader = await RunStore.open(db, readonly=True)
    try:
        before = fp(await reader.state_at(run_id, 2, use_snapshots=False))
        con = sqlite3.connect(db)
        (fields,) = con.execute("SELECT fields FROM codec WHERE name='tick_completed'").fetchone()
        newer = json.loads(fields) + ["energy_used"]
        code = con.execute("INSERT INTO codec (name, fields) VALUES ('tick_completed', ?)", (json.dumps(newer),)).lastrowid
        (old_code,) = con.execute("SELECT code FROM codec WHERE name='tick_completed' AND fields=?", (fields,)).fetchone()
        for bid, body in con.execute("SELECT id, body FROM batches WHERE kind='tick'").fetchall():
            rows, records = _as_schema_2(con, body)
            rows = [r + [1.5] if r[0] == old_code else r for r in rows]
            rows = [[code, *r[1:]] if r[0] == old_code else r for r in rows]
            # as an older lemming wrote bodies: a line of JSON rows, the records, zlib
            con.execute("UPDATE batches SET body=? WHERE id=?", (zlib.compress(json.dumps(rows).encode() + b"\n" + records), bid))
        con.commit()
        con.close()
        assert fp(await reader.state_at(run_id, 2, use_snapshots=False)) == before
        assert [e.tick for e in await reader.events(run_id) if type(e) is TickCompleted] == [1, 2, 3]
    finally:
        await reader.close()


async def test_records_written_with_another_layout_are_read_by_name(tmp_path: Path) -> None:
    """Turn records of now written by an engine whose TurnRecord had another field (and
    lacked one of this one's) read by name: the known fields kept, the missing one its default."""
    from lemming.engine.store.encoding import pack, unpickle

    db, run_id = await _small_db(tmp_path)
    store = await RunStore.open(db, readonly=True)
    try:
        turns = [(t, a) for t, a, _, _ in await store.turns(run_id)]
        before = [await store.turn(run_id, t, a) for t, a in turns]
    finally:
        await store.close()
    con = sqlite3.connect(db)
    (fields,) = con.execute("SELECT fields FROM codec WHERE name='TurnRecord'").fetchone()
    (old_code,) = con.execute("SELECT code FROM codec WHERE name='TurnRecord' AND fields=?", (fields,)).fetchone()
    names = json.loads(fields)
    gone = names.index("latency_ms")
    other = [n for n in names if n != "latency_ms"] + ["mood"]
    code = con.execute("INSERT INTO codec (name, fields) VALUES ('TurnRecord', ?)", (json.dumps(other),)).lastrowid
    p, u = names.index("prompt"), names.index("usage")
    gone_at = gone - (p < gone) + (2 if u < gone else 0)  # in a row: no prompt, usage's 3 fields
    for bid, body in con.execute("SELECT id, body FROM batches").fetchall():
        rows, records = unpickle_head(decompress(body))
        if not records:
            continue
        rcode, ucode, rrows = unpickle(records)
        assert rcode == old_code
        rrows = [(*r[:gone_at], *r[gone_at + 1:], "calm") for r in rrows]
        con.execute("UPDATE batches SET body=? WHERE id=?", (compress(pack(rows) + pack((code, ucode, rrows))), bid))
    con.commit()
    con.close()
    store = await RunStore.open(db, readonly=True)
    try:
        after = [await store.turn(run_id, t, a) for t, a in turns]
    finally:
        await store.close()
    assert [r.latency_ms for r in after] == [0.0] * len(after)
    for a, b in zip(after, before):
        a.latency_ms = b.latency_ms
    assert [r.to_dict() for r in after] == [r.to_dict() for r in before]


async def test_a_shared_board_reads_like_a_plain_one(tmp_path: Path) -> None:
    """States rebuilt by the store share the message log instead of copying it; the
    board they get answers every question as a plain MessageBoard would."""
    from lemming.engine.messages import OutboxEntry
    from lemming.engine.store import SharedBoard, detached

    org_dir = rich_org(tmp_path / "org")
    store, engine, cap = await record_run(org_dir, tmp_path / "runs.db", 14, seed=6, on_tick=operator_script(org_dir))
    try:
        for t in (5, 9, 14):  # snapshots every 4 ticks: each starts from one
            shared = await store.state_at(engine.run_id, t)
            assert isinstance(shared.board, SharedBoard)
            plain = detached(await store.state_at(engine.run_id, t)).board
            assert type(plain).__name__ == "MessageBoard"
            for step in range(2):
                assert shared.board.count == plain.count
                assert [e.id for e in shared.board.all()] == [e.id for e in plain.all()]
                assert {a: [e.id for e in v] for a, v in shared.board.outboxes.items()} == {
                    a: [e.id for e in v] for a, v in plain.outboxes.items()}
                for name in shared.org.agents:
                    for lo, hi in ((0, t + 2), (t - 2, t + 1), (t, t + 5)):
                        assert shared.board.between(name, lo, hi) == plain.between(name, lo, hi)
                    args = dict(new_limit=3, context=2)
                    readable = shared.org.readable_by(name)
                    for since in (0, t - 3, t):
                        assert shared.board.inbox(name, readable, t + 1, since, **args) == plain.inbox(name, readable, t + 1, since, **args)
                # what a fold or an engine adds afterwards
                for board in (shared.board, plain):
                    board.add(OutboxEntry(id=f"late-{t}", tick=t + 1, agent="alice", kind="message", payload={"text": "late"}))
                    board.add(OutboxEntry(id=f"new-{t}", tick=t + 1, agent="newcomer", kind="message", payload="hi"))
    finally:
        await store.close()


async def test_concurrent_reads_of_one_store_agree(tmp_path: Path) -> None:
    """A replay view reads ahead (tick_events) while it seeks (state_at), on one store."""
    org_dir = rich_org(tmp_path / "org")
    db = tmp_path / "runs.db"
    store, engine, cap = await record_run(org_dir, db, 12, seed=8, snapshot_every=3)
    await store.close()
    reader = await RunStore.open(db, readonly=True)
    try:
        ticks = [12, 3, 9, 1, 6, 11]
        got = await asyncio.gather(
            *(reader.state_at(engine.run_id, t) for t in ticks), *(reader.tick_events(engine.run_id, t) for t in ticks)
        )
        for t, state in zip(ticks, got[: len(ticks)]):
            assert fp(state) == cap.live[t]
        for t, evs in zip(ticks, got[len(ticks):]):
            assert [e for e in evs if type(e) is TickCompleted][-1].tick == t
        (log,) = reader._logs.values()
        ids = [e.id for box in log.entries.values() for e in box]
        assert len(ids) == len(set(ids))
    finally:
        await reader.close()


def test_blobs_are_zstd_and_older_zlib_blobs_still_read() -> None:
    import zlib

    from lemming.engine.store.encoding import CompressionError, pack, pack_blob, unpack_blob

    value = {"text": "the quick brown fox " * 50, "n": [1, 2.5, None]}
    blob = pack_blob(value, 1)
    assert blob[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    assert unpack_blob(blob) == value
    assert unpack_blob(zlib.compress(pack(value), 1)) == value  # a file from before the switch
    assert decompress(compress(b"abc")) == b"abc"
    for damaged in (blob[:-3], b"\x78\x01garbage"):
        with pytest.raises(CompressionError):
            decompress(damaged)


def test_prompt_items_found_by_identity_or_hashed_by_content() -> None:
    """PromptHeads.items: a system message seen before is found by its text's identity; the
    same text object under another role, and prompts of other lengths, are hashed by their
    content; every item rebuilds its prompt; a head the file holds is not sent again."""
    from lemming.engine.store.encoding import decompress, dumps, loads, text_hash
    from lemming.engine.store.prompts import PromptHeads

    system = "You are alice."
    user = {"role": "user", "content": "hi"}
    p1 = [{"role": "system", "content": system}, user]
    p2 = [{"role": "developer", "content": system}, user]  # the same text object, another role
    p3 = [{"role": "system", "content": system}, {"role": "user", "content": "a"}, user]
    prompts = [p1, p1, p2, p1, p3, [user], []]
    heads, texts = PromptHeads(), {}
    items = heads.items(prompts, set(), texts)

    def head(msgs: list) -> str:
        return text_hash(dumps(msgs))

    assert items == [[head(p1[:1]), user], [head(p1[:1]), user], [head(p2[:1]), user], [head(p1[:1]), user],
                     [head(p3[:2]), user], [None, user], None]
    assert set(texts) == {head(p1[:1]), head(p2[:1]), head(p3[:2])}
    for prompt, item in zip(prompts, items):
        if item is not None:
            assert [*(loads(decompress(texts[item[0]])) if item[0] else []), item[1]] == prompt
    again: dict[str, bytes] = {}
    assert PromptHeads().items([p1, p3], set(texts), again) == [items[0], items[4]] and again == {}
