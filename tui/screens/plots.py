"""The plots (`s`): spend, tokens per second, latency and failures per tick.

Each series is a `Plot` (tui/widgets/plot.py): Textual's own `Sparkline` with a y-axis
(the smallest and largest value, with the unit) and an x-axis (the tick range), under
a line with its last, peak and mean value.
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
from textual.widgets import Label, Static

from lemming.engine.store.errors import StoreError
from lemming.tui.series import RunSeries
from lemming.tui.widgets.plot import Plot, y_labels, y_width

#: What the screen calls for its data.
Loader = Callable[[], Awaitable[RunSeries]]


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
    PlotsScreen #plots-scroll { height: auto; max-height: 100%; }
    """

    BINDINGS = [
        Binding("escape,s", "close", "Close", id="plots.close"),
        Binding("r", "reload", "Reload", id="plots.reload"),
    ]

    #: (series attribute, label, unit of the y-axis) in screen order
    SERIES = (
        ("spend", "spend per tick, all agents", "cr"),
        ("agent_spend", "spend per tick, {agent}", "cr"),
        ("tokens_per_s", "output tokens per second", "tok/s"),
        ("latency_p50", "turn latency p50", "ms"),
        ("latency_p95", "turn latency p95", "ms"),
        ("failures", "failed turns per tick", "turns"),
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
                for attr, label, unit in self.SERIES:
                    yield Plot(label, unit, id=f"plot-{attr}")

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
        # One y-axis width for every plot, so that their bars and tick axes line up.
        width = y_width([s for attr, _, unit in self.SERIES for s in y_labels(getattr(series, attr), unit, Plot.HEIGHT)])
        for attr, label, _ in self.SERIES:
            name = label.format(agent=series.agent or "no agent selected")
            self.query_one(f"#plot-{attr}", Plot).show(name, series.ticks, getattr(series, attr), width=width)

    def action_reload(self) -> None:
        self.load()

    def action_close(self) -> None:
        self.dismiss(None)
