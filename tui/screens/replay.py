"""Replay mode's screen: the main screen's panes, over a recorded run, with the timeline as a cursor.

The panes are the live ones (MainScreen's); they read a `ReplayPosition`'s run at
the cursor and view, which hold the run as it stood at the cursor. Keys move the cursor —
←/→ one tick, PgUp/PgDn ten, home/end to the ends, `g` to a tick by number — and
`p` plays forward (+/- change the speed). One worker moves the cursor: a key only
sets where it should be, so keys pressed faster than the store answers are
coalesced, never queued. While the run is being written by another process the
screen polls the store twice a second; at the end of the run with `follow` on, the
cursor follows each new tick as it lands.

`enter` opens the inspector on a recorded turn (the prompt rebuilt from the
store), `f` forks a live run from the cursor's tick (the app switches to live
mode), `r` picks another run. Nothing here writes to the database.
"""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import PurePosixPath
from typing import Callable

from textual import events, on, work

from lemming.engine.store import StoreError

from lemming.tui.actions import REPLAY, bindings
from lemming.tui.model import Changes, Notice, StreamPiece
from lemming.tui.replay import Frame, ReplayPosition, ReplaySource
from lemming.tui.widgets.line_table import LineTable
from lemming.tui.widgets.replay_timeline import ReplayTimeline
from lemming.tui.screens.goto_tick import GoToTickDialog
from lemming.tui.screens.inspector import InspectorScreen
from lemming.tui.screens.main import MainScreen

#: Playback speeds, ticks per second (+ and - step through them).
SPEEDS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
DEFAULT_SPEED = 2
#: How often a run being written is polled for new ticks (seconds).
POLL_INTERVAL = 0.5
#: Timeline rows read per batch when they scroll into view.
ROW_BATCH = 8
#: Characters a reply is cut into when it is re-streamed while playing.
RESTREAM_CHUNK = 48
#: Seconds without a new frame after which the collector may make a full pass.
IDLE_GC_AFTER = 1.5
#: The notices of a tick that replay repeats when the cursor steps onto it.
TICK_NOTICES = ("Definitions reloaded", "Definition rejected", "Command rejected")

class ReplayScreen(MainScreen, inherit_bindings=False):
    """The control room over a recorded run (see the module docstring)."""

    TIMELINE = ReplayTimeline

    BINDINGS = bindings(REPLAY)

    timeline: ReplayTimeline

    def __init__(
        self,
        position: ReplayPosition,
        *,
        follow: bool = False,
        can_fork: bool = True,
        stream_mode: str = "selected",
        cursor_blink: bool = True,
        on_pane_failed: Callable[[str, BaseException], None] | None = None,
        on_ready: Callable[[], None] | None = None,
        on_frame: Callable[[Frame], None] | None = None,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        super().__init__(
            position.at,
            position.view,
            clock=None,
            stream_mode=stream_mode,
            on_pane_failed=on_pane_failed,
            on_ready=on_ready,
        )
        self.position = position
        self.follow = follow
        self.can_fork = can_fork
        self.cursor_blink = cursor_blink
        self.on_frame = on_frame
        self.poll_interval = poll_interval
        self.target: int = position.tick if position.tick is not None else position.hi
        self.playing = False
        self.speed = DEFAULT_SPEED
        self._wake = asyncio.Event()
        self._missing: set[int] = set()
        self._rows_wake = asyncio.Event()
        position.index.on_missing = self._row_missing
        self._restreaming: list[dict[str, list[StreamPiece]]] = []
        self._gc_threshold: tuple[int, int, int] | None = None
        self._last_frame = 0.0
        self._polled_at: float | None = None  # when the store was last read (the tick rate)
        #: The last definition change or rejected command passed while playing (the header shows it).
        self.tick_note = ""

    # --- set-up --------------------------------------------------------------------------

    def on_mount(self, event: events.Mount) -> None:
        event.prevent_default()  # MainScreen's set-up runs once, here, then replay's
        super().on_mount()
        self.timeline.show_tick(self.position.tick or 0, cursor=self.target, everything=True)
        self._play_subtitle()
        self.refresh_status()
        self._move_cursor()
        self._load_rows()
        if self.follow and getattr(self.app, "wall_clock", False):
            self.status.clock = time.monotonic  # WATCH shows the rate the run's ticks land at
        self._poll()
        self.position.prefetch()
        self._hold_full_collections()
        if self.on_frame is not None and self.position.tick is not None:
            self.on_frame(Frame(self.position.tick, Changes(), jumped=True))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "fork" and not self.can_fork:
            return False  # a read-only session: no fork key in the footer
        return True

    async def on_unmount(self) -> None:
        # However the screen goes (another run, a fork, the app quitting, a test ending),
        # the store's connection is closed: its thread would keep the process alive.
        if self._gc_threshold is not None:
            gc.set_threshold(*self._gc_threshold)
            self._gc_threshold = None
        await self.position.close()

    # --- garbage collection --------------------------------------------------------------
    #
    # The cursor's caches (decoded ticks, light states, views) are a few hundred thousand
    # objects; a full pass of the cyclic collector over them takes 100 ms and more, and
    # Python starts one every few dozen frames — a stutter on every few keys. While this
    # screen is up, full passes run only when the operator has left the keys alone for
    # a moment; the young generations are collected as usual.

    def _hold_full_collections(self) -> None:
        self._gc_threshold = gc.get_threshold()
        young, middle, _ = self._gc_threshold
        gc.set_threshold(young, middle, 1_000_000_000)
        self._last_frame = time.monotonic()
        self.set_interval(IDLE_GC_AFTER / 2, self._collect_when_idle)

    def _collect_when_idle(self) -> None:
        if time.monotonic() - self._last_frame >= IDLE_GC_AFTER and gc.get_count()[2] > 0:
            gc.collect()

    @property
    def recorded(self) -> ReplaySource:
        """The recorded run the cursor moves over (the store's side of it)."""
        return self.position.source

    @property
    def at_end(self) -> bool:
        return self.target >= self.position.hi

    # --- the header ----------------------------------------------------------------------

    def refresh_status(self, tick_committed: bool = False) -> None:
        source = self.source
        watching = self.recorded.writing and self.follow and self.at_end
        note = ""
        if self.recorded.info.status != "running" and self.recorded.info.reason and self.at_end:
            note = "" if self.recorded.info.status == "completed" else f"run {self.recorded.info.status}"
        note = " · ".join(x for x in (self.tick_note, note) if x)
        self.status.set(
            mode="WATCH" if watching else "REPLAY",
            tick=source.tick,
            total_spend=source.state.total_spend,
            interval=source.state.interval,
            thinking=0,
            run_id=source.run_id,
            recording=False,
            note=note,
        )

    def _play_subtitle(self) -> None:
        speed = SPEEDS[self.speed]
        shown = f"{speed:g} t/s"
        hi = self.position.hi
        where = f"tick {self.position.tick or 0}/{hi}"
        if self.playing:
            text = f"{where} · ▶ {shown} · p stops"
        elif self.recorded.writing and self.follow and self.at_end:
            text = f"{where} · following"
        else:
            text = f"{where} · p plays {shown}"
        self.timeline.set_play(text)

    # --- moving the cursor ---------------------------------------------------------------

    def move_to(self, tick: int) -> None:
        """Ask for `tick` (clamped); the cursor worker gets there."""
        pos = self.position
        self.target = max(pos.lo, min(pos.hi, tick))
        i = pos.index.index_of(self.target)
        if i is not None and i != self.timeline.cursor_row:
            self.timeline.cursor_row = i  # the cursor answers at once; the panes follow
        self._wake.set()

    def action_tick(self, delta: int) -> None:
        if self.playing and delta < 0:
            self.stop_playing()
        self.move_to(self.target + delta)

    def action_tick_to(self, where: str) -> None:
        if where == "first":
            self.stop_playing()
        self.move_to(self.position.lo if where == "first" else self.position.hi)

    @on(LineTable.CursorMoved, "#timeline")
    def _timeline_cursor(self, event: LineTable.CursorMoved) -> None:
        tick = self.timeline.selected_tick
        if tick is not None and tick != self.target:
            self.move_to(tick)

    @work(exclusive=True, group="replay-cursor", exit_on_error=False)
    async def _move_cursor(self) -> None:
        """The one worker that moves the cursor: to the latest target, one frame at a time
        (one tick at a time while playing or following, so each tick is seen)."""
        pos = self.position
        while True:
            await self._wake.wait()
            self._wake.clear()
            while pos.tick != self.target:
                cur = pos.tick
                target = self.target
                step = cur + 1 if cur is not None and target > cur and (self.playing or self.follow and self.at_end) else target
                try:
                    frame = await pos.goto(step)
                except StoreError as e:
                    self.app.notify(str(e), title="Cannot show that tick", severity="error", timeout=8)
                    self.target = pos.tick if pos.tick is not None else pos.lo
                    break
                self.show_frame(frame)
                pos.prefetch()
                await asyncio.sleep(0)  # let the screen paint between frames

    def show_frame(self, frame: Frame) -> None:
        """Repaint every pane for the tick the position now holds."""
        ch = frame.changes
        if frame.jumped:
            self.tick_note = ""  # the note was about a tick played through
        with self.app.batch_update():
            if ch.structure and self.selected_agent not in self.view.positions and self.view.order:
                self.select_agent(self.view.order[0])
            self._guard("roster", lambda: self.roster.refresh_agents(None))
            self._guard("credits", lambda: self.credits.refresh_agents(None))
            self._guard("graph", self.graph.refresh_graph)
            self._guard("timeline", lambda: self.timeline.show_tick(frame.tick, cursor=self.target, everything=frame.jumped))
            self._guard("stream", lambda: self._stream(frame))
            self._play_subtitle()
            self._guard("status", self.refresh_status)
        if not frame.jumped:
            for n in ch.notices:
                if n.title in TICK_NOTICES:
                    self._tick_notice(frame.tick, n)
        self._last_frame = time.monotonic()
        if self.on_frame is not None:
            self.on_frame(frame)

    def _tick_notice(self, tick: int, n: Notice) -> None:
        """A definition change or a rejected command at the tick just shown: a toast when
        the operator stepped there; while playing, a short note in the header instead
        (toasts would pile up over the panes), replaced by the next one."""
        if not self.playing:
            self.app.notify(n.text, title=f"tick {tick}: {n.title}", severity=n.severity, timeout=5)  # type: ignore[arg-type]
            return
        what = n.title.lower()
        if n.title == "Definition rejected":
            file = PurePosixPath(n.text.split("\n", 1)[0])
            what = f"{file.parent.name}/{file.name} rejected"
        self.tick_note = f"t{tick}: {what}"
        self._guard("status", self.refresh_status)

    def _stream(self, frame: Frame) -> None:
        stream = self.stream
        if not frame.jumped and self.playing and self.app.animation_level != "none":
            # Playing: the tick's replies stream in over the beat, as they did live.
            self._restream(frame.changes.stream, 0.8 / SPEEDS[self.speed])
        elif not frame.jumped:
            self._flush_restream()
            stream.feed(frame.changes.stream)  # the tick's replies, appended as they were live
        elif stream.mode == "selected":
            self._restreaming = []
            stream.show_agent(self.selected_agent)
        else:
            self._restreaming = []
            stream.set_mode("all")  # the turns up to this tick, this tick's last

    # --- re-streaming replies while playing ----------------------------------------------

    def _flush_restream(self) -> None:
        """Write what a re-stream still holds at once (another frame is coming)."""
        pending, self._restreaming = self._restreaming, []
        for step in pending:
            self.stream.feed(step)

    def _restream(self, pieces: dict[str, list[StreamPiece]], seconds: float) -> None:
        self._flush_restream()
        steps: list[dict[str, list[StreamPiece]]] = []
        for agent, agent_pieces in pieces.items():
            for p in agent_pieces:
                if p.kind == "text" and len(p.text) > RESTREAM_CHUNK:
                    for i in range(0, len(p.text), RESTREAM_CHUNK):
                        steps.append({agent: [StreamPiece("text", p.tick, p.text[i : i + RESTREAM_CHUNK])]})
                else:
                    steps.append({agent: [p]})
        self._restreaming = steps
        if steps:
            self._restream_worker(seconds / len(steps))

    @work(exclusive=True, group="replay-restream", exit_on_error=False)
    async def _restream_worker(self, delay: float) -> None:
        while self._restreaming:
            self.stream.feed(self._restreaming.pop(0))
            await asyncio.sleep(delay)

    # --- playing -------------------------------------------------------------------------

    def action_play(self) -> None:
        if self.playing:
            self.stop_playing()
            return
        if self.at_end and not self.recorded.writing:
            self.move_to(self.position.lo)  # at the end: play from the start
        self.playing = True
        self._play_subtitle()
        self._play()

    def stop_playing(self) -> None:
        if self.playing:
            self.playing = False
            self.workers.cancel_group(self, "replay-play")
            self._play_subtitle()

    def action_speed(self, delta: int) -> None:
        self.speed = max(0, min(len(SPEEDS) - 1, self.speed + delta))
        self._play_subtitle()

    @work(exclusive=True, group="replay-play", exit_on_error=False)
    async def _play(self) -> None:
        pos = self.position
        loop = asyncio.get_running_loop()
        beat = loop.time()
        while self.playing:
            beat += 1.0 / SPEEDS[self.speed]
            await asyncio.sleep(max(0.0, beat - loop.time()))
            beat = max(beat, loop.time() - 0.5)  # a slow store never makes it race to catch up
            if pos.tick != self.target:
                continue  # still drawing the last beat's tick
            if self.target >= pos.hi:
                if not self.recorded.writing:
                    break
                continue  # the run is being written: wait for its next tick
            self.move_to(self.target + 1)
        self.playing = False
        self._play_subtitle()

    def action_goto(self) -> None:
        pos = self.position
        if pos.hi < pos.lo or pos.hi <= 0:
            self.app.notify("No tick is recorded yet.", severity="warning", timeout=3)
            return

        def done(tick: int | None) -> None:
            if tick is not None:
                self.stop_playing()
                self.move_to(tick)

        self.app.push_screen(GoToTickDialog(pos.tick or pos.lo, pos.lo, pos.hi, cursor_blink=self.cursor_blink), done)

    # --- following a run being written --------------------------------------------------

    @work(exclusive=True, group="replay-poll", exit_on_error=False)
    async def _poll(self) -> None:
        pos = self.position
        while True:
            # A finished run is still polled, slowly: `lemming resume` may take it up again.
            await asyncio.sleep(self.poll_interval if self.recorded.writing else max(2.0, self.poll_interval))
            was_end = self.at_end
            old_hi = pos.hi
            try:
                changed = await pos.refresh()
            except StoreError as e:
                self.status.set(note=f"store: {e}"[:80])
                continue
            finally:
                since, self._polled_at = self._polled_at, time.monotonic()  # the status bar's clock
            if not changed:
                continue
            if pos.hi != old_hi:
                self.timeline.invalidate(None)
                if self.follow and was_end:
                    self._ticks_landed(pos.hi - old_hi, since)
                    self.move_to(pos.hi)
            self._play_subtitle()
            self.refresh_status()

    def _ticks_landed(self, count: int, since: float | None) -> None:
        """`count` ticks were written since the poll before (at `since`): for the header's
        tick rate, each at its share of the time between (a poll sees a fast run's ticks in
        bunches)."""
        now = self._polled_at
        if self.status.clock is None or now is None:
            return
        last = since if since is not None else now
        for i in range(max(1, count - 11), count + 1):  # the rate keeps the last 12
            self.status.tick_committed(last + (now - last) * i / count)

    # --- timeline rows off screen --------------------------------------------------------

    def _row_missing(self, tick: int) -> None:
        self._missing.add(tick)
        self._rows_wake.set()

    @work(exclusive=True, group="replay-rows", exit_on_error=False)
    async def _load_rows(self) -> None:
        pos = self.position
        while True:
            await self._rows_wake.wait()
            self._rows_wake.clear()
            while self._missing:
                # The rows nearest the cursor first; the moving cursor has priority.
                if pos.tick != self.target:
                    await asyncio.sleep(0.05)
                    continue
                here = pos.tick or 0
                batch = sorted(self._missing, key=lambda t: abs(t - here))[:ROW_BATCH]
                self._missing.difference_update(batch)
                try:
                    done = await pos.load_rows(batch)
                except StoreError:
                    continue
                if done:
                    self.timeline.refresh_ticks(set(done))

    # --- turns, forks, help --------------------------------------------------------------

    def action_plots(self) -> None:
        """The run's figures per tick up to the cursor (`s`)."""
        from lemming.tui.screens.plots import PlotsScreen
        from lemming.tui.series import load_series

        source, store, tick, agent = self.source, self.recorded.store, self.position.tick or 0, self.selected_agent
        self.app.push_screen(PlotsScreen(lambda: load_series(store, source.run_id, tick, agent),
                                         where=f"run {source.run_id} · up to tick {tick}"))

    def action_mcp(self) -> None:
        """The MCP servers of the run's definitions and the calls recorded up to the cursor
        (`M`): replay never starts a server."""
        from lemming.tui.screens.mcp import McpScreen, recorded_turns_picture

        source, store, tick = self.source, self.recorded.store, self.position.tick or 0
        self.app.push_screen(McpScreen(lambda: recorded_turns_picture(store, source, tick),
                                       wall_clock=getattr(self.app, "wall_clock", True)))

    def action_search(self) -> None:
        """Find in the run (`/`): enter on a hit moves the cursor to its tick and selects its agent."""
        from lemming.tui.screens.search import open_search

        def chosen(hit) -> None:  # noqa: ANN001
            self.stop_playing()
            self.move_to(hit.tick)
            if hit.agent in self.view.agents:
                self.select_agent(hit.agent)

        # A strictly read-only session (--no-fork) never writes the file, not even the index.
        open_search(self.app, self.recorded.store, self.source.run_id, chosen, build=self.can_fork)

    def action_inspect_turn(self) -> None:
        agent = self.selected_agent
        tick: int | None = None
        if self.focused is self.timeline and self.timeline.selected_tick is not None:
            tick = self.timeline.selected_tick
            row = self.position.index.get(tick)
            if row is not None and agent not in row.fired:
                candidates = list(row.failed) or list(row.fired)
                if candidates:
                    agent = candidates[0]
        if agent is None:
            self.app.notify("Select an agent first.", severity="warning")
            return
        self._inspect(agent, tick if tick is not None else (self.position.tick or 0))

    @work(exclusive=True, group="replay-inspect", exit_on_error=False)
    async def _inspect(self, agent: str, upto: int) -> None:
        try:
            turns = await self.recorded.turns_for_inspector(agent, upto)
        except StoreError as e:
            self.app.notify(str(e), title="Cannot read the turn", severity="error", timeout=8)
            return
        if not turns:
            self.app.notify(f"{agent} has no recorded turn up to tick {upto}.", severity="warning", timeout=3)
            return
        index = next((i for i, t in enumerate(turns) if t.tick == upto), len(turns) - 1)
        self.app.push_screen(InspectorScreen(turns, index, wall_clock=getattr(self.app, "wall_clock", True)))

    def action_fork(self) -> None:
        if not self.can_fork:
            self.app.notify("This session is read-only: forks are turned off.", severity="warning", timeout=4)
            return
        self.stop_playing()
        fork = getattr(self.app, "fork_at", None)
        if fork is not None and self.position.tick is not None:
            fork(self.position.tick)

