"""AttachRoom: the control room on a run served by another process (`lemming attach`).

The run it shows is a RemoteEngine (engine/remote/client.py): the same read API and
event stream the panes consume, and the same command methods, carried over the run's
control socket; it plugs into Room's hook as source, control and feed. Everything else
is the Room's. What differs is leaving: `q`
and `ctrl+d` detach and leave the run going; `X` asks the run to stop (at its tick
boundary). A window that fails, or is killed, only loses its own connection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding
from textual.worker import Worker, WorkerState

from lemming.engine.remote import RemoteEngine, Resync
from lemming.tui.actions import ATTACH, bindings
from lemming.tui.model import Changes
from lemming.tui.room import Room
from lemming.tui.screens.main import MainScreen


async def attach_remote(socket: str | Path, *, read_only: bool = False) -> RemoteEngine:
    """Connect to the served run at `socket` and subscribe (state, history, live events)."""
    return await RemoteEngine.attach(socket, read_only=read_only)


class AttachedMainScreen(MainScreen):
    """The main screen of an attached room: the live keys, q labelled as what it does here."""

    BINDINGS = bindings(ATTACH)


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
        self.connect(remote, control=remote, feed=remote.subscribe())  # type: ignore[arg-type]
        self.socket = str(socket)
        self.detached = False
        self.title = f"LeMMing Control Room — attached to {remote.run_id}"

    @property
    def keys_mode(self) -> str:
        return ATTACH

    def get_default_screen(self) -> Any:
        return self.main_screen()

    def start(self) -> None:
        # The connection's reader runs as the room's engine worker: its end is the run's end here.
        self.call_after_refresh(lambda: self.run_live(self.remote))  # type: ignore[arg-type]

    def _main_ready(self) -> None:
        super()._main_ready()
        self._say_attached()

    def _say_attached(self) -> None:
        who = self.remote.client.hello.get("you", "")
        try:
            self.main.status.set(note=f"attached as {who}: ctrl+d detaches, X stops the run")
        except Exception:
            pass

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
        self.remote.detach()
        self._exit_with(1 if str(self.run_result or "").startswith("lost") else 0)

    async def action_quit(self) -> None:
        self.action_detach()

    def action_stop_run(self) -> None:
        if not self.remote.running:
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


