"""ControlRoom: the full-screen Textual app that embeds the engine and lets an operator steer it.

Two workers do the work:

* ``engine`` (exclusive async worker) runs ``Engine.run()`` in the app's event loop;
* ``pump`` drains the engine's event subscription a few times a second and
  applies each batch inside ``batch_update()``: token text is buffered per
  agent by the view and written once per pump, never per token.

Operator commands go through the engine's public command methods and take
effect at the next tick boundary; the panes show them when their events come
back. The TUI reads only the engine's public read API and its events.
"""

from __future__ import annotations

import asyncio
import gc
import time
import traceback
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from lemming.engine import gcfreeze
from lemming.engine.engine import Engine, Recorder, Subscription
from lemming.engine.events import TickCompleted
from lemming.engine.org import load_org
from lemming.engine.providers.registry import ProviderRegistry

from lemming.tui.commands import ControlRoomCommands
from lemming.tui.model import Changes, RunView
from lemming.tui.screens.main import MainScreen
from lemming.tui.settings import UISettings, load_settings, save_settings
from lemming.themes import LAYOUT_TCSS, default_theme, themes

if TYPE_CHECKING:
    from lemming.tui.screens.inject import InjectRequest

# The dialogs and screens on top of the main one (inject, top-up, inspector, help, rejected
# files, runs) are imported when first opened: they are not needed for the first frame, and
# their widgets (Input, Select, TabbedContent...) cost a tenth of a second to import.

#: Lively defaults for the sim so a newcomer sees replies stream.
DEFAULT_INTERVAL = 1.0
DEFAULT_SIM_TOKENS_PER_S = 40.0
#: Seconds between two pumps of the engine's events into the panes. An event waits for the
#: next pump, so this is most of the lag an operator sees (p95 ≈ 0.95 × this): at 10 pumps a
#: second the token storm's lag p95 sat right at the 100 ms goal; 15 a second costs ~4 points more
#: CPU share under the storm (each pump repaints the stream pane) for a third less lag.
PUMP_INTERVAL = 1 / 15
#: Tick intervals that + and - step through (seconds).
INTERVAL_STEPS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


def build_engine(
    org: str | Path,
    *,
    seed: int = 0,
    paused: bool = False,
    interval: float | None = None,
    sim_tokens_per_s: float | None = None,
    sim_overrides: dict[str, Any] | None = None,
    recorder: Recorder | None = None,
    run_id: str | None = None,
) -> Engine:
    """An engine on the organisation at `org` (raises OrgInvalid with every problem)."""
    loaded = load_org(org)
    sim = dict((sim_overrides or {}).get("sim", {}))
    sim.setdefault("tokens_per_s", DEFAULT_SIM_TOKENS_PER_S if sim_tokens_per_s is None else sim_tokens_per_s)
    if sim_tokens_per_s is not None:
        sim["tokens_per_s"] = sim_tokens_per_s
    registry = ProviderRegistry(loaded.models, overrides={"sim": sim})
    return Engine(
        loaded,
        seed=seed,
        interval=DEFAULT_INTERVAL if interval is None else interval,
        paused=paused,
        registry=registry,
        recorder=recorder,
        run_id=run_id,
    )


class ControlRoom(App[int]):
    """The LeMMing control room (see the module docstring)."""

    TITLE = "LeMMing Control Room"
    CSS_PATH = str(LAYOUT_TCSS)
    COMMANDS = App.COMMANDS | {ControlRoomCommands}
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True, id="app.quit_ctrl"),
    ]

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        org: str | Path | None = None,
        seed: int = 0,
        paused: bool = False,
        interval: float | None = None,
        sim_tokens_per_s: float | None = None,
        recorder: Recorder | None = None,
        run_id: str | None = None,
        theme: str | None = None,
        config_dir: Path | None = None,
        wall_clock: bool = True,
        pump_interval: float = PUMP_INTERVAL,
        stream_mode: str | None = None,
        quit_grace: float = 3.0,
        cursor_blink: bool = True,
        animations: bool = True,
        pump_observer: Callable[[Changes, list], None] | None = None,
        record: Path | bool | None = None,
        watch: bool = False,
    ) -> None:
        super().__init__()
        if engine is None:
            engine = build_engine(
                org if org is not None else Path("."),
                seed=seed,
                paused=paused,
                interval=interval,
                sim_tokens_per_s=sim_tokens_per_s,
                recorder=recorder,
                run_id=run_id,
            )
        self.engine = engine
        self.view = RunView(sorted(engine.org.agents))
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
        # Subscribed before the run starts, so the panes see RunStarted and everything after.
        self.subscription: Subscription | None = engine.subscribe(tokens=True)
        #: Where to record the run (the run store's database), None for no recording; True for
        #: the organisation's default database (resolved when the run starts: finding it
        #: imports the run store, which the first frame does not need).
        self._record = record
        self.recording: str | None = None
        self.watch = watch
        self._watch_stop = asyncio.Event()
        self.watcher: Any = None  # engine.watch.DefinitionWatcher once hot reload runs
        self.stopping = False
        self.run_result: str | None = None
        self.failures: list[str] = []  # what went wrong inside the UI, with tracebacks
        self.notices: deque[tuple[str, str, str]] = deque(maxlen=50)  # (severity, title, text) shown
        self._engine_worker: Worker | None = None
        self._intent_paused: bool | None = None
        self._heap_frozen = False
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

    # --- screens -------------------------------------------------------------------------

    def get_default_screen(self) -> Screen:
        return MainScreen(
            self.engine,
            self.view,
            clock=self.clock,
            stream_mode=self.stream_mode,
            on_pane_failed=self.pane_failed,
            on_ready=self._main_ready,
        )

    @property
    def main(self) -> MainScreen:
        for screen in self.screen_stack:
            if isinstance(screen, MainScreen):
                return screen
        raise LookupError("the main screen is not mounted")

    def on_mount(self) -> None:
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        if self._unknown_theme:
            ours = ", ".join(t.name for t in themes())
            self.notify(f"No theme called {self._unknown_theme!r}; using {self.theme}. Ours: {ours} (ctrl+p → Theme).", severity="warning")
        # The run, its recording and the file watcher start once the first frame is on screen:
        # importing the run store and watchfiles and opening the database took the event loop
        # for a fifth of a second before it could paint.
        self.call_after_refresh(self._start_run)

    def _start_run(self) -> None:
        if self._engine_worker is not None or self.stopping:
            return
        self._engine_worker = self.run_engine()
        if self.watch:
            self.watch_definitions()
        self._freeze_startup_heap()

    @property
    def record(self) -> Path | None:
        """The run store's database this run is recorded in, None when not recorded."""
        if self._record is True:
            try:
                from lemming.engine.store import default_db_path
            except ImportError:  # the store is optional for the control room
                self._record = None
            else:
                self._record = default_db_path(self.engine.org.root)
        return self._record or None

    def _freeze_startup_heap(self) -> None:
        """Keep what start-up built out of the cyclic collector's full passes.

        Modules, Textual's and pydantic's machinery, the organisation: ~80,000 objects that
        live as long as the app. Each full pass of the collector walked them all (60-75 ms
        at 200x60 under the token storm, every 1.5 s: the longest stalls of the event loop,
        and the tail of the lag). Frozen, they cost nothing; the young generations are
        collected first so no garbage is kept. on_unmount hands them back.
        """
        if not self._heap_frozen:
            gc.collect(1)
            gcfreeze.hold()
            self._heap_frozen = True

    def on_unmount(self) -> None:
        if self._heap_frozen:
            gcfreeze.release()
            self._heap_frozen = False

    def _main_ready(self) -> None:
        # The panes exist: start draining (events queued meanwhile are kept by the subscription).
        self.pump()
        if self.wall_clock:
            # The tick rate decays while nothing happens; repaint the header now and then.
            self.set_interval(1.0, lambda: self.main.status.refresh())

    # --- the workers ---------------------------------------------------------------------

    @work(exclusive=True, group="engine", exit_on_error=False, name="engine")
    async def run_engine(self) -> str:
        store = await self._open_store() if self.record is not None and self.engine.recorder is None else None
        try:
            return await self.engine.run()
        finally:
            if store is not None:
                await store.close()

    async def _open_store(self):  # noqa: ANN202
        """Record the run in the run store; on any problem, say so and run unrecorded."""
        try:
            from lemming.engine.store import RunStore
        except ImportError:  # the store is optional for the control room
            return None
        store = None
        try:
            store = await RunStore.open(self.record)
            await store.create_run(
                run_id=self.engine.run_id,
                org_root=self.engine.org.root,
                seed=self.engine.seed,
                definitions_hash=self.engine.org.definitions_hash(),
                target_ticks=None,
            )
            self.engine.recorder = store.recorder(self.engine.run_id, state=self.engine.state)
        except Exception as exc:
            if store is not None:
                try:
                    await store.close()
                except Exception:
                    pass
            self.notify(f"{exc}\nThe run goes on without being recorded.", title="Not recording", severity="warning", timeout=10)
            return None
        self.recording = str(self.record)
        return store

    @work(exclusive=True, group="watch", exit_on_error=False, name="watch")
    async def watch_definitions(self) -> None:
        """Hot reload: edited agent files are validated and applied at the next tick boundary."""
        from lemming.engine.watch import DefinitionWatcher

        self.watcher = DefinitionWatcher(self.engine, on_change=lambda _report: self._rejected_changed())
        task = asyncio.ensure_future(self.watcher.run(self._watch_stop))
        await self.watcher.ready.wait()
        self._rejected_changed()
        await task

    def _rejected_changed(self) -> None:
        """The watcher's list of rejected files changed: show the count until they are fixed."""
        from lemming.tui.screens.definitions import DefinitionsScreen, rejected_text

        count = len(self.watcher.rejected) if self.watcher is not None else 0
        try:
            self.main.status.set(rejected=count)
        except LookupError:
            pass
        for screen in self.screen_stack:
            if isinstance(screen, DefinitionsScreen) and self.watcher is not None:
                screen.query_one("#definitions-text").update(rejected_text(self.watcher.rejected))  # type: ignore[attr-defined]

    def action_show_rejected(self) -> None:
        from lemming.tui.screens.definitions import DefinitionsScreen

        self.push_screen(DefinitionsScreen(self.watcher.rejected if self.watcher is not None else {}))

    async def action_edit_agent(self) -> None:
        """Open the selected agent's resume.json in $VISUAL / $EDITOR, then come back."""
        import os
        import shlex
        import subprocess

        agent = self.selected_agent
        if agent is None or agent not in self.engine.org.agents:
            self.notify("Select an agent first.", severity="warning")
            return
        path = Path(self.engine.org.root) / self.engine.org.agents[agent].path
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        try:
            with self.suspend():
                subprocess.run([*shlex.split(editor), str(path)], check=False)
        except Exception as exc:  # no terminal to give away (e.g. in a browser), or no such editor
            self.notify(f"Cannot open an editor here ({exc}). The file is {path}", title="Edit", severity="warning", timeout=10)
            return
        if self.watcher is not None:
            await self.watcher.rescan([str(path)])

    @work(exclusive=True, group="pump", exit_on_error=False, name="pump")
    async def pump(self) -> None:
        sub = self.subscription
        assert sub is not None
        last = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await sub.wait(1.0)
            wait = last + self.pump_interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # let a batch gather: 1 / pump_interval pumps a second at most
            last = loop.time()
            events = sub.drain()
            if events:
                self.apply_events(events)
            if sub.closed and not len(sub):
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
            self.notify(n.text, title=n.title, severity=n.severity, timeout=8 if n.severity == "error" else 5)  # type: ignore[arg-type]
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
                self.notify(
                    f"{self.run_result}\nThe run stopped at tick {self.engine.tick} (last committed). q quits.",
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
        elif worker.name == "watch" and event.state == WorkerState.ERROR:
            self.notify(f"{worker.error}\nEdits to agent files are not picked up any more.", title="Hot reload stopped", severity="warning", timeout=15)

    def _refresh_after_engine(self) -> None:
        # Drain what the engine said last (RunStopped) so the header shows it.
        if self.subscription is not None:
            events = self.subscription.drain()
            if events:
                try:
                    self.apply_events(events)
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
        running = self.engine.running
        if running:
            self.engine.stop()
        try:
            self.main.status.set(note=f"{pane} pane failed: {type(exc).__name__}")
        except Exception:
            pass
        tail = (
            f"The run stops at the end of tick {self.engine.tick + 1 if self.engine.running else self.engine.tick}; nothing is lost."
            if running
            else "The run is not running."
        )
        self.notify(
            f"{type(exc).__name__}: {exc}\n{tail} q quits.",
            title=f"The {pane} pane failed",
            severity="error",
            timeout=60,
        )

    def _handle_exception(self, error: Exception) -> None:
        # Something inside Textual itself raised (it will end the app): stop the engine at the
        # tick boundary first so the run is left consistent (the tick in flight is not committed).
        try:
            self.engine.stop()
        except Exception:
            pass
        self.failures.append("".join(traceback.format_exception(error)))
        super()._handle_exception(error)

    # --- operator actions ----------------------------------------------------------------

    @property
    def selected_agent(self) -> str | None:
        return self.main.selected_agent

    def _settle_pause_intent(self) -> None:
        if self._intent_paused is not None and self._intent_paused == self.engine.paused:
            self._intent_paused = None

    def _effective_paused(self) -> bool:
        return self._intent_paused if self._intent_paused is not None else self.engine.paused

    def _engine_alive(self) -> bool:
        if not self.engine.running and self.run_result is not None:
            self.notify("The run has stopped; nothing to steer. q quits.", severity="warning")
            return False
        return True

    def action_toggle_pause(self) -> None:
        if not self._engine_alive():
            return
        if self._effective_paused():
            self.engine.resume()
            self._intent_paused = False
        else:
            self.engine.pause()
            self._intent_paused = True
            if self.view.running_tick is not None:
                self.notify(f"Pausing when tick {self.view.running_tick} ends.", timeout=3)

    def action_step(self) -> None:
        if not self._engine_alive():
            return
        if not self._effective_paused():
            self.notify("Step works while paused: space pauses first.", severity="warning", timeout=4)
            return
        self.engine.step()

    def action_inject(self) -> None:
        if not self._engine_alive():
            return
        from lemming.tui.screens.inject import InjectDialog

        agents = list(self.engine.org.agents)

        def done(req: InjectRequest | None) -> None:
            if req is None:
                return
            self.engine.inject(req.text, list(req.recipients) if req.recipients else None, kind=req.kind)
            to = ", ".join(req.recipients) if req.recipients else "all agents"
            self.notify(f"Queued for {to}; agents read it at tick {self.engine.tick + 1 if self.engine.paused else 'next'}.", timeout=4)

        self.push_screen(InjectDialog(sorted(agents), self.selected_agent, cursor_blink=self.cursor_blink), done)

    def action_top_up(self) -> None:
        if not self._engine_alive():
            return
        name = self.selected_agent
        agent = self.engine.org.agents.get(name or "")
        if name is None or agent is None:
            self.notify("Select an agent first.", severity="warning")
            return
        balance = self.engine.state.credits.get(name, 0.0)

        from lemming.tui.screens.top_up import TopUpDialog

        def done(amount: float | None) -> None:
            if amount is not None:
                self.engine.top_up(name, amount)

        self.push_screen(TopUpDialog(name, balance, agent.budget.max_credits, cursor_blink=self.cursor_blink), done)

    def action_toggle_enabled(self) -> None:
        if not self._engine_alive():
            return
        name = self.selected_agent
        if name is None or name not in self.engine.org.agents:
            self.notify("Select an agent first.", severity="warning")
            return
        enabled = self.engine.state.enabled.get(name, True)
        self.engine.set_enabled(name, not enabled)
        self.notify(f"{name} will be {'disabled' if enabled else 'enabled'} at the next tick boundary.", timeout=3)

    def _step_interval(self, direction: int) -> None:
        if not self._engine_alive():
            return
        now = self.engine.state.interval
        if direction > 0:
            nxt = next((s for s in INTERVAL_STEPS if s > now + 1e-9), INTERVAL_STEPS[-1])
        else:
            nxt = next((s for s in reversed(INTERVAL_STEPS) if s < now - 1e-9), INTERVAL_STEPS[0])
        if nxt != now:
            self.engine.set_interval(nxt)

    def action_slower(self) -> None:
        self._step_interval(1)

    def action_faster(self) -> None:
        self._step_interval(-1)

    def action_abort_tick(self) -> None:
        if not self._engine_alive():
            return
        self.engine.abort_tick()

    def action_inspect(self) -> None:
        main = self.main
        focused = main.focused
        agent = self.selected_agent
        tick: int | None = None
        if focused is main.timeline and main.timeline.selected_tick is not None:
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
        last = self.engine.state.last_turn.get(agent)
        if last is not None and not any(t is last or (t.tick == last.tick) for t in turns):
            turns.append(last)
        if not turns:
            self.notify(f"{agent} has not taken a turn yet.", severity="warning", timeout=3)
            return
        index = len(turns) - 1
        if tick is not None:
            index = next((i for i, t in enumerate(turns) if t.tick == tick), index)
        from lemming.tui.screens.inspector import InspectorScreen

        self.push_screen(InspectorScreen(turns, index, wall_clock=self.wall_clock))

    def action_help(self) -> None:
        from lemming.tui.screens.help import HelpScreen

        self.push_screen(HelpScreen())

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

    def action_show_pane(self, pane: str) -> None:
        self.main.action_show_pane(pane)

    def action_toggle_stream_mode(self) -> None:
        self.main.stream.action_toggle_mode()

    def action_toggle_stream_raw(self) -> None:
        self.main.stream.action_toggle_raw()

    def action_search(self) -> None:
        """Find in the run (`/`): the hit's turn opens in the inspector."""
        store = getattr(self.engine.recorder, "store", None)
        if store is None:
            self.notify("This run is not recorded (--no-record): there is nothing to search.", severity="warning")
            return
        from lemming.tui.screens.search import open_search

        open_search(self, store, self.engine.run_id, self._search_hit)

    def action_plots(self) -> None:
        """The run's figures per tick (`s`), read from the run store."""
        store = getattr(self.engine.recorder, "store", None)
        if store is None:
            self.notify("This run is not recorded (--no-record): the plots read the run store.", severity="warning")
            return
        from lemming.tui.screens.plots import PlotsScreen
        from lemming.tui.series import load_series

        run_id, agent = self.engine.run_id, self.selected_agent
        self.push_screen(PlotsScreen(lambda: load_series(store, run_id, self.engine.tick, agent),
                                     where=f"run {run_id} · live"))

    def _search_hit(self, hit) -> None:  # noqa: ANN001
        from lemming.tui.screens.search import inspect_hit

        inspect_hit(self, getattr(self.engine.recorder, "store", None), self.engine.run_id, hit)

    def action_toggle_graph_mode(self) -> None:
        self.main.graph.action_toggle_matrix()

    def remember_stream_mode(self, mode: str) -> None:
        self.stream_mode = mode
        self.settings.stream_mode = mode
        save_settings(self.settings, self.config_dir)

    # --- themes --------------------------------------------------------------------------

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
        """Stop the run at the tick boundary, then exit; abort the tick after `quit_grace` s.

        A second q while stopping aborts the tick in flight at once.
        """
        worker = self._engine_worker
        engine_done = worker is None or worker.is_finished
        if engine_done and not self.engine.running:
            self._exit_with(1 if str(self.run_result or "").startswith("error") else 0)
            return
        if self.stopping:
            self.engine.stop(abort=True)
            return
        self.stopping = True
        self._watch_stop.set()
        self.engine.stop()
        try:
            self.main.refresh_status()
        except LookupError:
            pass
        self.set_timer(self.quit_grace, self._abort_if_still_running)

    def _exit_with(self, code: int) -> None:
        """Leave the app; the exit code is 1 when the run ended in an error."""
        if self.failures and code == 0:
            code = 1
        self.exit(code, return_code=code)

    def _abort_if_still_running(self) -> None:
        if self.engine.running:
            self.notify("The tick in flight is taking too long: aborting it (nothing of it is committed).", timeout=3)
            self.engine.stop(abort=True)
            self.set_timer(5.0, self._force_exit)

    def _force_exit(self) -> None:
        if self.is_running:
            self._exit_with(1)
