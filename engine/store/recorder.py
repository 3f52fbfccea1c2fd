"""The engine's writer: each batch of events it records becomes one transaction.

A batch is encoded here (event rows, turn records, outbox entries, prompt items, the
run row's new values) into a `writes.WritePlan` that one call on the database thread
commits; snapshots are taken every few thousand events.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Sequence

from lemming.engine.events import Event, RunStarted, RunStopped, TickCompleted, TurnRecord
from lemming.engine.messages import OutboxEntry
from lemming.engine.state import OrgState
from lemming.engine.store import queries, search, snapshots, writes
from lemming.engine.store.boards import detached
from lemming.engine.store.encoding import BODY_LEVEL, PROMPT_LEVEL, Compressor, pack
from lemming.engine.store.errors import StoreError
from lemming.engine.store.liveness import this_writer
from lemming.engine.store.prompts import PromptHeads

if TYPE_CHECKING:
    from lemming.engine.store.runs import RunStore

#: Snapshots are at least this many events per agent apart (see RunRecorder.write).
SNAPSHOT_EVENTS_PER_AGENT = 10

_RUN_MARKS = frozenset({RunStarted, RunStopped})


def _status_of(reason: str) -> str:
    if reason == "completed":
        return "completed"
    if reason == "stopped":
        return "stopped"
    return "error"


class RunRecorder:
    """What the engine writes into: `await write(events)` is one transaction.

    Snapshots: given the engine's live state (`RunStore.recorder(run_id, state=
    engine.state)`), the recorder snapshots it at the next write after a tick (the
    engine applies a batch right after recording it, so by then the state is exactly
    the end of that tick). Without it, the recorder folds its own copy of the state
    with the same `OrgState.apply_all`.

    It uses the store's public side only: `db` (the connection and its thread),
    `codec`, `create_run`, `state_at` and the snapshot spacing.
    """

    def __init__(self, store: "RunStore", run_id: str, live: OrgState | None = None, *, index: bool = True) -> None:
        self.store = store
        self.run_id = run_id
        self._rid: int | None = None
        self._live = live
        self._shadow: OrgState | None = None
        self._heads = PromptHeads()
        #: agent → (its latest turn record written, the batch, its place among the batch's
        #: records): a snapshot refers to these instead of holding a copy
        self._written: dict[str, tuple[TurnRecord, int, int]] = {}
        self._body_z = Compressor(BODY_LEVEL)
        self._prompt_z = self._body_z if PROMPT_LEVEL == BODY_LEVEL else Compressor(PROMPT_LEVEL)
        self._since_snapshot_events = 0
        self._since_snapshot_ticks = 0
        self._due: tuple[int, int] | None = None  # (batch, tick) to snapshot from the live state
        self._batches = 0
        #: whether batches are added to the search index as they are written (else the
        #: first search catches up)
        self.index = index
        #: search rows of tick batches committed but not indexed yet: (batch id, rows)
        self._unindexed: list[tuple[int, list[Any]]] = []
        self._unindexed_rows = 0
        self._lock = asyncio.Lock()

    async def _init(self, first: Event) -> None:
        st = self.store
        rid = await st.db.call(queries.run_rid, self.run_id)
        if rid is None:
            if type(first) is not RunStarted:
                raise StoreError(f"no run {self.run_id!r} in {st.path}; create_run() first")
            # An engine recording without create_run(): the run's start says what it is.
            await st.create_run(
                run_id=self.run_id, org_root=first.org_path, seed=first.seed,  # type: ignore[attr-defined]
                definitions_hash=first.definitions_hash, target_ticks=None,  # type: ignore[attr-defined]
            )
            rid = await st.db.call(queries.run_rid, self.run_id)
        self._rid = rid
        if self._live is None:
            self._shadow = detached(await st.state_at(self.run_id, prompts=False))

    async def write(self, events: Sequence[Event]) -> None:
        """Record one batch of events (a tick, a start or stop, a boundary's commands)."""
        if not events:
            return
        async with self._lock:
            st = self.store
            db = st.db
            db.check_writable()
            if self._rid is None:
                await self._init(events[0])
            if self._due is not None:
                batch, tick = self._due
                self._due = None
                live = self._live
                if live is not None and live.tick == tick:
                    await self._snapshot(live, batch)
            plan = self._plan(events)
            if self.index:
                rows = plan.search_rows
                pending = self._unindexed
                if (len(pending) + 1 >= search.INDEX_EVERY_TICKS
                        or self._unindexed_rows + len(rows) >= search.INDEX_EVERY_ROWS) and plan.kind == "tick":
                    plan.search_chunk = pending
            await db.call(writes.write_tx, plan)
            if plan.records:
                b = plan.batch_id
                written = self._written
                for i, rec in enumerate(plan.records):
                    written[rec.agent] = (rec, b, i)
            if plan.search_chunk is not None:
                self._unindexed = []
                self._unindexed_rows = 0
            elif self.index:
                pending.append((plan.batch_id, plan.search_rows))
                self._unindexed_rows += len(plan.search_rows)
                if plan.kind != "tick":
                    # A start, a stop or a boundary's commands: the chunk is indexed right
                    # after, in a transaction of its own, so that the batch (a run's stop
                    # above all) commits as soon as it would without the index.
                    self._unindexed = []
                    self._unindexed_rows = 0
                    try:
                        await db.call(writes.index_tx, plan.rid, pending)
                    except StoreError:
                        pass  # an accelerator: the next search catches up
            db.known_texts.update(plan.texts)
            if self._shadow is not None:
                self._shadow.apply_all(events)
            if plan.kind == "tick":
                self._since_snapshot_ticks += 1
                self._since_snapshot_events += len(events)
                folded = self._live if self._live is not None else self._shadow
                # A snapshot costs about as much as folding a few events per agent: with
                # many agents, space them so that they stay a small share of the writes.
                spacing = max(st.snapshot_events, SNAPSHOT_EVENTS_PER_AGENT * len(folded.credits) if folded else 0)
                if self._since_snapshot_events >= spacing or self._since_snapshot_ticks >= st.snapshot_every:
                    if self._shadow is not None:
                        await self._snapshot(self._shadow, plan.batch_id)
                    else:
                        self._due = (plan.batch_id, plan.tick)
            self._batches += 1
            if self._batches % 16 == 0:
                await db.call(writes.maybe_truncate_wal, db.path, db.busy_ms)

    def _plan(self, events: Sequence[Event]) -> writes.WritePlan:
        recs: list[TurnRecord] = []
        ents: list[OutboxEntry] = []
        rows, entries, records = self.store.codec.encode(events, recs, ents)
        last = events[-1]
        first = events[0]
        kind = "boundary"
        if type(last) is TickCompleted:
            kind = "tick"
        elif type(first) is RunStarted:
            kind = "start"
        elif type(last) is RunStopped:
            kind = "stop"
        tick = last.tick if kind == "tick" else max(getattr(e, "tick", 0) for e in events)  # type: ignore[attr-defined]
        # The event rows, then the records, pickled one after the other (a reader unpickles
        # the rows and leaves the records for when it needs one).
        z = self._body_z
        body = z(pack(rows, records) if records is not None else pack(rows))
        msgs = z(pack(entries)) if entries else None
        texts: dict[str, bytes] = {}
        pitems = self._heads.items([rec.prompt for rec in recs], self.store.db.known_texts, texts)
        # (agent, tick, line of its prompt among the batch's (from 1), status, cost)
        turns = [(rec.agent, rec.tick, i, rec.status, rec.cost) for i, rec in enumerate(recs, 1)]
        prompts = self._prompt_z(pack(pitems)) if pitems else None
        run_update: dict[str, Any] = {"events": len(events), "updated_at": time.time()}
        # A tick's batch says what the run row needs in its last event; others (and a tick
        # batch holding a start or a stop, should there be one) are looked through.
        marks = (last,) if kind == "tick" and not _RUN_MARKS.intersection(map(type, events)) else events
        for ev in marks:
            t = type(ev)
            if t is TickCompleted:
                run_update["ticks"] = ev.tick  # type: ignore[attr-defined]
                run_update["spend"] = ev.total_spend  # type: ignore[attr-defined]
            elif t is RunStarted:
                run_update["status"] = "running"
                run_update["writer"] = this_writer()
                run_update["ended_at"] = None
                run_update["reason"] = None
            elif t is RunStopped:
                run_update["status"] = _status_of(ev.reason)  # type: ignore[attr-defined]
                run_update["reason"] = ev.reason  # type: ignore[attr-defined]
                run_update["ended_at"] = ev.at or time.time()  # type: ignore[attr-defined]
                run_update["writer"] = None
        plan = writes.WritePlan(self._rid, kind, tick, len(events), body, msgs, prompts, turns, texts, run_update)  # type: ignore[arg-type]
        plan.records = recs
        if self.index:
            plan.search_rows = search.rows_of_parts(ents, recs)
        return plan

    async def _snapshot(self, state: OrgState, batch_id: int) -> None:
        db = self.store.db
        assert self._rid is not None
        body, defs_hash, defs_blob = snapshots.snapshot_body(state, self.store.codec, self._written)
        try:
            await db.call(writes.write_snapshot, self._rid, batch_id, state.tick, body, defs_hash, defs_blob)
        except StoreError:
            return  # a snapshot is only an accelerator
        db.known_texts.add(defs_hash)
        self._since_snapshot_events = 0
        self._since_snapshot_ticks = 0
