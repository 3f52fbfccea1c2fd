"""ControlRoom: the full-screen Textual app that embeds the engine and lets an operator steer it.

Two workers do the work:

* ``engine`` (exclusive async worker) runs ``Engine.run()`` in the app's event loop;
* ``pump`` drains the engine's event subscription a few times a second and
  applies each batch inside ``batch_update()``: token text is buffered per
  agent by the view and written once per pump, never per token.

Operator commands go through the engine's public command methods and take
effect at the next tick boundary; the panes show them when their events come
back. The TUI reads only the engine's public read API and its events. What the
two rooms share (pump, steering, help, palette, themes) is :class:`~lemming.tui.room.Room`'s.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Unpack

from textual import work
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from lemming.engine.engine import Engine

from lemming.tui.room import Room, RoomOptions

if TYPE_CHECKING:
    from lemming.engine.recorded_run import RecordedRun


class ControlRoom(Room):
    """The LeMMing control room on one live run (see the module docstring)."""

    def __init__(
        self, engine: Engine, *, record: Path | bool | None = None, watch: bool = False, **options: Unpack[RoomOptions]
    ) -> None:
        super().__init__(**options)
        self.engine: Engine = engine
        # Subscribed before the run starts, so the panes see RunStarted and everything after.
        self.connect(engine, control=engine, feed=engine.subscribe(tokens=True))
        #: Where to record the run (the run store's database), None for no recording; True for
        #: the organisation's default database (resolved when the run starts: finding it
        #: imports the run store, which the first frame does not need).
        self._record = record
        self.watch = watch
        self._watch_stop = asyncio.Event()

    def get_default_screen(self) -> Screen:
        return self.main_screen()

    def start(self) -> None:
        # The run, its recording and the file watcher start once the first frame is on screen:
        # importing the run store and watchfiles and opening the database took the event loop
        # for a fifth of a second before it could paint.
        self.call_after_refresh(self._start_run)

    def _start_run(self) -> None:
        if self._engine_worker is not None or self.stopping:
            return
        recording = self.record is not None and self.engine.recorder is None
        self.run_live(self.engine, prepare=self._record_run if recording else None)
        if self.watch:
            self.watch_definitions()
        # What start-up built lives as long as the app (see Room.hold_heap).
        self.hold_heap(1)

    @property
    def record(self) -> Path | None:
        """The run store's database this run is recorded in, None when not recorded."""
        if self._record is True:
            from lemming.engine.store import default_db_path

            self._record = default_db_path(self.engine.org.root)
        return self._record or None

    async def _record_run(self) -> RecordedRun | None:
        """Record the run in the run store; on any problem, say so and run unrecorded."""
        from lemming.engine.recorded_run import RecordedRun

        try:
            recorded = await RecordedRun.record(self.engine, self.record)
        except Exception as exc:
            self.notify(f"{exc}\nThe run goes on without being recorded.", title="Not recording", severity="warning", timeout=10)
            return None
        self.recording = str(recorded.db)
        return recorded

    # --- hot reload ----------------------------------------------------------------------

    @work(exclusive=True, group="watch", exit_on_error=False, name="watch")
    async def watch_definitions(self) -> None:
        """Hot reload: edited agent files are validated and applied at the next tick boundary."""
        from lemming.engine.watch import DefinitionWatcher

        self.watcher = DefinitionWatcher(self.engine, on_change=lambda _report: self._rejected_changed())
        task = asyncio.ensure_future(self.watcher.run(self._watch_stop))
        await self.watcher.ready.wait()
        self._rejected_changed()
        await task

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        super().on_worker_state_changed(event)
        worker = event.worker
        if worker.name == "watch" and event.state == WorkerState.ERROR:
            self.notify(f"{worker.error}\nEdits to agent files are not picked up any more.", title="Hot reload stopped", severity="warning", timeout=15)

    def stopping_run(self) -> None:
        self._watch_stop.set()

    def action_runs(self) -> None:
        """The recorded runs (`lemming replay RUN` opens one; the live run goes on here)."""
        from lemming.tui.screens.runs import RunsScreen

        if self.record is None:
            self.notify("This run is not recorded (--no-record): there is no run database to list.", severity="warning")
            return

        def chosen(run_id: str | None) -> None:
            if run_id and run_id != self.engine.run_id:
                self.notify(f"lemming replay {run_id} opens it; lemming watch follows a run as it is written.", title="Replay", timeout=8)

        self.push_screen(RunsScreen(self.record, current=self.engine.run_id), chosen)
