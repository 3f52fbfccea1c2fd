"""ReplayRoom: the control room opened on recorded runs (`lemming replay`, `watch`, `serve`).

A Room like the live ControlRoom, with another start: instead of an engine it
opens a run from the store, read-only, in replay mode (ReplayScreen: the same
panes, the timeline as a cursor). From there the operator may

* pick another run (`r`, or the run picker when no run was named);
* fork (`f`): a new run starts from the cursor's tick — the store records it as a
  child of the replayed run — and the window switches to live mode, the ordinary
  control room steering that engine (it starts paused);
* start a new live run of the organisation from the run picker (`n`), when the
  session allows live runs (a browser session through `lemming serve` does not
  unless the operator said so).

Until the operator forks or starts a run, nothing writes to the database.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Callable, Unpack

from textual import work
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from lemming.engine.org import OrgInvalid
from lemming.engine.recorded_run import CONTROL_ROOM, RecordedRun, RunSettings
from lemming.engine.store import StoreError

from lemming.tui.actions import LIVE, PICKER, REPLAY, bindings
from lemming.tui.replay import Frame, ReplayPosition, ReplaySource
from lemming.tui.room import Room, RoomOptions
from lemming.tui.screens.replay import ReplayScreen
from lemming.tui.screens.runs import NEW_RUN, RunsScreen


class OpeningScreen(Screen[None]):
    """Shown while a run is opened (and behind the run picker)."""

    DEFAULT_CSS = """
    OpeningScreen { align: center middle; }
    OpeningScreen #opening { width: auto; max-width: 90%; height: auto; color: $text-muted; }
    """

    BINDINGS = bindings(PICKER)

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        yield Static(self.text, id="opening")

    def say(self, text: str) -> None:
        self.query_one("#opening", Static).update(text)


class ReplayRoom(Room):
    """The control room over recorded runs (see the module docstring)."""

    read_only_note = "Replay is read-only: f forks a live run from the cursor's tick."

    def __init__(
        self,
        db: Path | str,
        run_id: str | None = None,
        *,
        follow: bool = False,
        at: int | None = None,
        can_fork: bool = True,
        allow_new: bool = False,
        org: Path | str | None = None,
        seed: int = 0,
        interval: float | None = None,
        sim_tokens_per_s: float | None = None,
        poll_interval: float = 0.5,
        on_frame: Callable[[Frame], None] | None = None,
        **options: Unpack[RoomOptions],
    ) -> None:
        options.setdefault("pump_interval", 0.1)
        super().__init__(**options)
        self.db = Path(db)
        self.first_run = run_id
        self.follow = follow
        self.at = at
        self.can_fork = can_fork
        self.allow_new = allow_new
        self.org_path = Path(org) if org is not None else None
        #: How a fork or a new live run runs: the control room's defaults, paused.
        sim = {"tokens_per_s": sim_tokens_per_s} if sim_tokens_per_s is not None else None
        self.run_settings: RunSettings = CONTROL_ROOM.replace(seed=seed, paused=True, interval=interval, sim=sim)
        self.poll_interval = poll_interval
        self.on_frame = on_frame
        self.mode = PICKER if run_id is None else REPLAY
        self.position: ReplayPosition | None = None

    # --- screens -------------------------------------------------------------------------

    def get_default_screen(self) -> Screen:
        what = f"run {self.first_run}" if self.first_run else "the run database"
        return OpeningScreen(f"Opening {what} in {self.db} …")

    @property
    def replay_screen(self) -> ReplayScreen | None:
        for screen in self.screen_stack:
            if isinstance(screen, ReplayScreen):
                return screen
        return None

    def start(self) -> None:
        if self.first_run is not None:
            self.open_run(self.first_run, at=self.at)
        else:
            self.action_runs()

    def offers(self, action: str) -> bool:
        return action != "screen.fork" or self.can_fork

    # --- opening runs --------------------------------------------------------------------

    def open_run(self, run_id: str, *, at: int | None = None) -> None:
        """Show `run_id` in replay mode (at its last tick, or `at`)."""
        self._open(run_id, at)

    @work(exclusive=True, group="replay-open", exit_on_error=False)
    async def _open(self, run_id: str, at: int | None) -> None:
        opening = self.screen if isinstance(self.screen, OpeningScreen) else None
        if opening is not None:
            opening.say(f"Opening run {run_id} in {self.db} …")
        source: ReplaySource | None = None
        try:
            source = await ReplaySource.open(self.db, run_id)
            position = ReplayPosition(source)
            await position.goto(position.hi if at is None else at)
        except (StoreError, OSError) as e:
            if source is not None:
                await source.close()
            self.notify(str(e), title="Cannot open the run", severity="error", timeout=15)
            if opening is not None:
                opening.say(f"Cannot open run {run_id}:\n{e}\n\nr lists the recorded runs · q quits")
            return
        # A long run's message log is millions of objects that live as long as the run is
        # open: keep them out of the cyclic collector's full passes (see ReplayScreen).
        self.hold_heap()
        old = self.position
        self.position = position
        self.connect(position.at, view=position.view)
        self.mode = REPLAY
        screen = ReplayScreen(
            position,
            follow=self.follow or source.writing,
            can_fork=self.can_fork,
            stream_mode=self.stream_mode,
            cursor_blink=self.cursor_blink,
            on_pane_failed=self.pane_failed,
            on_frame=self.on_frame,
            poll_interval=self.poll_interval,
        )
        await self.show_main(screen)
        if old is not None:
            await old.close()

    def action_runs(self) -> None:
        """The run picker: enter opens a run, n starts a live one (where allowed)."""
        if isinstance(self.screen, RunsScreen):
            return
        current = self.position.source.run_id if self.position is not None else None
        if self.mode == LIVE and self.source is not None:
            current = self.source.run_id

        def chosen(choice: str | None) -> None:
            if choice is None:
                if self.mode == PICKER:
                    self.exit(0, return_code=0)
                return
            if choice == NEW_RUN:
                self._new_live_run()
                return
            if self.mode == LIVE and self.control is not None and self.control.running:
                self.notify("The live run is still running; q stops it (and quits).", severity="warning", timeout=6)
                return
            self.follow = False
            self.open_run(choice)

        self.push_screen(
            RunsScreen(self.db, allow_new=self.allow_new and self.mode != LIVE, can_close=True, current=current),
            chosen,
        )

    # --- forking and live runs -----------------------------------------------------------

    def fork_at(self, tick: int) -> None:
        """Fork the replayed run at `tick` into a new live run (in this window)."""
        if self.mode != REPLAY or self.position is None:
            return
        if not self.can_fork:
            self.notify("This session is read-only: forks are turned off.", severity="warning")
            return
        self._fork(self.position.source.run_id, tick)

    @work(exclusive=True, group="replay-fork", exit_on_error=False)
    async def _fork(self, run_id: str, tick: int) -> None:
        try:
            recorded = await RecordedRun.fork(self.db, run_id, tick, self.run_settings)
        except (StoreError, OSError, ValueError) as e:
            self.notify(str(e), title="Cannot fork", severity="error", timeout=15)
            return
        await self._go_live(recorded)
        engine = recorded.engine
        self.notify(
            f"Run {engine.run_id} forked from {run_id} at tick {tick}, recorded in {self.db}. "
            "It is paused: space runs it, n steps one tick.",
            title="Forked",
            timeout=8,
        )

    @work(exclusive=True, group="replay-fork", exit_on_error=False)
    async def _new_live_run(self) -> None:
        org = self.org_path or Path(".")
        try:
            recorded = await RecordedRun.start(org, self.run_settings, self.db)
        except OrgInvalid as e:
            self.notify("\n".join(e.problems[:6]), title=f"The organisation at {org} cannot run", severity="error", timeout=20)
            return
        except (StoreError, OSError) as e:
            self.notify(str(e), title="Cannot start a run", severity="error", timeout=15)
            return
        await self._go_live(recorded)
        engine = recorded.engine
        self.notify(f"Run {engine.run_id} of {engine.org.root} started, paused: space runs it.", title="Live run", timeout=8)

    async def _go_live(self, recorded: RecordedRun) -> None:
        """Switch the window to live mode on the recorded run's engine."""
        old, self.position = self.position, None
        self.mode = LIVE
        engine = recorded.engine
        self.recording = str(recorded.db)
        # Subscribed before the run starts, so the panes see RunStarted and everything after.
        await self.show_run(engine, control=engine, feed=engine.subscribe(tokens=True))
        self.run_live(engine, recorded)
        if old is not None:
            await old.close()

    # --- the rest ------------------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        super().on_worker_state_changed(event)
        worker = event.worker
        if event.state == WorkerState.ERROR and worker.group.startswith("replay"):
            err = worker.error
            self.failures.append(f"{worker.group}: " + "".join(traceback.format_exception(err)))
            self.notify(f"{type(err).__name__}: {err}", title=f"Replay: {worker.group} failed", severity="error", timeout=30)

    def action_plots(self) -> None:
        screen = self.replay_screen
        if self.mode == "replay" and screen is not None:
            screen.action_plots()
        else:
            super().action_plots()

    def action_mcp(self) -> None:
        screen = self.replay_screen
        if self.mode == "replay" and screen is not None:
            screen.action_mcp()
        else:
            super().action_mcp()

    def action_search(self) -> None:
        screen = self.replay_screen
        if self.mode == "replay" and screen is not None:
            screen.action_search()
        else:
            super().action_search()

    async def close_run(self) -> None:
        position, self.position = self.position, None
        if position is not None:
            await position.close()
