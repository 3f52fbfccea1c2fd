"""ReplayRoom: the control room opened on recorded runs (`lemming replay`, `watch`, `serve`).

It is the ControlRoom with another start: instead of an engine it opens a run
from the store, read-only, in replay mode (ReplayScreen: the same panes, the
timeline as a cursor). From there the operator may

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

import gc
import traceback
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

from textual import events, work
from textual.app import App, ComposeResult
from textual.screen import Screen
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from lemming.engine import gcfreeze
from lemming.engine.engine import Engine
from lemming.engine.org import OrgInvalid
from lemming.engine.providers.registry import ProviderRegistry
from lemming.engine.replay import fork_state
from lemming.engine.store import RunStore, StoreError

from lemming.tui.app import DEFAULT_INTERVAL, DEFAULT_SIM_TOKENS_PER_S, ControlRoom, build_engine
from lemming.tui.commands import VIEW_ACTIONS, ControlRoomCommands
from lemming.tui.model import RunView
from lemming.tui.replay import Frame, ReplayEngine, ReplayPosition, ReplaySource
from lemming.tui.screens.main import MainScreen
from lemming.tui.screens.replay import ReplayScreen
from lemming.tui.screens.runs import NEW_RUN, RunsScreen
from lemming.themes import themes

#: (title, help, action) of replay mode's palette; "screen." actions run on the replay screen.
REPLAY_ACTIONS: tuple[tuple[str, str, str], ...] = (
    ("Next tick", "→", "screen.tick(1)"),
    ("Previous tick", "←", "screen.tick(-1)"),
    ("Ten ticks forward", "PgDn", "screen.tick(10)"),
    ("Ten ticks back", "PgUp", "screen.tick(-10)"),
    ("First tick", "home", "screen.tick_to('first')"),
    ("Last tick", "end — follows a run being written", "screen.tick_to('last')"),
    ("Go to tick…", "g", "screen.goto"),
    ("Play / stop", "p — plays forward from the cursor", "screen.play"),
    ("Play faster", "+", "screen.speed(1)"),
    ("Play slower", "-", "screen.speed(-1)"),
    ("Inspect the selected turn", "enter — prompt, reply, parsed, usage, as recorded", "screen.inspect_turn"),
    ("Fork a live run from this tick", "f — a new run, child of this one, starts paused", "screen.fork"),
    ("Recorded runs", "r — ticks, spend, status, parent; enter opens one", "runs"),
    *VIEW_ACTIONS,
    ("Help", "? — keys and legend", "screen.help"),
    ("Quit", "q", "quit"),
)


class ReplayCommands(ControlRoomCommands):
    """The palette: replay's actions in replay mode, the control room's once live."""

    def _commands(self) -> Iterator[tuple[str, str, Callable[[], object]]]:
        app: ReplayRoom = self.app  # type: ignore[assignment]
        if app.mode == "live":
            yield from super()._commands()
            return
        actions = REPLAY_ACTIONS if app.mode == "replay" else [a for a in REPLAY_ACTIONS if a[2] in ("runs", "quit")]
        for title, help_text, action in actions:
            if action == "screen.fork" and not app.can_fork:
                continue
            yield title, help_text, partial(app.run_action, action)
        for title, help_text, callback in super()._commands():
            if title.startswith("Theme: "):
                yield title, help_text, callback


class OpeningScreen(Screen[None]):
    """Shown while a run is opened (and behind the run picker)."""

    DEFAULT_CSS = """
    OpeningScreen { align: center middle; }
    OpeningScreen #opening { width: auto; max-width: 90%; height: auto; color: $text-muted; }
    """

    BINDINGS = [("q", "app.quit", "Quit"), ("r", "app.runs", "Runs")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        yield Static(self.text, id="opening")

    def say(self, text: str) -> None:
        self.query_one("#opening", Static).update(text)


class ReplayRoom(ControlRoom):
    """The control room over recorded runs (see the module docstring)."""

    COMMANDS = App.COMMANDS | {ReplayCommands}

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
        theme: str | None = None,
        config_dir: Path | None = None,
        wall_clock: bool = True,
        cursor_blink: bool = True,
        animations: bool = True,
        pump_interval: float = 0.1,
        stream_mode: str | None = None,
        poll_interval: float = 0.5,
        on_frame: Callable[[Frame], None] | None = None,
    ) -> None:
        super().__init__(
            ReplayEngine(),  # type: ignore[arg-type]  (replaced by the opened run's)
            theme=theme,
            config_dir=config_dir,
            wall_clock=wall_clock,
            pump_interval=pump_interval,
            stream_mode=stream_mode,
            cursor_blink=cursor_blink,
            animations=animations,
        )
        self.db = Path(db)
        self.first_run = run_id
        self.follow = follow
        self.at = at
        self.can_fork = can_fork
        self.allow_new = allow_new
        self.org_path = Path(org) if org is not None else None
        self.seed = seed
        self.interval = interval
        self.sim_tokens_per_s = sim_tokens_per_s
        self.poll_interval = poll_interval
        self.on_frame = on_frame
        #: "picker" (no run open yet), "replay" (a recorded run, read-only) or "live" (an engine runs).
        self.mode = "picker" if run_id is None else "replay"
        self.position: ReplayPosition | None = None
        self._live_store: RunStore | None = None
        self._froze = False

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

    def on_mount(self, event: events.Mount) -> None:
        event.prevent_default()  # nothing to run yet: ControlRoom's start is not wanted
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        unknown = getattr(self, "_unknown_theme", None)
        if unknown:
            ours = ", ".join(t.name for t in themes())
            self.notify(f"No theme called {unknown!r}; using {self.theme}. Ours: {ours} (ctrl+p → Theme).", severity="warning")
        if self.first_run is not None:
            self.open_run(self.first_run, at=self.at)
        else:
            self.action_runs()

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
        gc.collect()
        gcfreeze.hold()
        self._froze = True
        old = self.position
        self.position = position
        self.engine = position.engine  # type: ignore[assignment]
        self.view = position.view
        self.subscription = None
        self.mode = "replay"
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
        await self._show(screen)
        if old is not None:
            await old.close()

    def action_runs(self) -> None:
        """The run picker: enter opens a run, n starts a live one (where allowed)."""
        if isinstance(self.screen, RunsScreen):
            return
        current = self.position.source.run_id if self.position is not None else None
        if self.mode == "live":
            current = self.engine.run_id

        def chosen(choice: str | None) -> None:
            if choice is None:
                if self.mode == "picker":
                    self.exit(0, return_code=0)
                return
            if choice == NEW_RUN:
                self._new_live_run()
                return
            if self.mode == "live":
                if self.engine.running:
                    self.notify("The live run is still running; q stops it (and quits).", severity="warning", timeout=6)
                    return
            self.follow = False
            self.open_run(choice)

        self.push_screen(
            RunsScreen(self.db, allow_new=self.allow_new and self.mode != "live", can_close=True, current=current),
            chosen,
        )

    # --- forking and live runs -----------------------------------------------------------

    def fork_at(self, tick: int) -> None:
        """Fork the replayed run at `tick` into a new live run (in this window)."""
        if self.mode != "replay" or self.position is None:
            return
        if not self.can_fork:
            self.notify("This session is read-only: forks are turned off.", severity="warning")
            return
        self._fork(self.position.source.run_id, tick)

    def _sim_overrides(self) -> dict[str, Any]:
        tps = DEFAULT_SIM_TOKENS_PER_S if self.sim_tokens_per_s is None else self.sim_tokens_per_s
        return {"sim": {"tokens_per_s": tps}}

    @work(exclusive=True, group="replay-fork", exit_on_error=False)
    async def _fork(self, run_id: str, tick: int) -> None:
        store: RunStore | None = None
        try:
            store = await RunStore.open(self.db)
            info = await store.get_run(run_id)
            state = await fork_state(store, info.id, tick)
            org = state.org
            org.root = Path(info.org_path)
            engine = Engine(
                org,
                seed=info.seed,
                state=state,
                parent_run=info.id,
                fork_tick=tick,
                paused=True,
                interval=DEFAULT_INTERVAL if self.interval is None else self.interval,
                registry=ProviderRegistry(org.models, overrides=self._sim_overrides()),
            )
            await store.create_run(
                run_id=engine.run_id,
                org_root=info.org_path,
                seed=engine.seed,
                definitions_hash=org.definitions_hash(),
                target_ticks=None,
                parent_run=info.id,
                fork_tick=tick,
                base_state=state,
            )
            engine.recorder = store.recorder(engine.run_id, state=engine.state)
        except (StoreError, OSError, ValueError) as e:
            if store is not None:
                await store.close()
            self.notify(str(e), title="Cannot fork", severity="error", timeout=15)
            return
        await self._go_live(engine, store)
        self.notify(
            f"Run {engine.run_id} forked from {info.id} at tick {tick}, recorded in {self.db}. "
            "It is paused: space runs it, n steps one tick.",
            title="Forked",
            timeout=8,
        )

    @work(exclusive=True, group="replay-fork", exit_on_error=False)
    async def _new_live_run(self) -> None:
        org = self.org_path or Path(".")
        store: RunStore | None = None
        try:
            engine = build_engine(
                org,
                seed=self.seed,
                paused=True,
                interval=self.interval,
                sim_tokens_per_s=self.sim_tokens_per_s,
            )
            store = await RunStore.open(self.db)
            await store.create_run(
                run_id=engine.run_id,
                org_root=engine.org.root,
                seed=engine.seed,
                definitions_hash=engine.org.definitions_hash(),
                target_ticks=None,
            )
            engine.recorder = store.recorder(engine.run_id, state=engine.state)
        except OrgInvalid as e:
            self.notify("\n".join(e.problems[:6]), title=f"The organisation at {org} cannot run", severity="error", timeout=20)
            return
        except (StoreError, OSError) as e:
            if store is not None:
                await store.close()
            self.notify(str(e), title="Cannot start a run", severity="error", timeout=15)
            return
        await self._go_live(engine, store)
        self.notify(f"Run {engine.run_id} of {engine.org.root} started, paused: space runs it.", title="Live run", timeout=8)

    async def _go_live(self, engine: Engine, store: RunStore) -> None:
        """Switch the window to live mode on `engine` (recorded through `store`)."""
        old = self.position
        self.position = None
        self.mode = "live"
        self.engine = engine
        self.view = RunView(sorted(engine.org.agents))
        self.subscription = engine.subscribe(tokens=True)
        self.recording = str(self.db)
        self._live_store = store
        main = MainScreen(
            engine,
            self.view,
            clock=self.clock,
            stream_mode=self.stream_mode,
            on_pane_failed=self.pane_failed,
            on_ready=self._main_ready,
        )
        await self._show(main)
        self._engine_worker = self._run_live()
        if old is not None:
            await old.close()

    async def _show(self, screen: Screen) -> None:
        """Make `screen` the room's main screen: dialogs and pickers above it close, the
        previous main screen (replay or live) goes; the opening screen stays beneath."""
        while len(self.screen_stack) > 1 and not isinstance(self.screen, MainScreen):
            await self.pop_screen()
        if isinstance(self.screen, MainScreen):
            await self.switch_screen(screen)
        else:
            await self.push_screen(screen)

    @work(exclusive=True, group="engine", exit_on_error=False, name="engine")
    async def _run_live(self) -> str:
        try:
            return await self.engine.run()
        finally:
            store, self._live_store = self._live_store, None
            if store is not None:
                await store.close()

    # --- the rest ------------------------------------------------------------------------

    def on_unmount(self) -> None:
        if self._froze:  # the app is going: what it kept is the collector's again
            gcfreeze.release()
            self._froze = False

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if event.state == WorkerState.ERROR and worker.group.startswith("replay"):
            err = worker.error
            self.failures.append(f"{worker.group}: " + "".join(traceback.format_exception(err)))
            self.notify(f"{type(err).__name__}: {err}", title=f"Replay: {worker.group} failed", severity="error", timeout=30)

    def _replay_only(self) -> bool:
        if self.mode != "live":
            self.notify("Replay is read-only: f forks a live run from the cursor's tick.", severity="warning", timeout=4)
            return True
        return False

    def action_toggle_pause(self) -> None:
        if not self._replay_only():
            super().action_toggle_pause()

    def action_step(self) -> None:
        if not self._replay_only():
            super().action_step()

    def action_inject(self) -> None:
        if not self._replay_only():
            super().action_inject()

    def action_top_up(self) -> None:
        if not self._replay_only():
            super().action_top_up()

    def action_toggle_enabled(self) -> None:
        if not self._replay_only():
            super().action_toggle_enabled()

    def action_slower(self) -> None:
        if not self._replay_only():
            super().action_slower()

    def action_faster(self) -> None:
        if not self._replay_only():
            super().action_faster()

    def action_abort_tick(self) -> None:
        if not self._replay_only():
            super().action_abort_tick()

    def action_inspect(self) -> None:
        screen = self.replay_screen
        if self.mode == "replay" and screen is not None:
            screen.action_inspect_turn()
        elif self.mode == "live":
            super().action_inspect()

    def action_plots(self) -> None:
        screen = self.replay_screen
        if self.mode == "replay" and screen is not None:
            screen.action_plots()
        elif self.mode == "live":
            super().action_plots()

    def action_search(self) -> None:
        screen = self.replay_screen
        if self.mode == "replay" and screen is not None:
            screen.action_search()
        elif self.mode == "live":
            super().action_search()

    async def action_quit(self) -> None:
        if self.mode == "live":
            await super().action_quit()
            return
        position, self.position = self.position, None
        if position is not None:
            await position.close()
        self._exit_with(0)
