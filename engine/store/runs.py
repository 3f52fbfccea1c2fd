"""The run database as the engine and the control room use it: `RunStore`.

Open a file, add runs (and forks), hand the engine a `RunRecorder`, and read back: the
runs, the state at the end of any tick (the nearest snapshot, then a fold of the
batches after it with `OrgState.apply`), a run's events, one tick's events, one turn
whole. The work on the file itself is in writes.py and queries.py, run on the
connection's thread (database.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable

from lemming.engine import gcfreeze
from lemming.engine.events import Event, TurnFinished, TurnRecord
from lemming.engine.org import Org
from lemming.engine.state import OrgState
from lemming.engine.store import queries, schema, snapshots, writes
from lemming.engine.store.boards import CountedBoard, MessageLog
from lemming.engine.store.codec import Codec, LazyRecords
from lemming.engine.store.database import Database
from lemming.engine.store.encoding import PICKLE_START, CompressionError, decompress, loads, unpack_blob, unpickle, unpickle_head
from lemming.engine.store.errors import StoreError, UnknownLayout
from lemming.engine.store.liveness import this_writer, writer_alive
from lemming.engine.store.prompts import rebuild_prompt
from lemming.engine.store.recorder import RunRecorder

#: Loading at least this many messages at once freezes the garbage collector's view of
#: what is alive (see engine/gcfreeze.py): a long run's message log is a million
#: long-lived objects that each full collection would walk. The store lets go on closing.
FREEZE_AFTER_MESSAGES = 50_000


def default_db_path(org_root: Path | str) -> Path:
    """Where an organisation's runs are recorded by default: ORG/.lemming/runs.db."""
    return Path(org_root) / ".lemming" / "runs.db"


@dataclass(slots=True)
class RunInfo:
    """One run, as `lemming runs` lists it."""

    id: str
    org_path: str
    seed: int
    status: str  # running, completed, stopped, error, interrupted
    ticks: int  # the last committed tick
    target_ticks: int | None
    spend: float
    parent_run: str | None
    fork_tick: int | None
    started_at: float
    ended_at: float | None
    definitions_hash: str | None
    reason: str | None = None  # why it stopped, as the engine said
    events: int = 0
    updated_at: float | None = None
    writer: str | None = None  # host:pid:start of the process recording it

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class _RunRow:
    rid: int
    id: str
    org_path: str
    seed: int
    parent_rid: int | None
    fork_tick: int | None
    fork_batch: int | None
    base_tick: int


class RunStore:
    """The run database. Open with `await RunStore.open(path)`; close with `await close()`."""

    def __init__(self, db: Database, snapshot_every: int, snapshot_events: int) -> None:
        #: the connection and its thread (what RunRecorder writes through)
        self.db = db
        self.path = db.path
        self.readonly = db.readonly
        self.snapshot_every = max(1, snapshot_every)
        self.snapshot_events = max(1, snapshot_events)
        self._codec: Codec | None = None
        self._logs: dict[int, MessageLog] = {}
        self._orgs: dict[tuple[str, str], Org] = {}
        self._rows: dict[str, _RunRow] = {}
        self.freeze_gc = True  # see freeze_gc_now(); set False to leave the collector alone
        self._log_lock = asyncio.Lock()
        self._froze = 0

    # -- opening ------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path | str,
        *,
        readonly: bool = False,
        snapshot_every: int = 100,
        snapshot_events: int = 3000,
        durable: bool = False,
        timeout: float = 5.0,
    ) -> "RunStore":
        """Open (read-write: create if missing, migrate if older) the database at `path`.

        A snapshot is written after a tick when `snapshot_every` ticks or
        `snapshot_events` events have been written since the last one. `timeout` is
        how long to wait for another process's lock before giving up (StoreError).
        """
        path = Path(path)
        if readonly:
            if not path.exists():
                raise StoreError(f"no run database at {path}")
            target = f"file:{path.resolve()}?mode=ro"
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create {path.parent}: {e.strerror or e}") from None
            target = str(path)
        db = await Database.open(path, target, readonly=readonly, timeout=timeout)
        store = cls(db, snapshot_every, snapshot_events)
        try:
            await db.call(schema.prepare, path, readonly, durable, timeout)
            await store._reload_codec()
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        """Checkpoint (a writer), let go of what this store froze, close the file."""
        if self.db.closed:
            return
        try:
            if not self.readonly:
                await self.db.call(writes.close_checkpoint)
        except StoreError:
            pass
        finally:
            self._logs.clear()
            for _ in range(self._froze):
                gcfreeze.release()
            self._froze = 0
            await self.db.close()

    def freeze_gc_now(self) -> None:
        """Move every object alive now out of the cyclic collector's sight (`gc.freeze()`)
        until this store closes: a reader that has just built a long-lived working set
        (replay, once its first tick shows) stops paying for it in every full collection."""
        if self.freeze_gc and not self.db.closed:
            gcfreeze.hold()
            self._froze += 1

    async def __aenter__(self) -> "RunStore":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- plumbing -------------------------------------------------------------------------

    @property
    def codec(self) -> Codec:
        """The event layouts of this file (reloaded when a newer writer has added some)."""
        assert self._codec is not None
        return self._codec

    def _unpack(self, blob: bytes) -> Any:
        """A compressed pickled column (messages, snapshots)."""
        try:
            return unpack_blob(blob)
        except (*CompressionError, ValueError, pickle.UnpicklingError, EOFError) as e:
            raise StoreError(f"{self.path} is corrupt: a stored record does not decode ({e})") from None

    def _unpack_json(self, blob: bytes) -> Any:
        """A compressed JSON text (`texts`: definitions, prompt heads)."""
        try:
            return loads(decompress(blob))
        except (*CompressionError, ValueError) as e:
            raise StoreError(f"{self.path} is corrupt: a stored text does not decode ({e})") from None

    def _split(self, blob: bytes) -> tuple[Any, bytes]:
        """(event rows, the turn records still pickled) of a batch body: the rows pickled
        and the records after them, or (written before that) a line of JSON rows (see
        codec.py for the forms)."""
        try:
            data = decompress(blob)
            if data[:1] == PICKLE_START:
                return unpickle_head(data)
            events, _, records = data.partition(b"\n")
            return loads(events), records
        except (*CompressionError, ValueError, pickle.UnpicklingError, EOFError) as e:
            raise StoreError(f"{self.path} is corrupt: a stored record does not decode ({e})") from None

    def _decode_batch(self, body: bytes, msgs: bytes | list | None, skip: frozenset[type] = frozenset()) -> list[Event]:
        """A batch's events, whole (turn records included, their prompts left empty), but
        those of the types in `skip`."""
        codec = self.codec
        rows, records = self._split(body)
        entries = msgs if isinstance(msgs, list) else (self._unpack(msgs) if msgs else [])
        try:
            return codec.decode(rows, entries, unpickle(records) if records else [], skip)
        except StoreError:
            raise
        except (TypeError, IndexError, KeyError, ValueError, pickle.UnpicklingError, EOFError) as e:
            raise StoreError(f"{self.path} is corrupt: a stored batch does not decode ({type(e).__name__}: {e})") from None

    async def _reload_codec(self) -> None:
        self._codec = Codec(await self.db.all("SELECT code, name, fields FROM codec"))

    async def _retrying(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` again once after reloading the layouts, if a newer writer added some."""
        try:
            return await fn()
        except UnknownLayout:
            await self._reload_codec()
            return await fn()

    # -- runs ---------------------------------------------------------------------------

    async def create_run(
        self,
        *,
        run_id: str,
        org_root: Path | str,
        seed: int,
        definitions_hash: str | None,
        target_ticks: int | None,
        parent_run: str | None = None,
        fork_tick: int | None = None,
        base_state: OrgState | None = None,
    ) -> None:
        """Add a run's row. A fork (`parent_run` and `fork_tick`) also records the parent's
        state at the end of `fork_tick` as the new run's starting snapshot."""
        self.db.check_writable()
        org_path = str(Path(org_root).resolve())
        parent_rid = fork_batch = None
        base_tick = 0
        snap: tuple | None = None
        if parent_run is not None:
            if fork_tick is None:
                raise StoreError("a fork needs the tick it starts from")
            parent = await self._run_row(parent_run)
            parent_rid = parent.rid
            upto, _ = await self._resolve_upto(parent, fork_tick)
            fork_batch = upto
            base_tick = fork_tick
            if base_state is None:
                base_state = await self.state_at(parent.id, fork_tick)
            snap = snapshots.snapshot_body(base_state, self.codec)

        now = time.time()
        row = (run_id, org_path, seed, definitions_hash, target_ticks, parent_rid, fork_tick, fork_batch, base_tick,
               "running", base_tick, now, now, this_writer())
        await self.db.call(writes.insert_run, self.path, row, snap)

    def recorder(self, run_id: str, *, state: OrgState | None = None, index: bool = True) -> RunRecorder:
        """The engine's recorder for `run_id` (created with `create_run`, or being resumed).

        Pass the engine's live state (`state=engine.state`) and snapshots are taken from
        it; without it the recorder folds its own copy (about 10% more write time).
        `index=False` leaves the search index to the run's first search (search.py).
        """
        self.db.check_writable()
        return RunRecorder(self, run_id, state, index=index)

    async def set_target(self, run_id: str, target_ticks: int | None) -> None:
        """Change the tick a run is meant to reach (`resume --ticks N`)."""
        self.db.check_writable()
        row = await self._run_row(run_id)
        await self.db.call(lambda c: c.execute("UPDATE runs SET target_ticks=? WHERE rid=?", (target_ticks, row.rid)))

    _RUN_COLS = (
        "r.id, r.org_path, r.seed, r.status, r.ticks, r.target_ticks, r.spend, p.id, r.fork_tick, r.started_at,"
        " r.ended_at, r.definitions_hash, r.reason, r.events, r.updated_at, r.writer"
    )

    @staticmethod
    def _info(row: tuple) -> RunInfo:
        info = RunInfo(*row)
        if info.status == "running" and writer_alive(info.writer) is False:
            info.status = "interrupted"
        return info

    async def list_runs(self) -> list[RunInfo]:
        rows = await self.db.all(
            f"SELECT {self._RUN_COLS} FROM runs r LEFT JOIN runs p ON p.rid = r.parent_rid ORDER BY r.rid"
        )
        return [self._info(r) for r in rows]

    async def get_run(self, run_id: str) -> RunInfo:
        """A run by id or by a unique prefix of its id."""
        row = await self._run_row(run_id)
        got = await self.db.one(
            f"SELECT {self._RUN_COLS} FROM runs r LEFT JOIN runs p ON p.rid = r.parent_rid WHERE r.rid=?", (row.rid,)
        )
        assert got is not None
        return self._info(got)

    async def last_run(self, org_root: Path | str | None = None) -> RunInfo | None:
        """The most recently active run (of the organisation at `org_root`, if given)."""
        where, params = "", ()
        if org_root is not None:
            where, params = "WHERE r.org_path = ?", (str(Path(org_root).resolve()),)
        row = await self.db.one(
            f"SELECT {self._RUN_COLS} FROM runs r LEFT JOIN runs p ON p.rid = r.parent_rid {where}"
            " ORDER BY coalesce(r.updated_at, r.started_at) DESC, r.rid DESC LIMIT 1",
            params,
        )
        return None if row is None else self._info(row)

    async def _run_row(self, run_id: str) -> _RunRow:
        got = self._rows.get(run_id)
        if got is not None:
            return got
        cols = "rid, id, org_path, seed, parent_rid, fork_tick, fork_batch, base_tick"
        row = await self.db.one(f"SELECT {cols} FROM runs WHERE id=?", (run_id,))
        if row is None:
            esc = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            rows = await self.db.all(f"SELECT {cols} FROM runs WHERE id LIKE ? ESCAPE '\\' LIMIT 6", (esc + "%",))
            if not rows:
                raise StoreError(f"no run {run_id!r} in {self.path} (`lemming runs` lists them)")
            if len(rows) > 1:
                ids = ", ".join(r[1] for r in rows[:5])
                raise StoreError(f"{run_id!r} matches several runs ({ids}); give more of the id")
            row = rows[0]
        rr = _RunRow(*row)
        if rr.id == run_id:  # what a run row holds never changes
            self._rows[run_id] = rr
        return rr

    async def _run_row_by_rid(self, rid: int) -> _RunRow:
        row = await self.db.one(
            "SELECT rid, id, org_path, seed, parent_rid, fork_tick, fork_batch, base_tick FROM runs WHERE rid=?", (rid,)
        )
        if row is None:
            raise StoreError(f"{self.path}: run #{rid} is missing (corrupt database?)")
        return _RunRow(*row)

    # -- state at a tick ------------------------------------------------------------------

    async def _resolve_upto(self, run: _RunRow, tick: int | None) -> tuple[int | None, _RunRow]:
        """The last batch of the state at the end of `tick` (None: everything committed),
        and the run that holds it (an ancestor, for a forked run's ticks before the fork)."""
        while run.parent_rid is not None and tick is not None and tick < run.base_tick:
            run = await self._run_row_by_rid(run.parent_rid)
        if tick is None:
            row = await self.db.one("SELECT max(id) FROM batches WHERE rid=?", (run.rid,))
            return (row[0] if row and row[0] is not None else None), run
        row = await self.db.one(
            "SELECT id FROM batches WHERE rid=? AND kind='tick' AND tick=? ORDER BY id DESC LIMIT 1", (run.rid, tick)
        )
        if row is not None:
            return row[0], run
        if tick == run.base_tick:
            if run.parent_rid is not None:
                return run.fork_batch, run  # the fork's starting snapshot
            row = await self.db.one("SELECT min(id) FROM batches WHERE rid=?", (run.rid,))
            if row and row[0] is not None:
                return row[0], run
        last = await self.db.one("SELECT ticks FROM runs WHERE rid=?", (run.rid,))
        raise StoreError(
            f"run {run.id} has no committed tick {tick} (it runs from tick {run.base_tick} to {last[0] if last else '?'})"
        )

    async def state_at(
        self, run_id: str, tick: int | None = None, *, use_snapshots: bool = True, prompts: bool = True, messages: bool = True
    ) -> OrgState:
        """The organisation's state at the end of `tick` (None: everything committed so far,
        boundary commands after the last tick included — what a resume continues from).

        Starts from the latest snapshot at or before it and folds the rest with
        `OrgState.apply`. `prompts=False` leaves the last turns' prompts empty (faster;
        `turn()` gives any turn whole). `messages=False` leaves the message board out
        (a `CountedBoard`: its count only): the run's message log is not loaded, which
        for a long run is most of the work (replay's panes never read the board).
        """
        run = await self._run_row(run_id)
        upto, run = await self._resolve_upto(run, tick)
        return await self._retrying(
            lambda: self._state_upto(run, upto, use_snapshots=use_snapshots, prompts=prompts, messages=messages)
        )

    async def _state_upto(
        self, run: _RunRow, upto: int | None, *, use_snapshots: bool, prompts: bool, messages: bool = True
    ) -> OrgState:
        codec = self.codec
        snap = None
        if upto is None:  # a run with nothing written yet
            if run.parent_rid is None:
                return OrgState(org=Org(root=Path(run.org_path), agents={}, models={}))
            upto = run.fork_batch
        log: MessageLog | None = None
        by_batch: dict[int, list[Any]] = {}
        if messages:
            log = await self._message_log(run)
            await self._extend_log(log, upto)
            by_batch = log.by_batch
        # Without snapshots a fork still starts from its first one: nothing else holds it.
        snap, raw = await self.db.call(queries.fetch_fold, run.rid, upto, use_snapshots, run.parent_rid is not None, not messages)
        if snap is not None:
            state = await self._snapshot_state(run, snap[0], snap[1], log)
        else:
            state = OrgState(org=Org(root=Path(run.org_path), agents={}, models={}))
            if log is None:
                state.board = CountedBoard(0)
        last: dict[str, tuple[int, LazyRecords, int]] = {}
        try:
            with gcfreeze.paused():
                for batch, body, *msgs in raw:
                    rows, records = self._split(body)
                    entries = by_batch.get(batch, ()) if log is not None else (self._unpack(msgs[0]) if msgs[0] else ())
                    codec.fold(state, rows, entries, LazyRecords(records), batch, last)
                codec.apply_last_turns(state, last)
        except StoreError:
            raise
        except (TypeError, IndexError, KeyError, ValueError, pickle.UnpicklingError, EOFError) as e:
            raise StoreError(f"{self.path} is corrupt: a stored batch does not decode ({type(e).__name__}: {e})") from None
        if prompts:
            await self._fill_prompts(run, state)
        return state

    async def _snapshot_state(self, run: _RunRow, snap_batch: int, body: bytes, log: MessageLog | None) -> OrgState:
        d = self._unpack(body)
        org = await self._org(d["state"]["org_root"], d["definitions"])
        records: dict[int, Any] = {}
        wanted = snapshots.records_wanted(d)
        if wanted:
            for b, rbody in await self.db.call(queries.fetch_bodies_by_id, sorted(wanted)):
                lines = self._split(rbody)[1]
                try:
                    records[b] = unpickle(lines) if lines else []
                except (pickle.UnpicklingError, EOFError, ValueError) as e:
                    raise StoreError(f"{self.path} is corrupt: a stored record does not decode ({e})") from None
        return snapshots.restore(d, org, self.codec, log, snap_batch, run.id, records)

    async def _fill_prompts(self, run: _RunRow, state: OrgState) -> None:
        want: list[tuple[str, int]] = [(a, r.tick) for a, r in state.last_turn.items() if not r.prompt]
        if not want:
            return
        lineage = await self._lineage(run)
        got = await self.db.call(queries.fetch_prompts, lineage, want)
        for agent, tick in want:
            line = got.get((agent, tick))
            if line is None:
                raise StoreError(f"run {run.id}: the prompt of {agent}'s turn at tick {tick} is missing")
            rec = state.last_turn[agent]
            rec.prompt = rebuild_prompt(run.id, rec, line)

    async def _lineage(self, run: _RunRow) -> list[tuple[int, int, int | None]]:
        """[(rid, first tick, last batch)] newest first: where a tick's turns live."""
        out: list[tuple[int, int, int | None]] = [(run.rid, run.base_tick, None)]
        limit = run.fork_batch
        r = run
        while r.parent_rid is not None:
            r = await self._run_row_by_rid(r.parent_rid)
            out.append((r.rid, r.base_tick, limit))
            # batch ids grow across the whole file, so an ancestor's share ends at the
            # earliest fork point below it
            if r.fork_batch is not None and limit is not None:
                limit = min(limit, r.fork_batch)
        return out

    def forget_message_logs(self) -> None:
        """Let go of the message logs that rebuilding states loaded (a long run's holds
        every message): a writer that resumed or forked a run reads them no more."""
        self._logs.clear()

    async def _message_log(self, run: _RunRow) -> MessageLog:
        async with self._log_lock:
            return await self._message_log_locked(run)

    async def _message_log_locked(self, run: _RunRow) -> MessageLog:
        log = self._logs.get(run.rid)
        if log is None:
            segs: list[tuple[int, int | None]] = []
            lin = await self._lineage(run)
            for rid, _, limit in reversed(lin):
                segs.append((rid, limit))
            log = self._logs[run.rid] = MessageLog(segs)
        return log

    async def _extend_log(self, log: MessageLog, upto: int | None = None) -> None:
        """Load the messages of batches up to `upto` (a global batch id; None: all) not
        loaded yet: a long run opened at an early tick reads only what that tick needs.
        (Under a lock: concurrent readers of one store must not load a batch twice.)"""
        async with self._log_lock:
            await self._extend_log_locked(log, upto)

    async def _extend_log_locked(self, log: MessageLog, upto: int | None) -> None:
        codec = self.codec
        for rid, limit in log.segments:
            if upto is not None:
                limit = upto if limit is None else min(limit, upto)
            since = log.loaded[rid]
            if limit is not None and since >= limit:
                continue
            rows = await self.db.call(queries.fetch_messages, rid, since, limit)
            if not rows:
                continue
            try:
                with gcfreeze.paused():
                    added = log.extend([(batch, self._unpack(body)) for batch, body in rows], codec)
                if added >= FREEZE_AFTER_MESSAGES and self.freeze_gc:
                    gcfreeze.hold()
                    self._froze += 1
            except StoreError:
                raise
            except (TypeError, IndexError, KeyError, ValueError) as e:
                raise StoreError(f"{self.path} is corrupt: a stored message does not decode ({e})") from None
            log.loaded[rid] = rows[-1][0]

    async def _org(self, org_root: str, defs_hash: str) -> Org:
        key = (org_root, defs_hash)
        org = self._orgs.get(key)
        if org is None:
            blob = await self.db.one("SELECT body FROM texts WHERE hash=?", (defs_hash,))
            if blob is None:
                raise StoreError(f"{self.path}: the definitions {defs_hash} a snapshot refers to are missing")
            org = Org.from_definitions(Path(org_root), self._unpack_json(blob[0]))
            if len(self._orgs) > 16:
                self._orgs.clear()
            self._orgs[key] = org
        return org

    # -- events and turns ---------------------------------------------------------------

    async def events(
        self, run_id: str, *, since_tick: int | None = None, until_tick: int | None = None, prompts: bool = True
    ) -> list[Event]:
        """The run's own events in order (a fork's start with its RunStarted). A batch belongs
        to the tick it completed, or to the last committed tick when it was written."""
        out: list[Event] = []
        async for chunk in self.iter_events(run_id, since_tick=since_tick, until_tick=until_tick, prompts=prompts):
            out.extend(chunk)
        return out

    async def iter_events(
        self,
        run_id: str,
        *,
        since_tick: int | None = None,
        until_tick: int | None = None,
        prompts: bool = True,
        chunk: int = 256,
        after_batch: int = 0,
    ) -> AsyncIterator[list[Event]]:
        """The run's events in chunks of `chunk` batches (for exports of long runs)."""
        run = await self._run_row(run_id)
        last = after_batch
        while True:
            rows = await self.db.call(queries.fetch_batch_range, run.rid, last, since_tick, until_tick, chunk, prompts)
            if not rows:
                return
            last = rows[-1][0]
            evs: list[Event] = []
            for _, _, _, body, msgs, pitems in rows:
                try:
                    batch_events = self._decode_batch(body, msgs)
                except UnknownLayout:
                    await self._reload_codec()
                    batch_events = self._decode_batch(body, msgs)
                if pitems is not None:
                    items, heads = pitems
                    i = 0
                    for e in batch_events:
                        if type(e) is TurnFinished:
                            rec = e.record  # type: ignore[attr-defined]
                            rec.prompt = rebuild_prompt(run.id, rec, (items[i] if i < len(items) else None, heads))
                            i += 1
                evs.extend(batch_events)
            yield evs
            if len(rows) < chunk:
                return

    async def tick_events(self, run_id: str, tick: int, *, skip: Iterable[type] = ()) -> list[Event]:
        """What turns the state at the end of `tick - 1` into the state at the end of `tick`
        (boundary commands after tick - 1, then the tick itself); prompts left empty.
        Events of the types in `skip` are left out (not even built)."""
        skipped = frozenset(skip)
        return await self._retrying(lambda: self._tick_events(run_id, tick, skipped))

    async def _tick_events(self, run_id: str, tick: int, skip: frozenset[type] = frozenset()) -> list[Event]:
        run = await self._run_row(run_id)
        # A fork's ticks up to the one it starts from are its parent's (the fork tick included).
        while run.parent_rid is not None and tick <= run.base_tick:
            run = await self._run_row_by_rid(run.parent_rid)
        hi, hrun = await self._resolve_upto(run, tick)
        lo, _ = await self._resolve_upto(run, tick - 1)
        if hi is None or lo is None:
            return []
        # The messages of these batches only, straight from their rows (not the run's log).
        raw = await self.db.call(queries.fetch_bodies, hrun.rid, lo, hi, True)
        out: list[Event] = []
        with gcfreeze.paused():
            for _, body, msgs in raw:
                out.extend(self._decode_batch(body, msgs, skip))
        return out

    async def turn(self, run_id: str, tick: int, agent: str) -> TurnRecord | None:
        """One turn whole: its record with the exact prompt (checked against its hash)."""
        return await self._retrying(lambda: self._turn(run_id, tick, agent))

    async def _turn(self, run_id: str, tick: int, agent: str) -> TurnRecord | None:
        run = await self._run_row(run_id)
        lineage = await self._lineage(run)
        got = await self.db.call(queries.fetch_turn, lineage, agent, tick)
        if got is None:
            return None
        body, msgs, idx, line = got
        _, records = self._split(body)
        try:
            rec: TurnRecord = self.codec.record_at(unpickle(records), idx - 1)
        except (IndexError, TypeError, ValueError, KeyError, pickle.UnpicklingError, EOFError) as e:
            raise StoreError(f"{self.path} is corrupt: turn {agent}@{tick} does not decode ({e})") from None
        if rec.agent != agent or rec.tick != tick:
            raise StoreError(f"{self.path} is corrupt: turn {agent}@{tick} points at another turn's record")
        rec.prompt = rebuild_prompt(run.id, rec, line)
        return rec

    async def turns(self, run_id: str, *, since_tick: int | None = None, until_tick: int | None = None) -> list[tuple[int, str, str, float]]:
        """(tick, agent, status, cost) of the run's own turns, by tick then agent (a timeline)."""
        run = await self._run_row(run_id)
        lo = since_tick if since_tick is not None else -(2**62)
        hi = until_tick if until_tick is not None else 2**62
        rows = await self.db.all(
            "SELECT tick, agent, status, cost FROM turns WHERE rid=? AND tick BETWEEN ? AND ? ORDER BY tick, agent",
            (run.rid, lo, hi),
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]

    async def last_batch(self, run_id: str) -> int:
        """The id of the run's newest batch (0 if none): a cheap "anything new?" for readers."""
        run = await self._run_row(run_id)
        row = await self.db.one("SELECT max(id) FROM batches WHERE rid=?", (run.rid,))
        return (row[0] or 0) if row else 0

    async def stats(self) -> dict[str, Any]:
        """Sizes, for benchmarks and `lemming runs --stats`."""
        return await self.db.call(queries.stats)
