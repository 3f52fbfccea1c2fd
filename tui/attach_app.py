"""AttachRoom: the control room on a run served by another process (`lemming attach`).

The run it shows is a RemoteEngine (engine/remote/client.py): the same read API and
event stream the panes consume, and the same command methods, carried over the run's
control socket; it plugs into Room's hook as source, control and feed. Everything else
is the Room's. What differs is leaving: `q`
and `ctrl+d` detach and leave the run going; `X` asks the run to stop (at its tick
boundary). A window that fails, or is killed, only loses its own connection.

A read-only connection (`lemming attach --read-only`) has no control: the header says
READ-ONLY, the footer, help and palette leave the steering keys out, and those keys say
at once that this window cannot steer. The agent files that do not validate (rejected by
the run's hot reload) are listed as in the control room — `✗ N bad file(s)` in the
header, `D` — when the run's organisation folder is on this machine: a watcher of this
window's own reads them (it changes nothing; the run's watcher rejects and reloads), and
`E` opens the selected agent's file in $EDITOR there.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Sequence

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.worker import Worker, WorkerState

from lemming.engine.org import Org
from lemming.engine.remote import RemoteEngine, Resync
from lemming.tui.actions import ATTACH, ATTACH_READ_ONLY, bindings
from lemming.tui.model import Changes
from lemming.tui.room import Room
from lemming.tui.screens.main import MainScreen


async def attach_remote(socket: str | Path, *, read_only: bool = False) -> RemoteEngine:
    """Connect to the served run at `socket` and subscribe (state, history, live events)."""
    return await RemoteEngine.attach(socket, read_only=read_only)


class AttachedMainScreen(MainScreen):
    """The main screen of an attached room: the live keys, q labelled as what it does here."""

    BINDINGS = bindings(ATTACH)


class ReadOnlyMainScreen(AttachedMainScreen):
    """The main screen of a read-only attached room: no steering key in the footer."""

    BINDINGS = bindings(ATTACH_READ_ONLY)


class FilesOnly:
    """What a DefinitionWatcher needs of an engine, for a window that only lists the agent
    files that do not validate: the served run's own watcher rejects them and reloads."""

    def __init__(self, org: Org) -> None:
        self.org = org

    def reject_definition(self, file: str, errors: Sequence[str]) -> None:
        pass  # the run's watcher announces it (this window gets its DefinitionRejected)

    def reload(self, org: Org) -> None:
        self.org = org  # what a broken file falls back to, as in the run


class AttachRoom(Room):
    """The control room over a served run (see the module docstring)."""

    MAIN_SCREEN = AttachedMainScreen
    BINDINGS = [
        Binding("ctrl+d", "detach", "Detach", show=False, priority=True, id="attach.detach"),
        Binding("ctrl+q", "detach", "Detach", show=False, priority=True, id="app.quit_ctrl"),
    ]

    def __init__(self, remote: RemoteEngine, *, socket: str | Path = "", **kw: Any) -> None:
        super().__init__(**kw)
        self.remote = remote
        self.read_only = remote.client.read_only
        if self.read_only:
            self.MAIN_SCREEN = ReadOnlyMainScreen
            self.read_only_note = "This window is attached read-only (lemming attach --read-only): it shows the run and cannot steer it."
        control = None if self.read_only else remote
        self.connect(remote, control=control, feed=remote.subscribe())  # type: ignore[arg-type]
        self.socket = str(socket)
        self.detached = False
        self.title = f"LeMMing Control Room — attached to {remote.run_id}" + (" (read-only)" if self.read_only else "")
        self._watch_stop = asyncio.Event()

    @property
    def keys_mode(self) -> str:
        return ATTACH_READ_ONLY if self.read_only else ATTACH

    @property
    def org_root(self) -> Path | None:
        """The served run's organisation folder, if it is on this machine (else None)."""
        root = Path(self.remote.org.root)
        return root if (root / "agents").is_dir() else None

    def get_default_screen(self) -> Any:
        return self.main_screen()

    def start(self) -> None:
        # The connection's reader runs as the room's engine worker: its end is the run's end here.
        self.call_after_refresh(lambda: self.run_live(self.remote))  # type: ignore[arg-type]
        if self.org_root is not None:
            self.watch_definitions()

    def _main_ready(self) -> None:
        super()._main_ready()
        self._say_attached()

    def _say_attached(self) -> None:
        """The header: READ-ONLY beside the mode word, and the hints that fit."""
        try:
            self.main.status.set(read_only=self.read_only, hints=self._hints())
        except LookupError:
            pass

    def _hints(self) -> tuple[str, ...]:
        """The header's hints, longest first (the run id comes before them)."""
        if self.run_result is not None and not self.remote.running:
            return ("q leaves",)
        who = self.remote.client.hello.get("you", "")
        if self.read_only:
            return (f"attached read-only as {who}: ctrl+d detaches", "ctrl+d detaches")
        return (f"attached as {who}: ctrl+d detaches, X stops the run", "ctrl+d detaches, X stops the run", "X stops the run")

    # --- the agent files (see the module docstring) ---------------------------------------

    @work(exclusive=True, group="watch", exit_on_error=False, name="watch")
    async def watch_definitions(self) -> None:
        """List the organisation's files that do not validate, until they do."""
        from lemming.engine.watch import DefinitionWatcher

        self.watcher = DefinitionWatcher(FilesOnly(self.remote.org), on_change=lambda _report: self._rejected_changed())  # type: ignore[arg-type]
        await self.watcher.run(self._watch_stop)

    async def action_edit_agent(self) -> None:
        """E: the control room's editor, when the run's files are on this machine."""
        if self._steerable() is None:
            return
        if self.org_root is None:
            self.notify(f"The run's organisation folder ({self.remote.org.root}) is not on this machine: "
                        "its agent files cannot be edited from this window.", title="Edit", severity="warning", timeout=8)
            return
        await super().action_edit_agent()

    # --- the stream ----------------------------------------------------------------------

    def apply_events(self, events: list) -> Changes:
        """As the control room's, except that a resynchronisation starts the view afresh."""
        cut = max((i for i, ev in enumerate(events) if type(ev) is Resync), default=None)
        if cut is None:
            return super().apply_events(events)
        marker: Resync = events[cut]
        self.view.__init__(sorted(self.remote.org.agents))  # type: ignore[misc]  (panes hold this object)
        self.notify(marker.message or "This window fell behind the run and was resynchronised.", title="Resynchronised", severity="warning", timeout=8)
        changes = super().apply_events(events[cut + 1 :])
        changes.structure = True
        return changes

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A lost connection is this window's failure, not the run's (Textual then calls
        the control room's handler too, unless prevented)."""
        worker = event.worker
        if worker.name == "engine" and event.state in (WorkerState.SUCCESS, WorkerState.ERROR):
            self._watch_stop.set()
            self.call_later(self._say_attached)  # once the run's end is noted: q leaves
        if worker.name == "engine" and event.state == WorkerState.ERROR and isinstance(worker.error, ConnectionError):
            self.run_result = f"lost the connection: {worker.error}"
            self._refresh_after_engine()
            self.notify(f"{worker.error}\nThis window shows the run as it was at tick {self.remote.tick}. "
                        "q leaves; lemming attach connects again.", title="Lost the connection to the run", severity="error", timeout=30)
            event.prevent_default()  # not the control room's "the engine stopped"

    # --- leaving -------------------------------------------------------------------------

    def action_detach(self) -> None:
        """Leave the run going and close this window."""
        self.detached = True
        self._watch_stop.set()
        self.remote.detach()
        self._exit_with(1 if str(self.run_result or "").startswith("lost") else 0)

    async def action_quit(self) -> None:
        self.action_detach()

    def action_stop_run(self) -> None:
        if self._steerable() is None or not self.remote.running:
            return
        self.remote.stop_run()
        self.notify("The run stops at the end of the tick in flight; this window shows it stopped. q leaves.", title="Stopping the run", timeout=6)

    def pane_failed(self, pane: str, exc: BaseException) -> None:
        """A pane failed: this window says so; the served run is not touched."""
        import traceback

        self.failures.append(f"{pane}: " + "".join(traceback.format_exception(exc)))
        try:
            self.main.status.set(note=f"{pane} pane failed: {type(exc).__name__}")
        except Exception:
            pass
        self.notify(f"{type(exc).__name__}: {exc}\nThe served run goes on; q detaches, lemming attach comes back.",
                    title=f"The {pane} pane failed", severity="error", timeout=60)

    def _handle_exception(self, error: Exception) -> None:
        self.remote.detach()
        self.failures.append(repr(error))
        App._handle_exception(self, error)

    async def action_inspect(self) -> None:
        """The inspector, once the prompts of the turns it may show are fetched: the
        stream carries turn records without their prompts (most of a run's bytes)."""
        main = self.main
        agents = {self.selected_agent} if self.selected_agent else set()
        if main.focused is main.timeline and main.timeline.selected_tick is not None:
            row = self.view.row(main.timeline.selected_tick)
            if row is not None:
                agents.update(row.failed or row.fired or row.firing)
        records = []
        for name in agents:
            if name in self.view.agents:
                records.extend(self.view.agents[name].history)
            last = self.remote.state.last_turn.get(name)
            if last is not None:
                records.append(last)
        missing = [r for r in records if not r.prompt]
        try:
            for rec in missing:
                got = await self.remote.client.request("turn", agent=rec.agent, tick=rec.tick, timeout=5)
                if got.get("record"):
                    rec.prompt = got["record"]["prompt"]
        except Exception as exc:  # the inspector still opens, on what is here
            self.notify(f"The prompts could not be fetched from the run: {exc}", severity="warning", timeout=5)
        super().action_inspect()

    def action_runs(self) -> None:
        self.notify(f"lemming runs lists the recorded runs; lemming replay {self.remote.run_id} replays this one.", title="Runs", timeout=8)

    def goodbye(self) -> str:
        """One line for the terminal once the window is gone."""
        if self.run_result and not self.remote.running and self.run_result != "detached":
            return str(self.run_result)  # the run stopped, or the connection was lost
        if self.detached:
            return f"detached at tick {self.remote.tick}; the run goes on (lemming attach {self.remote.run_id} comes back)"
        return str(self.run_result or f"left at tick {self.remote.tick}")


