"""The plots (`s`): spend, tokens per second, latency and failures per tick.

Drawn with Textual's own `Sparkline` (no plotting dependency: a sparkline per series
reads at 80×24 where axes would not fit), each with its last, peak and mean value.
The series come from the run store (tui/series.py): live, the ticks up to the last
committed one; in replay, the ticks up to the cursor. `r` reads them again.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Sparkline, Static

from lemming.engine.store.errors import StoreError
from lemming.tui.series import RunSeries

#: What the screen calls for its data.
Loader = Callable[[], Awaitable[RunSeries]]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.4f}"


class PlotsScreen(ModalScreen[None]):
    """The run's figures per tick as sparklines; escape closes."""

    DEFAULT_CSS = """
    PlotsScreen { align: center middle; }
    PlotsScreen > #plots-box {
        width: 120; max-width: 100%; height: auto; max-height: 100%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    PlotsScreen .dialog-title { text-style: bold; color: $primary; }
    PlotsScreen #plots-status { color: $text-muted; }
    PlotsScreen .plot-label { color: $text-muted; margin-top: 1; }
    PlotsScreen Sparkline { height: 2; }
    PlotsScreen Sparkline > .sparkline--max-color { color: $accent; }
    PlotsScreen Sparkline > .sparkline--min-color { color: $primary 50%; }
    PlotsScreen #plots-scroll { height: auto; max-height: 100%; }
    """

    BINDINGS = [
        Binding("escape,s", "close", "Close", id="plots.close"),
        Binding("r", "reload", "Reload", id="plots.reload"),
    ]

    #: (series attribute, label) in screen order
    SERIES = (
        ("spend", "spend per tick, all agents"),
        ("agent_spend", "spend per tick, {agent}"),
        ("tokens_per_s", "output tokens per second"),
        ("latency_p50", "turn latency p50, ms"),
        ("latency_p95", "turn latency p95, ms"),
        ("failures", "failed turns per tick"),
    )

    def __init__(self, loader: Loader, *, where: str) -> None:
        super().__init__()
        self.loader = loader
        self.where = where
        self.series: RunSeries | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="plots-box"):
            yield Label(f"Plots · {self.where}", classes="dialog-title")
            yield Static("reading the run…", id="plots-status")
            with VerticalScroll(id="plots-scroll"):
                for attr, _ in self.SERIES:
                    yield Label("", id=f"label-{attr}", classes="plot-label")
                    yield Sparkline([], id=f"plot-{attr}", summary_function=max)

    def on_mount(self) -> None:
        self.load()

    @work(exclusive=True, group="plots", exit_on_error=False)
    async def load(self) -> None:
        status = self.query_one("#plots-status", Static)
        try:
            series = await self.loader()
        except StoreError as e:
            status.update(str(e))
            return
        self.show(series)

    def show(self, series: RunSeries) -> None:
        self.series = series
        status = self.query_one("#plots-status", Static)
        if not series.ticks:
            status.update("no committed tick yet")
        else:
            status.update(f"ticks {series.ticks[0]}–{series.ticks[-1]} · one column per tick (the peak when"
                          " they are more than the width) · r reloads · esc closes")
        for attr, label in self.SERIES:
            data = [float(v) for v in getattr(series, attr)]
            name = label.format(agent=series.agent or "no agent selected")
            figures = ""
            if data:
                figures = f" · last {_fmt(data[-1])} · peak {_fmt(max(data))} · mean {_fmt(sum(data) / len(data))}"
            self.query_one(f"#label-{attr}", Label).update(name + figures)
            self.query_one(f"#plot-{attr}", Sparkline).data = data

    def action_reload(self) -> None:
        self.load()

    def action_close(self) -> None:
        self.dismiss(None)
