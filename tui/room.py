"""Room: what the control room (live) and the replay room share — the panes over one run.

A room shows one run at a time through the three objects of
:mod:`lemming.tui.run_source`: a RunSource the panes read, an optional
RunControl the operator's keys steer, and an optional EventFeed the pump drains
into the view. It owns the pump, the operator's steering actions, the help, the
palette, the themes, the notices and the failure handling; the rooms built on it
(ControlRoom, ReplayRoom) say only how a run is found, opened and recorded.
"""

from __future__ import annotations

import asyncio
import gc
import time
import traceback
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypedDict

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from lemming.engine import gcfreeze
from lemming.engine.events import TickCompleted

from lemming.tui.actions import LIVE, PICKER, REPLAY
from lemming.tui.commands import RoomCommands
from lemming.tui.model import Changes, RunView
from lemming.tui.run_source import EventFeed, RunControl, RunSource
from lemming.tui.screens.main import MainScreen
from lemming.tui.settings import UISettings, load_settings, save_settings
from lemming.themes import LAYOUT_TCSS, default_theme, themes

if TYPE_CHECKING:
    from lemming.engine.engine import Engine
    from lemming.engine.recorded_run import RecordedRun
    from lemming.tui.screens.inject import InjectRequest

# The dialogs and screens on top of the main one (inject, top-up, inspector, help, rejected
# files, runs) are imported when first opened: they are not needed for the first frame, and
# their widgets (Input, Select, TabbedContent...) cost a tenth of a second to import.

#: Seconds between two pumps of the engine's events into the panes. An event waits for the
#: next pump, so this is most of the lag an operator sees (p95 ≈ 0.95 × this): at 10 pumps a
#: second the token storm's lag p95 sat right at the 100 ms goal; 15 a second costs ~4 points more
#: CPU share under the storm (each pump repaints the stream pane) for a third less lag.
PUMP_INTERVAL = 1 / 15
#: Tick intervals that + and - step through (seconds).
INTERVAL_STEPS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class RoomOptions(TypedDict, total=False):
    """How a room looks and behaves, whatever run it shows (Room.__init__'s keywords)."""

    theme: str | None
    config_dir: Path | None
    wall_clock: bool
    pump_interval: float
    stream_mode: str | None
    quit_grace: float
    cursor_blink: bool
    animations: bool
    pump_observer: Callable[[Changes, list], None] | None


class Room(App[int]):
    """The panes over one run, steered when the run can be (see the module docstring).

    **The hook for other apps.** A room shows a run through ``source`` (what the panes
    read), ``control`` (what the keys steer; None for a read-only run) and ``feed``
    (the events the pump folds; None when nothing streams). ``connect(source,
    control=, feed=)`` points the room at a run (before its first screen: then
    ``get_default_screen`` returns ``self.main_screen()``); ``await show_run(source,
    control=, feed=)`` does so later and makes a new MainScreen over it the room's
    main screen. An app that follows a run served elsewhere (attach over a socket)
    subclasses Room, sets ``mode = "live"`` and, in :meth:`start`, calls ``show_run``
    with its remote proxies; the panes, keys, footer, help, palette and pump work
    unchanged. ``q`` stops a run the room controls (override ``action_quit`` to detach
    instead).

    Subclasses implement :meth:`start` (called once the first frame is on screen) and
    ``action_runs`` (the recorded runs), and may set ``read_only_note``.
    """

    TITLE = "LeMMing Control Room"
    CSS_PATH = str(LAYOUT_TCSS)
    COMMANDS = App.COMMANDS | {RoomCommands}
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True, id="app.quit_ctrl"),
    ]
    #: The main screen's class (its bindings: the footer's keys).
    MAIN_SCREEN: type[MainScreen] = MainScreen
    #: What a steering key says when the run shown cannot be steered.
    read_only_note = "This run is read-only."

    def __init__(
        self,
        *,
        theme: str | None = None,
        config_dir: Path | None = None,
        wall_clock: bool = True,
        pump_interval: float = PUMP_INTERVAL,
        stream_mode: str | None = None,
        quit_grace: float = 3.0,
        cursor_blink: bool = True,
        animations: bool = True,
        pump_observer: Callable[[Changes, list], None] | None = None,
    ) -> None:
        super().__init__()
        #: "live" (a run is steered), "replay" (a recorded run at a cursor) or "picker"
        #: (no run open yet): which keys, help and palette entries the action table gives.
        self.mode = LIVE
        self.source: RunSource | None = None
        self.control: RunControl | None = None
        self.feed: EventFeed | None = None
        self.view = RunView()
        #: The live engine this room runs (None when it shows a run it does not run).
        self.engine: Engine | None = None
        self.clock: Callable[[], float] | None = time.monotonic if wall_clock else None
        self.wall_clock = wall_clock
        self.pump_interval = pump_interval
        self.quit_grace = quit_grace
        self.cursor_blink = cursor_blink
        self.pump_observer = pump_observer
        self.config_dir = config_dir
        self.settings: UISettings = load_settings(config_dir)
        self.stream_mode = stream_mode or self.settings.stream_mode
        if self.settings.keymap:
            self.set_keymap(self.settings.keymap)
        #: The run database the run shown is being recorded in, once it is.
        self.recording: str | None = None
        self.stopping = False
        self.run_result: str | None = None
        self.failures: list[str] = []  # what went wrong inside the UI, with tracebacks
        self.notices: deque[tuple[str, str, str]] = deque(maxlen=50)  # (severity, title, text) shown
        self._engine_worker: Worker | None = None
        self._intent_paused: bool | None = None
        #: The watcher of the organisation's agent files (engine/watch.py), when this room
        #: has one: its `rejected` are the files that do not validate.
        self.watcher: Any = None
        #: (the run's interval when +/- was last pressed, the interval asked for): keys
        #: pressed before the run applies it (at the tick boundary) step on from what
        #: was asked, not from what still runs
        self._intent_interval: tuple[float, float] | None = None
        self._heap_holds = 0
        if not animations:
            self.animation_level = "none"
        for t in themes():
            self.register_theme(t)
        wanted = theme or self.settings.theme or default_theme()
        self._unknown_theme: str | None = None
        if wanted not in self.available_themes:
            self._unknown_theme = wanted
            wanted = default_theme()
        self.theme = wanted

    # --- the run shown -------------------------------------------------------------------

    def connect(
        self, source: RunSource, *, control: RunControl | None = None, feed: EventFeed | None = None, view: RunView | None = None
    ) -> None:
        """Point the room at a run (see the class docstring); the panes' view is `view`, or
        a fresh one that folds the feed's events."""
        self.source = source
        self.control = control
        self.feed = feed
        self.view = view if view is not None else RunView(sorted(source.org.agents))
        self._intent_paused = None
        self._intent_interval = None

    async def show_run(self, source: RunSource, *, control: RunControl | None = None, feed: EventFeed | None = None) -> MainScreen:
        """Show a run on a new main screen (the hook of the class docstring)."""
        self.connect(source, control=control, feed=feed)
        screen = self.main_screen()
        await self.show_main(screen)
        return screen

    @property
    def keys_mode(self) -> str:
        """The mode whose keys, help and palette entries the action table gives."""
        return self.mode

    def main_screen(self) -> MainScreen:
        """A main screen over the run the room is connected to."""
        assert self.source is not None, "connect() the room to a run first"
        return self.MAIN_SCREEN(
            self.source,
            self.view,
            clock=self.clock,
            stream_mode=self.stream_mode,
            on_pane_failed=self.pane_failed,
            on_ready=self._main_ready,
        )

    async def show_main(self, screen: Screen) -> None:
        """Make `screen` the room's main screen: dialogs and pickers above it close, the
        previous main screen goes; a screen beneath them all (an opening screen) stays."""
        while len(self.screen_stack) > 1 and not isinstance(self.screen, MainScreen):
            await self.pop_screen()
        if isinstance(self.screen, MainScreen):
            await self.switch_screen(screen)
        else:
            await self.push_screen(screen)

    @property
    def main(self) -> MainScreen:
        for screen in self.screen_stack:
            if isinstance(screen, MainScreen):
                return screen
        raise LookupError("the main screen is not mounted")

    @property
    def selected_agent(self) -> str | None:
        return self.main.selected_agent

    def on_mount(self) -> None:
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        if self._unknown_theme:
            ours = ", ".join(t.name for t in themes())
            self.notify(f"No theme called {self._unknown_theme!r}; using {self.theme}. Ours: {ours} (ctrl+p → Theme).", severity="warning")
        self.start()

    def start(self) -> None:
        """Called once the room is mounted: open or start the run (subclasses say how)."""

    def offers(self, action: str) -> bool:
        """Whether the palette offers `action` now (a room may turn some off)."""
        return True

    def _main_ready(self) -> None:
        # The panes exist: start draining (events queued meanwhile are kept by the feed).
        if self.feed is not None:
            self.pump()
        if self.wall_clock:
            # The tick rate decays while nothing happens; repaint the header now and then.
            self.set_interval(1.0, lambda: self.main.status.refresh())

    def hold_heap(self, generation: int = 2) -> None:
        """Keep what is alive now out of the cyclic collector's full passes.

        Start-up's modules and Textual's and pydantic's machinery (~80,000 objects that
        live as long as the app), a replayed run's message log (millions): each full pass
        walked them all, the longest stalls of the event loop. Frozen, they cost nothing;
        the younger generations are collected first so no garbage is kept. The holds are
        handed back when the app unmounts.
        """
        gc.collect(generation)
        gcfreeze.hold()
        self._heap_holds += 1

    def on_unmount(self) -> None:
        while self._heap_holds:
            gcfreeze.release()
            self._heap_holds -= 1

    # --- the workers ---------------------------------------------------------------------

    def run_live(
        self,
        engine: Engine,
        recorded: RecordedRun | None = None,
        *,
        prepare: Callable[[], Awaitable[RecordedRun | None]] | None = None,
    ) -> None:
        """Run `engine` in this room's event loop; its recording (`recorded`, or what
        `prepare` opens first) is closed when the run ends."""
        self.engine = engine
        self._engine_worker = self._run_engine(engine, recorded, prepare)

    @work(exclusive=True, group="engine", exit_on_error=False, name="engine")
    async def _run_engine(
        self, engine: Engine, recorded: RecordedRun | None, prepare: Callable[[], Awaitable[RecordedRun | None]] | None
    ) -> str:
        if prepare is not None:
            recorded = await prepare()
        try:
            return await engine.run()
        finally:
            if recorded is not None:
                await recorded.close()

    @work(exclusive=True, group="pump", exit_on_error=False, name="pump")
    async def pump(self) -> None:
        feed = self.feed
        assert feed is not None
        last = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await feed.wait(1.0)
            wait = last + self.pump_interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # let a batch gather: 1 / pump_interval pumps a second at most
            last = loop.time()
            events = feed.drain()
            if events:
                self.apply_events(list(events))
            if feed.closed and not len(feed):
                return

    def apply_events(self, events: list) -> Changes:
        """Fold one drained batch into the view and repaint what changed (one batch update)."""
        changes = self.view.apply(events)
        committed = any(type(e) is TickCompleted for e in events)
        if changes.header:
            self._settle_pause_intent()
        with self.batch_update():
            self.main.apply(changes, tick_committed=committed)
        for n in changes.notices:
            self.notify(n.text, title=n.title, severity=n.severity, timeout=8 if n.severity == "error" else 5)
        if self.pump_observer is not None:
            self.pump_observer(changes, events)
        return changes

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.name == "engine":
            if event.state == WorkerState.SUCCESS:
                self.run_result = worker.result
                self._refresh_after_engine()
                if self.stopping:
                    self._exit_with(1 if str(worker.result).startswith("error") else 0)
            elif event.state == WorkerState.ERROR:
                err = worker.error
                self.run_result = f"error: {type(err).__name__}: {err}"
                self.failures.append("".join(traceback.format_exception(err)) if err else self.run_result)
                self._refresh_after_engine()
                tick = self.source.tick if self.source is not None else 0
                self.notify(
                    f"{self.run_result}\nThe run stopped at tick {tick} (last committed). q quits.",
                    title="The engine stopped",
                    severity="error",
                    timeout=30,
                )
                if self.stopping:
                    self._exit_with(1)
            elif event.state == WorkerState.CANCELLED and self.stopping:
                self._exit_with(0)
        elif worker.name == "pump" and event.state == WorkerState.ERROR:
            self.pane_failed("pump", worker.error or RuntimeError("the event pump stopped"))

    def _refresh_after_engine(self) -> None:
        # Drain what the engine said last (RunStopped) so the header shows it.
        if self.feed is not None:
            events = self.feed.drain()
            if events:
                try:
                    self.apply_events(list(events))
                except Exception as exc:
                    self.pane_failed("pump", exc)
        try:
            self.main.refresh_status()
        except LookupError:
            pass

    def notify(self, message: str, *, title: str = "", severity: str = "information", timeout: float | None = None, markup: bool = False) -> None:  # type: ignore[override]
        """Show a toast (plain text: engine and model text is never read as markup), and keep it."""
        self.notices.append((severity, title, message))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)  # type: ignore[arg-type]

    def pane_failed(self, pane: str, exc: BaseException) -> None:
        """A pane (or the pump) failed: stop the run at the tick boundary and say so."""
        self.failures.append(f"{pane}: " + "".join(traceback.format_exception(exc)))
        control = self.control
        running = control is not None and control.running
        if running:
            control.stop()
        try:
            self.main.status.set(note=f"{pane} pane failed: {type(exc).__name__}")
        except Exception:
            pass
        tick = self.source.tick if self.source is not None else 0
        tail = f"The run stops at the end of tick {tick + 1}; nothing is lost." if running else "The run is not running."
        self.notify(
            f"{type(exc).__name__}: {exc}\n{tail} q quits.",
            title=f"The {pane} pane failed",
            severity="error",
            timeout=60,
        )

    def _handle_exception(self, error: Exception) -> None:
        # Something inside Textual itself raised (it will end the app): stop the run at the
        # tick boundary first so it is left consistent (the tick in flight is not committed).
        try:
            if self.control is not None:
                self.control.stop()
        except Exception:
            pass
        self.failures.append("".join(traceback.format_exception(error)))
        super()._handle_exception(error)

    # --- steering the run ----------------------------------------------------------------

    def _settle_pause_intent(self) -> None:
        if self._intent_paused is not None and self.control is not None and self._intent_paused == self.control.paused:
            self._intent_paused = None

    def _steerable(self) -> RunControl | None:
        """The run's control, if the run shown can be steered now (else say why)."""
        control = self.control
        if control is None:
            self.notify(self.read_only_note, severity="warning", timeout=4)
            return None
        if not control.running and self.run_result is not None:
            self.notify("The run has stopped; nothing to steer. q quits.", severity="warning")
            return None
        return control

    def _effective_paused(self, control: RunControl) -> bool:
        return self._intent_paused if self._intent_paused is not None else control.paused

    # --- the agent files: those that do not validate, and the editor ------------------------

    def _rejected_changed(self) -> None:
        """The watcher's list of rejected files changed: show the count until they are fixed."""
        from lemming.tui.screens.definitions import DefinitionsScreen

        count = len(self.watcher.rejected) if self.watcher is not None else 0
        try:
            self.main.status.set(rejected=count)
        except LookupError:
            pass
        for screen in self.screen_stack:
            if isinstance(screen, DefinitionsScreen) and self.watcher is not None:
                screen.show(self.watcher.rejected)

    def action_show_rejected(self) -> None:
        from lemming.tui.screens.definitions import DefinitionsScreen

        self.push_screen(DefinitionsScreen(self.watcher.rejected if self.watcher is not None else {}))

    async def action_edit_agent(self) -> None:
        """Open the selected agent's resume.json in $VISUAL / $EDITOR, then come back. The
        run goes on meanwhile (nothing is drawn while the editor has the terminal), and
        what was saved hot-reloads at the next tick boundary."""
        import os
        import shlex
        import shutil

        from textual.app import SuspendNotSupported

        agent = self._agent_selected()
        if agent is None:
            return
        org = self.source.org  # (_agent_selected: a run is shown)
        path = Path(org.root) / org.agents[agent].path
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        try:
            argv = [*shlex.split(editor), str(path)]
        except ValueError as exc:
            argv, problem = [], f"$VISUAL/$EDITOR {editor!r} does not parse: {exc}"
        else:
            problem = "" if shutil.which(argv[0]) else f"{argv[0]!r} ($VISUAL/$EDITOR) is not a program on PATH"
        if problem:
            self.notify(f"Cannot open an editor: {problem}. Set $EDITOR, or edit {path} elsewhere: it reloads at the next tick.",
                        title="Edit", severity="warning", timeout=10)
            return
        try:
            with self.batch_update(), self.suspend():
                try:
                    proc = await asyncio.create_subprocess_exec(*argv)
                    await proc.wait()
                except OSError as exc:  # (inside: the terminal must come back whatever happens)
                    problem = f"{argv[0]} did not start: {exc}"
        except SuspendNotSupported:  # no terminal to give away (in a browser)
            problem = "this control room has no terminal to lend it (served to a browser)"
        if problem:
            self.notify(f"Cannot open an editor: {problem}. The file is {path}", title="Edit", severity="warning", timeout=10)
            return
        if self.watcher is not None:
            await self.watcher.rescan([str(path)])

    def _agent_selected(self) -> str | None:
        name = self.selected_agent
        if name is None or self.source is None or name not in self.source.org.agents:
            self.notify("Select an agent first.", severity="warning")
            return None
        return name

    def action_toggle_pause(self) -> None:
        control = self._steerable()
        if control is None:
            return
        if self._effective_paused(control):
            control.resume()
            self._intent_paused = False
        else:
            control.pause()
            self._intent_paused = True
            if self.view.running_tick is not None:
                self.notify(f"Pausing when tick {self.view.running_tick} ends.", timeout=3)

    def action_step(self) -> None:
        control = self._steerable()
        if control is None:
            return
        if not self._effective_paused(control):
            self.notify("Step works while paused: space pauses first.", severity="warning", timeout=4)
            return
        control.step()

    def action_inject(self) -> None:
        control = self._steerable()
        if control is None or self.source is None:
            return
        from lemming.tui.screens.inject import InjectDialog

        source = self.source

        def done(req: InjectRequest | None) -> None:
            if req is None:
                return
            control.inject(req.text, list(req.recipients) if req.recipients else None, kind=req.kind)
            to = ", ".join(req.recipients) if req.recipients else "all agents"
            self.notify(f"Queued for {to}; agents read it at tick {source.tick + 1 if control.paused else 'next'}.", timeout=4)

        self.push_screen(InjectDialog(sorted(source.org.agents), self.selected_agent, cursor_blink=self.cursor_blink), done)

    def _steer_agent(self) -> tuple[RunControl, RunSource, str] | None:
        """The run's control, its source and the selected agent, if both can be had (else say why)."""
        control = self._steerable()
        if control is None or self.source is None:
            return None
        name = self._agent_selected()
        return None if name is None else (control, self.source, name)

    def action_top_up(self) -> None:
        steer = self._steer_agent()
        if steer is None:
            return
        control, source, name = steer
        agent = source.org.agents[name]
        if not agent.resume.calls_model:
            self.notify(f"{name} has model \"none\": it never calls a model, so it never spends credits.", severity="warning", timeout=4)
            return
        balance = source.state.credits.get(name, 0.0)

        from lemming.tui.screens.top_up import TopUpDialog

        def done(amount: float | None) -> None:
            if amount is None:
                return
            control.top_up(name, amount)
            after = balance + amount
            cap = agent.budget.max_credits
            above = f", above its max_credits of {cap:g}" if after > cap else ""
            self.notify(f"Topping up {name} by {amount:g} credits: about {after:.4g}{above}.", timeout=4)

        self.push_screen(TopUpDialog(name, balance, agent.budget.max_credits, cursor_blink=self.cursor_blink), done)

    def action_toggle_enabled(self) -> None:
        steer = self._steer_agent()
        if steer is None:
            return
        control, source, name = steer
        enabled = source.state.enabled.get(name, True)
        control.set_enabled(name, not enabled)
        self.notify(f"{name} will be {'disabled' if enabled else 'enabled'} at the next tick boundary.", timeout=3)

    def _step_interval(self, direction: int) -> None:
        control = self._steerable()
        if control is None or self.source is None:
            return
        running = self.source.state.interval
        asked = self._intent_interval
        now = asked[1] if asked is not None and asked[0] == running else running
        if direction > 0:
            nxt = next((s for s in INTERVAL_STEPS if s > now + 1e-9), INTERVAL_STEPS[-1])
        else:
            nxt = next((s for s in reversed(INTERVAL_STEPS) if s < now - 1e-9), INTERVAL_STEPS[0])
        if nxt != now:
            control.set_interval(nxt)
            self._intent_interval = (running, nxt)
        pace = "no pause between ticks" if nxt == 0 else f"{nxt:g}s between ticks"
        limit = " (the limit)" if nxt == now else ""
        self.notify(f"Speed: {pace}{limit}.", timeout=2)

    def action_slower(self) -> None:
        self._step_interval(1)

    def action_faster(self) -> None:
        self._step_interval(-1)

    def action_abort_tick(self) -> None:
        control = self._steerable()
        if control is not None:
            control.abort_tick()

    def action_inspect(self) -> None:
        """The inspector on the selected agent's turns (the timeline row's, if it has focus)."""
        main = self.main
        agent = self.selected_agent
        tick: int | None = None
        if main.focused is main.timeline and main.timeline.selected_tick is not None:
            tick = main.timeline.selected_tick
            row = self.view.row(tick)
            if row is not None and agent not in (row.fired or row.firing):
                candidates = list(row.failed) or list(row.fired) or list(row.firing)
                if candidates:
                    agent = candidates[0]
        if agent is None:
            self.notify("Select an agent first.", severity="warning")
            return
        turns = list(self.view.agents[agent].history) if agent in self.view.agents else []
        last = self.source.state.last_turn.get(agent) if self.source is not None else None
        if last is not None and not any(t is last or (t.tick == last.tick) for t in turns):
            turns.append(last)
        if not turns:
            a = self.source.org.agents.get(agent) if self.source is not None else None
            if a is not None and not a.resume.calls_model:
                self.notify(f"{agent} has model \"none\": a seat that never takes a turn (messages to it are in pane 5).",
                            severity="warning", timeout=4)
            else:
                self.notify(f"{agent} has not taken a turn yet.", severity="warning", timeout=3)
            return
        index = len(turns) - 1
        if tick is not None:
            index = next((i for i, t in enumerate(turns) if t.tick == tick), index)
        from lemming.tui.screens.inspector import InspectorScreen

        self.push_screen(InspectorScreen(turns, index, wall_clock=self.wall_clock))

    # --- panes, help, themes -------------------------------------------------------------

    def action_help(self) -> None:
        from lemming.tui.screens.help import HelpScreen

        mode = self.keys_mode
        self.push_screen(HelpScreen(REPLAY if mode in (REPLAY, PICKER) else mode))

    def action_show_pane(self, pane: str) -> None:
        self.main.action_show_pane(pane)

    def action_toggle_stream_mode(self) -> None:
        self.main.stream.action_toggle_mode()

    def action_toggle_stream_raw(self) -> None:
        self.main.stream.action_toggle_raw()

    def _run_store(self) -> Any:
        """The run store the live run shown is recorded in (None when it is not)."""
        return getattr(getattr(self.engine, "recorder", None), "store", None)

    def action_search(self) -> None:
        """Find in the run (`/`): the hit's turn opens in the inspector."""
        store = self._run_store()
        if store is None or self.source is None:
            self.notify("This run is not recorded here: there is nothing to search (lemming search reads a recorded run).", severity="warning")
            return
        from lemming.tui.screens.search import inspect_hit, open_search

        run_id = self.source.run_id
        open_search(self, store, run_id, lambda hit: inspect_hit(self, store, run_id, hit))

    def action_plots(self) -> None:
        """The run's figures per tick (`s`), read from the run store."""
        store = self._run_store()
        source = self.source
        if store is None or source is None:
            self.notify("This run is not recorded here: the plots read the run store.", severity="warning")
            return
        from lemming.tui.screens.plots import PlotsScreen
        from lemming.tui.series import load_series

        run_id, agent = source.run_id, self.selected_agent
        self.push_screen(PlotsScreen(lambda: load_series(store, run_id, source.tick, agent), where=f"run {run_id} · live"))

    def action_mcp(self) -> None:
        """The MCP servers (`M`): live, the run's hub; attached, the served run's (asked over
        its socket), else the calls of the turns this window holds."""
        from lemming.tui.screens.mcp import McpScreen, live_picture, recorded_picture

        source, engine, view = self.source, self.engine, self.view
        if source is None:
            self.notify("No run is open.", severity="warning")
            return
        hub_missing = object()
        if engine is not None and getattr(engine, "mcp", hub_missing) is not hub_missing:  # the run is in this process
            self.push_screen(McpScreen(
                lambda: live_picture(engine.org, engine.mcp.status() if engine.mcp is not None else None,
                                     running=engine.running, stopped=bool(engine.state.stopped)),
                live=True, wall_clock=self.wall_clock))
            return
        ask = getattr(engine, "mcp_status", None)
        where = f"run {source.run_id}, attached"

        async def load() -> Any:
            if ask is not None:
                try:
                    running, statuses = await ask()
                except Exception as e:  # an older run's server, a lost connection: what this window saw
                    note = f"the run did not say ({e}); the calls of the turns this window holds"
                else:
                    picture = live_picture(source.org, statuses, running=running, stopped=bool(source.state.stopped))
                    return type(picture)(picture.rows, where)
            else:
                note = "the calls of the turns this window holds"
            return recorded_picture(source.org, [t for a in view.agents.values() for t in a.history], where=where, note=note)

        self.push_screen(McpScreen(load, live=True, wall_clock=self.wall_clock))

    def action_toggle_graph_mode(self) -> None:
        self.main.graph.action_toggle_matrix()

    def remember_stream_mode(self, mode: str) -> None:
        self.stream_mode = mode
        self.settings.stream_mode = mode
        save_settings(self.settings, self.config_dir)

    def action_set_theme(self, name: str) -> None:
        self.theme = name

    def _theme_changed(self, theme) -> None:  # noqa: ANN001
        if self.settings.theme != theme.name:
            self.settings.theme = theme.name
            problem = save_settings(self.settings, self.config_dir)
            if problem:
                self.notify(problem, severity="warning")

    # --- quitting ------------------------------------------------------------------------

    async def action_quit(self) -> None:
        """Stop a run the room steers at the tick boundary, then exit; abort the tick after
        `quit_grace` s. A second q while stopping aborts the tick in flight at once."""
        control = self.control
        worker = self._engine_worker
        if control is None or ((worker is None or worker.is_finished) and not control.running):
            await self.close_run()
            self._exit_with(1 if str(self.run_result or "").startswith("error") else 0)
            return
        if self.stopping:
            control.stop(abort=True)
            return
        self.stopping = True
        self.stopping_run()
        control.stop()
        try:
            self.main.refresh_status()
        except LookupError:
            pass
        self.set_timer(self.quit_grace, self._abort_if_still_running)

    async def close_run(self) -> None:
        """Let go of the run shown when the room quits (a replay closes its store)."""

    def stopping_run(self) -> None:
        """The operator quits while the run goes on: stop what runs beside it."""

    def _exit_with(self, code: int) -> None:
        """Leave the app; the exit code is 1 when the run ended in an error."""
        if self.failures and code == 0:
            code = 1
        self.exit(code, return_code=code)

    def _abort_if_still_running(self) -> None:
        if self.control is not None and self.control.running:
            self.notify("The tick in flight is taking too long: aborting it (nothing of it is committed).", timeout=3)
            self.control.stop(abort=True)
            self.set_timer(5.0, self._force_exit)

    def _force_exit(self) -> None:
        if self.is_running:
            self._exit_with(1)
