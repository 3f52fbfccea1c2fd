"""The main screen: header, the five panes and the footer, in a wide or a compact layout.

Wide terminals show every pane at once (a grid); small ones (under 110×30,
e.g. 80×24) show one pane at a time with a tab strip, so nothing overlaps.
The screen owns the operator's bindings (so dialogs on top have theirs) and
applies each pump's `Changes` to the panes, isolating a pane that fails.
"""

from __future__ import annotations

import traceback
from typing import Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.events import Resize
from textual.screen import Screen
from textual.widget import Widget

from lemming.engine.engine import Engine

from lemming.tui.messages import PaneFailed, StreamModeChanged
from lemming.tui.model import Changes, RunView
from lemming.tui.widgets.credits import CreditsPane
from lemming.tui.widgets.footer import KeysFooter
from lemming.tui.widgets.graph import MessageGraph
from lemming.tui.widgets.line_table import AgentTable, LineTable
from lemming.tui.widgets.pane_tabs import PANES, PaneTabs
from lemming.tui.widgets.roster import Roster
from lemming.tui.widgets.status_bar import StatusBar
from lemming.tui.widgets.stream import TokenStream
from lemming.tui.widgets.timeline import Timeline

COMPACT_WIDTH = 110
COMPACT_HEIGHT = 30
#: Tab order in the wide layout.
FOCUS_ORDER = ("roster", "credits", "timeline", "stream", "graph")


class MainScreen(Screen[None]):
    """The control room's one permanent screen."""

    #: The timeline pane's class (replay mode shows it as a cursor over every recorded tick).
    TIMELINE: type[Timeline] = Timeline

    BINDINGS = [
        Binding("space", "app.toggle_pause", "Pause", id="run.pause"),
        Binding("n", "app.step", "Step", id="run.step"),
        Binding("i", "app.inject", "Inject", id="run.inject"),
        Binding("t", "app.top_up", "Top-up", id="agent.top_up"),
        Binding("e", "app.toggle_enabled", "On/off", id="agent.enable"),
        Binding("plus", "app.slower", "Speed", key_display="+/-", id="run.slower"),
        Binding("minus", "app.faster", "Shorter interval", show=False, id="run.faster"),
        Binding("enter", "app.inspect", "Inspect", id="agent.inspect"),
        Binding("tab", "next_pane(1)", "Next pane", show=False, id="pane.next"),
        Binding("shift+tab", "next_pane(-1)", "Previous pane", show=False, id="pane.previous"),
        Binding("1", "show_pane('roster')", "Agents", show=False, id="pane.roster"),
        Binding("2", "show_pane('stream')", "Stream", show=False, id="pane.stream"),
        Binding("3", "show_pane('credits')", "Credits", show=False, id="pane.credits"),
        Binding("4", "show_pane('timeline')", "Timeline", show=False, id="pane.timeline"),
        Binding("5", "show_pane('graph')", "Messages", show=False, id="pane.graph"),
        Binding("E", "app.edit_agent", "Edit file", show=False, id="agent.edit"),
        Binding("D", "app.show_rejected", "Rejected files", show=False, id="app.rejected"),
        Binding("question_mark", "app.help", "Help", key_display="?", id="app.help"),
        Binding("q", "app.quit", "Quit", id="app.quit"),
        # After quit: at 80 columns the footer ends before it (help and the palette have it).
        Binding("slash", "app.search", "Find", key_display="/", id="run.search"),
        Binding("s", "app.plots", "Plots", id="run.plots"),
    ]

    def __init__(
        self,
        engine: Engine,
        view: RunView,
        *,
        clock: Callable[[], float] | None,
        stream_mode: str = "selected",
        on_pane_failed: Callable[[str, BaseException], None] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.view = view
        self.clock = clock
        self.stream_mode = stream_mode
        self.on_pane_failed = on_pane_failed
        self.on_ready = on_ready
        self.ready = False
        self.compact = False
        self.active_pane = "roster"
        self.selected_agent: str | None = view.order[0] if view.order else None
        self.failed_panes: dict[str, str] = {}

    # --- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        self.status = StatusBar(self.clock, id="status")
        self.roster = Roster(self.engine, self.view, id="roster", classes="pane")
        self.stream = TokenStream(self.view, mode=self.stream_mode, id="stream", classes="pane")
        self.credits = CreditsPane(self.engine, self.view, id="credits", classes="pane")
        self.timeline = self.TIMELINE(self.engine, self.view, id="timeline", classes="pane")
        self.graph = MessageGraph(self.engine, self.view, id="graph", classes="pane")
        self.tabs = PaneTabs(id="tabs")
        yield self.status
        yield self.tabs
        with Container(id="panes"):
            yield self.roster
            yield self.stream
            yield self.credits
            yield self.timeline
            yield self.graph
        width, height = self.app.size
        # At 80 columns the keys need the whole footer line (_layout_for keeps this up to date).
        self.footer = KeysFooter(compact=True, show_command_palette=not self._is_compact(width, height))
        yield self.footer

    def on_mount(self) -> None:
        status = self.status
        status.org_name = self.engine.org.name
        status.run_id = self.engine.run_id
        status.tick = self.engine.tick
        status.interval = self.engine.state.interval
        status.mode = "PAUSED" if self.engine.paused else "LIVE"
        for table in self.query(LineTable):
            table.invalidate(None, header=True)
        self.graph.recompute()
        self.stream.show_agent(self.selected_agent)
        self._layout_for(self.app.size.width, self.app.size.height)
        self.roster.focus()
        self.ready = True
        if self.on_ready is not None:
            self.on_ready()

    def on_resize(self, event: Resize) -> None:
        self._layout_for(event.size.width, event.size.height)

    @staticmethod
    def _is_compact(width: int, height: int) -> bool:
        return width < COMPACT_WIDTH or height < COMPACT_HEIGHT

    def _layout_for(self, width: int, height: int) -> None:
        compact = self._is_compact(width, height)
        self.compact = compact
        self.set_class(compact, "-compact")
        # At 80 columns the keys need the whole footer line.
        self.footer.show_command_palette = not compact
        self._mark_active()

    def _mark_active(self) -> None:
        for pane_id, _ in PANES:
            self.pane(pane_id).set_class(pane_id == self.active_pane, "-active")
        self.tabs.activate(self.active_pane)

    # --- panes ---------------------------------------------------------------------------

    def pane(self, pane_id: str) -> Widget:
        return {
            "roster": self.roster,
            "stream": self.stream,
            "credits": self.credits,
            "timeline": self.timeline,
            "graph": self.graph,
            "status": self.status,
        }[pane_id]

    def action_show_pane(self, pane_id: str) -> None:
        self.active_pane = pane_id
        self._mark_active()
        # Focus now, not after a refresh: a key typed right after (5 then m) goes to the pane.
        self.set_focus(self.pane(pane_id))

    def action_next_pane(self, delta: int) -> None:
        order = [p for p, _ in PANES] if self.compact else list(FOCUS_ORDER)
        focused = self.focused
        current = focused.id if focused is not None and focused.id in order else self.active_pane
        i = order.index(current) if current in order else 0
        self.action_show_pane(order[(i + delta) % len(order)])

    def on_descendant_focus(self, event) -> None:  # noqa: ANN001
        widget = event.widget
        if widget.id in dict(PANES) and widget.id != self.active_pane and not self.compact:
            self.active_pane = widget.id
            self._mark_active()

    @on(PaneTabs.Chosen)
    def _tab_chosen(self, event: PaneTabs.Chosen) -> None:
        self.action_show_pane(event.pane)

    # --- selection -----------------------------------------------------------------------

    @on(LineTable.CursorMoved)
    def _cursor_moved(self, event: LineTable.CursorMoved) -> None:
        table = event.table
        if isinstance(table, AgentTable):
            name = table.selected
            if name is not None and name != self.selected_agent:
                self.select_agent(name)

    def select_agent(self, name: str) -> None:
        self.selected_agent = name
        for table in self.query(AgentTable):
            table.select(name)
        self.stream.show_agent(name)

    @on(StreamModeChanged)
    def _stream_mode(self, event: StreamModeChanged) -> None:
        self.stream_mode = event.mode
        setter = getattr(self.app, "remember_stream_mode", None)
        if setter is not None:
            setter(event.mode)

    @on(PaneFailed)
    def _pane_failed_while_painting(self, event: PaneFailed) -> None:
        self.pane_failed(event.pane, event.exception or RuntimeError(event.error))

    # --- applying a pump's changes -------------------------------------------------------

    def apply(self, changes: Changes, *, tick_committed: bool) -> None:
        """Repaint what `changes` touched; a pane that raises is isolated and reported."""
        if changes.structure:
            self._guard("roster", lambda: self.roster.refresh_agents(None))
            self._guard("credits", lambda: self.credits.refresh_agents(None))
            self._guard("graph", self.graph.refresh_graph)
            if self.selected_agent is None and self.view.order:
                self.select_agent(self.view.order[0])
        elif changes.agents:
            self._guard("roster", lambda: self.roster.refresh_agents(changes.agents))
            self._guard("credits", lambda: self.credits.refresh_agents(changes.agents))
        if changes.credits:
            self._guard("credits", lambda: self.credits.invalidate([], header=True))
        if changes.graph and not changes.structure and tick_committed:
            self._guard("graph", self.graph.refresh_graph)
        if changes.ticks or changes.header:
            self._guard("timeline", lambda: self.timeline.refresh_ticks(changes.ticks))
        if changes.stream:
            self._guard("stream", lambda: self.stream.feed(changes.stream))
        self._guard("status", lambda: self.refresh_status(tick_committed))

    def refresh_status(self, tick_committed: bool = False) -> None:
        e = self.engine
        status = self.status
        if tick_committed:
            status.tick_committed()
        if e.running or not self.view.stopped:
            mode = "PAUSED" if e.paused else "LIVE"
        else:
            mode = "STOPPED"
        if getattr(self.app, "stopping", False) and e.running:
            mode = "STOPPING"
        thinking = sum(1 for a in self.view.agents.values() if a.thinking_tick is not None)
        status.set(
            mode=mode,
            tick=e.tick,
            total_spend=e.state.total_spend,
            interval=e.state.interval,
            thinking=thinking,
            run_id=e.run_id,
            recording=bool(getattr(self.app, "recording", None)),
        )

    def _guard(self, pane: str, update: Callable[[], None]) -> None:
        if pane in self.failed_panes:
            return
        try:
            update()
        except Exception as exc:  # a broken pane must not take the run down silently
            self.pane_failed(pane, exc)

    def pane_failed(self, pane: str, exc: BaseException) -> None:
        if pane in self.failed_panes:
            return
        self.failed_panes[pane] = f"{type(exc).__name__}: {exc}"
        try:
            widget = self.pane(pane)
            widget.add_class("-failed")
            widget.border_subtitle = f"failed: {type(exc).__name__}"
        except Exception:
            pass
        if self.on_pane_failed is not None:
            self.on_pane_failed(pane, exc)
        else:  # pragma: no cover - the app always passes one
            traceback.print_exception(exc)
