"""Replay: a recorded run read back from the run store and shown by the control room's own panes.

`ReplaySource` opens the store read-only (it never writes to it) and answers what
the panes need at any tick: the organisation's state at the end of the tick (the
store's fold, `RunStore.state_at`), the events of one tick (`tick_events`), any
turn whole (`turn`: its prompt rebuilt from the store and checked against its
hash), and, when following a run that another process is writing, how far that
run has got.

`ReplayPosition` is the cursor. Moving forward one tick folds that tick's events
into the state and into the view, with `OrgState.apply` and `RunView.apply`: the
very folds the live engine and the live panes use, so a pane at tick T shows what
it showed live at T. Any other move starts from the store's state at the new tick
and folds the last few ticks' events into a fresh view (the panes show message
volumes and spend rates over the last RECENT_TICKS ticks).

The panes never read the message board or the agents' memory, so the cursor keeps
a light copy of each state it has shown (credits, spend, last turns...) without
them: stepping back is a dictionary lookup, and a block of earlier states is
folded in the background while the operator looks at a tick. A fork reads the
whole state from the store.

No Textual in here: the tests and the benchmark drive it directly too.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence, overload

from lemming.engine.events import Event, MessageCommitted, TurnFinished, TurnRecord
from lemming.engine.messages import MessageBoard
from lemming.engine.run_view import RecordedRunAt
from lemming.engine.state import OrgState
from lemming.engine.store import RunInfo, RunStore, StoreError

from lemming.tui.model import RECENT_TICKS, STREAM_CHARS, VIEW_SKIPS, Changes, RunView, StreamPiece, TickRow, turn_pieces, unfinished_copy

#: Ticks whose events are kept decoded (the view's window, the backward block, prefetches).
EVENT_CACHE_TICKS = 48
#: Light states and views kept for stepping back without the store. (Kept small: what
#: the caches hold is what the cyclic garbage collector walks through on a full pass.)
STATE_CACHE_TICKS = 256
VIEW_CACHE_TICKS = 64
#: How many earlier states one background block folds (more than the view's window).
BACK_BLOCK = 16
#: A forward move of up to this many ticks folds events instead of asking the store.
FORWARD_FOLD = 16
#: The view's window grows back this far to find RECENT_TICKS ticks that carried messages.
MAX_WINDOW = 4 * RECENT_TICKS
#: How many recorded turns of an agent the inspector gets ([ and ] page through them).
INSPECT_TURNS = 12


def display_copy(state: OrgState) -> OrgState:
    """A copy of `state` for the panes: every field the panes read, copied so that
    folding further ticks into it leaves `state` alone; the message board and the
    agents' memory are left out (empty), since no pane shows them."""
    c = copy.copy(state)
    for f in dataclasses.fields(c):
        v = getattr(c, f.name)
        if isinstance(v, dict):
            setattr(c, f.name, dict(v))
        elif isinstance(v, set):
            setattr(c, f.name, set(v))
    c.board = MessageBoard()
    c.memory = {}
    return c


def view_events(events: Iterable[Event]) -> list[Event]:
    """`events` without those the view ignores (VIEW_SKIPS: the agents' memory changes,
    a third of a tick's events; the panes' light states carry no memory either)."""
    return [e for e in events if type(e) not in VIEW_SKIPS]


def agent_names(state: OrgState) -> list[str]:
    """Every agent the run has had up to `state` (retired ones included), by name."""
    return sorted(set(state.credits) | set(state.org.agents) | state.retired)


def fold_tick_row(tick: int, events: Iterable[Event]) -> TickRow:
    """The timeline row of `tick` from its events (the boundary commands before it
    included), folded exactly as the live view folds them."""
    v = RunView()
    v.committed_tick = tick - 1
    v.apply(events)
    row = v.row(tick)
    return row if row is not None else TickRow(tick, status="done")


class TickIndex(Sequence[TickRow]):
    """The timeline's rows in replay: one per committed tick `lo`..`hi`, each filled in
    when its events are read. A row not read yet is a placeholder (status "loading")
    and asking for it tells `on_missing`, so the rows on screen are read first."""

    def __init__(self, lo: int = 1, hi: int = 0, on_missing: Callable[[int], None] | None = None) -> None:
        self.lo = lo
        self.hi = hi
        self.on_missing = on_missing
        self._rows: dict[int, TickRow] = {}
        self._placeholders: dict[int, TickRow] = {}

    def __len__(self) -> int:
        return max(0, self.hi - self.lo + 1)

    @overload
    def __getitem__(self, i: int) -> TickRow: ...
    @overload
    def __getitem__(self, i: slice) -> list[TickRow]: ...
    def __getitem__(self, i):  # noqa: ANN001, ANN204
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        tick = self.lo + i
        row = self._rows.get(tick)
        if row is not None:
            return row
        ph = self._placeholders.get(tick)
        if ph is None:
            if len(self._placeholders) > 4096:
                self._placeholders.clear()
            ph = self._placeholders[tick] = TickRow(tick, status="loading")
        if self.on_missing is not None:
            self.on_missing(tick)
        return ph

    def get(self, tick: int) -> TickRow | None:
        return self._rows.get(tick)

    def has(self, tick: int) -> bool:
        return tick in self._rows

    def put(self, row: TickRow) -> None:
        self._rows[row.tick] = row
        self._placeholders.pop(row.tick, None)

    def index_of(self, tick: int) -> int | None:
        return tick - self.lo if self.lo <= tick <= self.hi else None

    def extend(self, hi: int) -> None:
        self.hi = max(self.hi, hi)


class ReplayView(RunView):
    """The control room's view of a recorded run at the cursor.

    Folding is RunView's own; the differences are where timeline rows go (the rows
    the panes see are the whole run's `TickIndex`; the fold writes into scratch rows,
    which are copied into the index once their tick is complete) and that a turn's
    reply, which live arrives as token deltas, is re-streamed from its record.
    """

    def __init__(self, index: TickIndex, agent_names: Iterable[str] = ()) -> None:
        super().__init__(agent_names)
        self.index = index
        self.rows = index
        self._scratch: dict[int, TickRow] = {}

    def row(self, tick: int) -> TickRow | None:
        return self.index.get(tick) or self._scratch.get(tick)

    def _ensure_row(self, tick: int) -> TickRow:
        row = self._scratch.get(tick)
        if row is None:
            if len(self._scratch) > 4 * MAX_WINDOW:
                for t in sorted(self._scratch)[: len(self._scratch) // 2]:
                    del self._scratch[t]
            row = self._scratch[tick] = TickRow(tick)
        return row

    def _copy_rows(self, c: "ReplayView") -> None:
        # The index is the whole run's, shared; the scratch rows are this view's own.
        c._scratch = {t: unfinished_copy(r) for t, r in self._scratch.items()}
        c._row_index = dict(self._row_index)

    def completed_row(self, tick: int) -> TickRow | None:
        """The folded row of `tick` if its TickCompleted has been folded."""
        row = self._scratch.get(tick)
        return row if row is not None and row.status == "done" else None

    def _turn_finished(self, ev: TurnFinished, ch: Changes) -> None:
        rec = ev.record
        pieces = ch.stream.get(ev.agent)
        streamed = pieces is not None and any(p.kind == "text" and p.tick == ev.tick for p in pieces)
        if rec.raw_output and not streamed:
            # Live, the reply arrived as token deltas; here it is the recorded text.
            ch.piece(ev.agent, StreamPiece("text", ev.tick, rec.raw_output))
        super()._turn_finished(ev, ch)

    def fill_from(self, state: OrgState) -> None:
        """Agents whose last turn is older than the folded window: their last reply."""
        for name in agent_names(state):
            a = self.agent(name)
            rec = state.last_turn.get(name)
            if rec is None or a.stream_tick is not None:
                continue
            a.stream_tick = rec.tick
            a.stream_text = rec.raw_output[-STREAM_CHARS:]
            a.history.append(rec)
            a.last_tick = rec.tick
            a.last_status = rec.status
            a.last_error = rec.error
        for name in state.soft_warned:
            self.agent(name).soft_capped = True


@dataclass
class Frame:
    """What one cursor move produced, for the panes."""

    tick: int
    #: What folding the tick's own events changed (its replies are the stream pieces).
    changes: Changes
    #: False for a step of one tick forward (the panes append, as live); True for any
    #: other move (the panes repaint from the view).
    jumped: bool


class ReplaySource:
    """One recorded run, read-only. Open with `await ReplaySource.open(db, run_id)`."""

    def __init__(self, store: RunStore, info: RunInfo, lineage: list[tuple[str, int]]) -> None:
        self.store = store
        self.info = info
        #: (run id, base tick) newest first: a tick t belongs to the first run whose base < t.
        self.lineage = lineage
        self._events: OrderedDict[int, list[Event]] = OrderedDict()
        self._inflight: dict[int, asyncio.Task[list[Event]]] = {}
        self._closed = False

    @classmethod
    async def open(cls, db: Path | str, run_id: str) -> "ReplaySource":
        store = await RunStore.open(db, readonly=True)
        try:
            info = await store.get_run(run_id)
            lineage: list[tuple[str, int]] = []
            cur: RunInfo | None = info
            while cur is not None:
                lineage.append((cur.id, (cur.fork_tick or 0) if cur.parent_run else 0))
                cur = await store.get_run(cur.parent_run) if cur.parent_run else None
        except BaseException:
            await store.close()
            raise
        return cls(store, info, lineage)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        self._inflight.clear()
        await self.store.close()

    @property
    def run_id(self) -> str:
        return self.info.id

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def first_tick(self) -> int:
        return 1

    @property
    def last_tick(self) -> int:
        """The last committed tick (grows while another process writes the run)."""
        return self.info.ticks

    @property
    def writing(self) -> bool:
        """Whether the run is being written (by a process that is alive)."""
        return self.info.status == "running"

    def owner(self, tick: int) -> str:
        """The run of the lineage that holds `tick` (a fork's early ticks are its parent's)."""
        for run_id, base in self.lineage:
            if tick > base:
                return run_id
        return self.lineage[-1][0]

    # --- reading ---------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Read the run's row again; True if it has more ticks or another status."""
        info = await self.store.get_run(self.info.id)
        changed = (info.ticks, info.status, info.reason) != (self.info.ticks, self.info.status, self.info.reason)
        self.info = info
        return changed

    async def state_at(self, tick: int) -> OrgState:
        """The state at the end of `tick` for the panes: prompts left out (`turn` has them)
        and the message board too (no pane reads it; loading it means decoding every
        message of the run up to `tick`)."""
        if tick <= 0:
            try:
                return await self.store.state_at(self.run_id, 0, prompts=False, messages=False)
            except StoreError:  # nothing written yet but the run's row
                return await self.store.state_at(self.run_id, None, prompts=False, messages=False)
        return await self.store.state_at(self.run_id, tick, prompts=False, messages=False)

    def cached_events(self, tick: int) -> list[Event] | None:
        evs = self._events.get(tick)
        if evs is not None:
            self._events.move_to_end(tick)
        return evs

    async def events_of(self, tick: int) -> list[Event]:
        """The events that turn the panes' state at tick-1 into their state at tick
        (the store's `tick_events` without VIEW_SKIPS), cached."""
        evs = self.cached_events(tick)
        if evs is not None:
            return evs
        task = self._inflight.get(tick)
        if task is None:
            task = self._inflight[tick] = asyncio.ensure_future(self._read_tick(tick))
        return await asyncio.shield(task)

    def prefetch(self, tick: int) -> None:
        """Start reading a tick's events in the background (if not read or being read)."""
        if self._closed or tick < self.first_tick or tick > self.last_tick:
            return
        if tick in self._events or tick in self._inflight:
            return
        self._inflight[tick] = asyncio.ensure_future(self._read_tick(tick))

    async def _read_tick(self, tick: int) -> list[Event]:
        try:
            evs = await self.store.tick_events(self.owner(tick), tick, skip=VIEW_SKIPS)
            self._events[tick] = evs
            while len(self._events) > EVENT_CACHE_TICKS:
                self._events.popitem(last=False)
            return evs
        finally:
            self._inflight.pop(tick, None)

    async def turn(self, tick: int, agent: str) -> TurnRecord | None:
        """One turn exactly as it was (prompt rebuilt from the store, checked against its hash)."""
        return await self.store.turn(self.run_id, tick, agent)

    async def turn_ticks(self, agent: str, upto: int, limit: int = INSPECT_TURNS) -> list[int]:
        """The ticks of `agent`'s last `limit` turns at or before `upto`."""
        found: list[int] = []
        hi = upto
        span = 64
        while len(found) < limit and hi >= 1:
            lo = max(1, hi - span + 1)
            ticks = [t for t, a, *_ in await self._turn_rows(lo, hi) if a == agent]
            found = sorted(ticks) + found
            hi = lo - 1
            span *= 4
        return found[-limit:]

    async def _turn_rows(self, lo: int, hi: int) -> list[tuple]:
        out: list[tuple] = []
        upper = hi
        for run_id, base in self.lineage:
            a, b = max(lo, base + 1), upper
            if a <= b:
                out.extend(await self.store.turns(run_id, since_tick=a, until_tick=b))
            upper = min(upper, base)
            if upper < lo:
                break
        return out

    async def turns_for_inspector(self, agent: str, upto: int) -> list[TurnRecord]:
        """`agent`'s recorded turns up to tick `upto`, whole, oldest first."""
        out = []
        for t in await self.turn_ticks(agent, upto):
            rec = await self.turn(t, agent)
            if rec is not None:
                out.append(rec)
        return out


class ReplayPosition:
    """The replay cursor: the state and the view at one tick of a `ReplaySource`.

    `at` (the RunSource) and `view` are the objects the panes were built with; a move
    changes what they hold, never which objects they are.
    """

    def __init__(self, source: ReplaySource, on_missing_row: Callable[[int], None] | None = None) -> None:
        self.source = source
        info = source.info
        self.index = TickIndex(source.first_tick, source.last_tick, on_missing_row)
        self.at = RecordedRunAt(info.id, info.seed)
        self.view = ReplayView(self.index)
        self.view.run_id = info.id
        self.tick: int | None = None
        # Light copies of the states and views already built, by tick.
        self._states: OrderedDict[int, OrgState] = OrderedDict()
        self._views: OrderedDict[int, ReplayView] = OrderedDict()
        self._block: tuple[int, int, asyncio.Task[None]] | None = None

    # --- bounds ------------------------------------------------------------------------

    @property
    def lo(self) -> int:
        """The first tick the cursor can show (0 while the run has committed none)."""
        return self.source.first_tick if self.source.last_tick >= self.source.first_tick else self.source.last_tick

    @property
    def hi(self) -> int:
        return self.source.last_tick

    def clamp(self, tick: int) -> int:
        return max(self.lo, min(self.hi, tick))

    async def refresh(self) -> bool:
        """Follow a run being written: True if it has new ticks or another status."""
        changed = await self.source.refresh()
        self.index.extend(self.source.last_tick)
        return changed

    # --- moving --------------------------------------------------------------------------

    async def goto(self, tick: int) -> Frame:
        """Move to `tick` (clamped to what is recorded) and return what changed."""
        tick = self.clamp(tick)
        prev = self.tick
        if prev is None:
            await self._jump(tick)
            # What is alive now (the app, the first state and view) lives as long as the
            # replay: keep the collector's full passes off it.
            self.source.store.freeze_gc_now()
            return Frame(tick, tick_changes(self.view, tick), jumped=True)
        if prev is not None and tick == prev + 1:
            return await self._step_forward()
        if prev is not None and prev < tick <= prev + FORWARD_FOLD and tick not in self._views:
            for t in range(prev + 1, tick + 1):
                self.source.prefetch(t)
            for _ in range(prev + 1, tick + 1):
                await self._step_forward()
            return Frame(tick, tick_changes(self.view, tick), jumped=True)
        await self._jump(tick)
        return Frame(tick, tick_changes(self.view, tick), jumped=True)

    async def _step_forward(self) -> Frame:
        assert self.tick is not None
        t = self.tick + 1
        evs = await self.source.events_of(t)
        state = self._states.get(t)
        if state is None:
            state = fold_state(self._states[self.tick] if self.tick in self._states else self.at.state, evs)
            self._remember(self._states, t, state)
        changes = self.view.apply(view_events(evs))
        row = self.view.completed_row(t)
        if row is not None:
            self.index.put(row)
        self._show(t, state)
        self._remember(self._views, t, self.view.copy())
        return Frame(t, changes, jumped=False)

    async def _jump(self, tick: int) -> None:
        state = await self._state(tick)
        cached = self._views.get(tick)
        if cached is None:
            cached = await self._build_view(tick, state)
            self._remember(self._views, tick, cached)
        else:
            self._views.move_to_end(tick)
        self.view.restore(cached)
        self._show(tick, state)

    def _show(self, tick: int, state: OrgState) -> None:
        self.tick = tick
        self.at.state = state

    async def _state(self, tick: int) -> OrgState:
        block = self._block
        if tick not in self._states and block is not None and block[0] <= tick <= block[1] and not block[2].done():
            await asyncio.shield(block[2])  # the read-ahead is building it
        state = self._states.get(tick)
        if state is not None:
            self._states.move_to_end(tick)
            return state
        state = display_copy(await self.source.state_at(tick))
        self._remember(self._states, tick, state)
        return state

    async def _build_view(self, tick: int, state: OrgState) -> "ReplayView":
        """A new view at `tick`: the window's events folded, then the older last turns."""
        window = await self._window(tick)
        view = ReplayView(self.index, agent_names(state))
        view.run_id = self.source.run_id
        view.committed_tick = window[0][0] - 1 if window else tick
        for t, evs in window:
            view.apply(view_events(evs))
            row = view.completed_row(t)
            if row is not None:
                self.index.put(row)
        view.committed_tick = tick
        view.fill_from(state)
        return view

    async def _window(self, tick: int) -> list[tuple[int, list[Event]]]:
        """The events of the ticks the view folds at `tick`: the last RECENT_TICKS, and
        further back until RECENT_TICKS of them carried messages (up to MAX_WINDOW)."""
        lo = self.source.first_tick
        ticks = list(range(max(lo, tick - RECENT_TICKS + 1), tick + 1))
        for t in ticks:
            self.source.prefetch(t)
        out = [(t, await self.source.events_of(t)) for t in ticks]
        with_messages = sum(1 for _, evs in out if any(type(e) is MessageCommitted for e in evs))
        t = ticks[0] - 1 if ticks else tick
        while with_messages < RECENT_TICKS and t >= lo and tick - t < MAX_WINDOW:
            evs = await self.source.events_of(t)
            out.insert(0, (t, evs))
            if any(type(e) is MessageCommitted for e in evs):
                with_messages += 1
            t -= 1
        return out

    @staticmethod
    def _remember(cache: OrderedDict, tick: int, value: object) -> None:
        cache[tick] = value
        cache.move_to_end(tick)
        limit = STATE_CACHE_TICKS if value.__class__ is OrgState else VIEW_CACHE_TICKS
        while len(cache) > limit:
            cache.popitem(last=False)

    # --- reading ahead -------------------------------------------------------------------

    def prefetch(self) -> None:
        """While the operator looks at this tick, read what the next moves need: the next
        tick's events, and a block of earlier states and views for stepping back."""
        tick = self.tick
        if tick is None:
            return
        self.source.prefetch(tick + 1)
        block = self._block
        if block is not None and not block[2].done():
            return
        # The nearest earlier tick not ready yet, if it is close: fold a block ending there.
        for back in range(tick - 1, max(self.lo, tick - BACK_BLOCK // 2) - 1, -1):
            if back not in self._states or back not in self._views:
                start = max(self.lo, back - BACK_BLOCK)
                self._block = (start, back, asyncio.ensure_future(self._fold_block(start, back)))
                return

    async def _fold_block(self, start: int, end: int) -> None:
        """States and views start..end into the caches: one read of the store and one
        window fold, then one tick's events at a time."""
        try:
            state = self._states.get(start)
            if state is None:
                state = display_copy(await self.source.state_at(start))
                self._remember(self._states, start, state)
            view = self._views.get(start)
            if view is None:
                view = await self._build_view(start, state)
                self._remember(self._views, start, view)
            view = view.copy()
            for t in range(start + 1, end + 1):
                self.source.prefetch(t)
            for t in range(start + 1, end + 1):
                evs = await self.source.events_of(t)
                if t in self._states:
                    state = self._states[t]
                else:
                    state = fold_state(state, evs)
                    self._remember(self._states, t, state)
                view.apply(view_events(evs))
                row = view.completed_row(t)
                if row is not None:
                    self.index.put(row)
                if t not in self._views:
                    self._remember(self._views, t, view.copy())
        except (StoreError, asyncio.CancelledError):
            pass  # a read-ahead only: the move that needs it reads again and reports

    async def close(self) -> None:
        block = self._block
        if block is not None and not block[2].done():
            block[2].cancel()
            await asyncio.gather(block[2], return_exceptions=True)
        await self.source.close()

    # --- rows off screen -----------------------------------------------------------------

    async def load_rows(self, ticks: Sequence[int]) -> list[int]:
        """Fill the timeline rows of `ticks` (those not read yet); returns the ticks filled."""
        done = []
        for t in ticks:
            if self.index.has(t) or not (self.source.first_tick <= t <= self.source.last_tick):
                continue
            evs = self.source.cached_events(t)
            if evs is None:
                evs = await self.source.store.tick_events(self.source.owner(t), t, skip=VIEW_SKIPS)
            self.index.put(fold_tick_row(t, evs))
            done.append(t)
        return done


def fold_state(state: OrgState, events: Iterable[Event]) -> OrgState:
    """A light copy of `state` with `events` applied (`state` is left as it was)."""
    s = display_copy(state)
    apply = s.apply
    for ev in events:
        apply(ev)
    return s


def tick_changes(view: "ReplayView", tick: int) -> Changes:
    """The stream pieces of `tick`'s replies, from the agents' kept turns: what a pane
    that was not watching when the tick ran shows of it."""
    ch = Changes()
    row = view.index.get(tick)
    names = row.fired if row is not None else tuple(view.order)
    for name in names:
        a = view.agents.get(name)
        if a is None:
            continue
        rec = next((r for r in reversed(a.history) if r.tick == tick), None)
        if rec is None:
            continue
        for piece in turn_pieces(rec):
            ch.piece(name, piece)
    return ch
