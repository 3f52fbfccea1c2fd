"""A series per tick drawn with axes: Textual's `Sparkline` with a y-axis and an x-axis.

    spend per tick, all agents · last 0.031 · peak 0.044 · mean 0.029
    0.044 cr ┤     ▂▄▆█▇▅▃▂▃▅▇
             │  ▁▃▅██████████▇▅
    0.0055 cr┤▁▃████████████████
             └tick 1 ──────── tick 150 ──────── tick 300┘

The y-axis is labelled with the series' smallest and largest value and its unit (the
sparkline scales between them); the x-axis with the first, middle and last tick of
the series. One column per tick, or the peak of several ticks when they are more
than the width (the sparkline's buckets). No plotting dependency: Textual's own
widget draws the bars, at any theme (its colours come from the component classes).
"""

from __future__ import annotations

from typing import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Label, Sparkline, Static

from lemming.tui.widgets.credits import money


def y_labels(values: Sequence[float], unit: str, height: int) -> list[str]:
    """The y-axis, top line first: the largest value, blank lines, the smallest."""
    if not values:
        return [""] * height
    hi, lo = max(values), min(values)
    top = f"{money(hi)} {unit}".strip()
    bottom = f"{money(lo)} {unit}".strip()
    if height == 1:
        return [top]
    return [top] + [""] * (height - 2) + [bottom]


def y_width(labels: Sequence[str]) -> int:
    """Cells for the y-axis labels: the widest whole, a space before the axis (at least Y_WIDTH)."""
    return max([Plot.Y_WIDTH] + [len(s) + 1 for s in labels])


def x_axis(ticks: Sequence[int], width: int) -> str:
    """`└tick a ── tick m ── tick b┘` fitted to `width` cells (fewer labels when narrow)."""
    if width < 2:
        return ""
    if not ticks:
        return "└" + "─" * (width - 2) + "┘"
    first, last = ticks[0], ticks[-1]
    inner = width - 2
    labels = [f"tick {first}", f"tick {(first + last) // 2}", f"tick {last}"] if last - first >= 4 else [f"tick {first}", f"tick {last}"]
    if first == last:
        labels = [f"tick {first}"]
    while labels and sum(len(s) for s in labels) + 2 * (len(labels) - 1) > inner:
        labels = [labels[0], labels[-1]] if len(labels) > 2 else ([f"{first}", f"{last}"] if labels[0].startswith("tick") else labels[:1])
        if len(labels) == 1 and len(labels[0]) > inner:
            labels = []
    if not labels:
        return "└" + "─" * inner + "┘"
    if len(labels) == 1:
        line = labels[0] + "─" * (inner - len(labels[0]))
    else:
        gaps = len(labels) - 1
        fill = inner - sum(len(s) for s in labels)
        parts = [labels[0]]
        for i, s in enumerate(labels[1:]):
            parts.append("─" * (fill // gaps + (1 if i < fill % gaps else 0)))
            parts.append(s)
        line = "".join(parts)
    return "└" + line + "┘"


class XAxis(Widget):
    """The x-axis under a plot: its tick range, fitted to the width it is given."""

    DEFAULT_CSS = """
    XAxis { height: 1; color: $text-muted; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.ticks: Sequence[int] = ()

    def show(self, ticks: Sequence[int]) -> None:
        self.ticks = ticks
        self.refresh()

    def render(self) -> Text:
        return Text(x_axis(self.ticks, self.size.width), no_wrap=True)


class Plot(Widget):
    """One series per tick with its title, figures and axes."""

    DEFAULT_CSS = """
    Plot { height: auto; }
    Plot > .plot-label { color: $text-muted; }
    Plot > Horizontal { height: auto; }
    Plot .plot-y { height: 3; color: $text-muted; text-align: right; }
    Plot .plot-yline { width: 1; height: 3; color: $text-muted; }
    Plot Sparkline { height: 3; width: 1fr; }
    Plot Sparkline > .sparkline--max-color { color: $accent; }
    Plot Sparkline > .sparkline--min-color { color: $primary 50%; }
    """

    #: Lines of bars (the y-axis labels the top and bottom one).
    HEIGHT = 3
    #: The narrowest y-axis; a wider label (`166.20 tok/s`) widens it.
    Y_WIDTH = 12

    def __init__(self, title: str, unit: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title = title
        self.unit = unit
        self.values: list[float] = []
        self.ticks: list[int] = []

    def compose(self) -> ComposeResult:
        yield Label(self.title, classes="plot-label")
        with Horizontal():
            yield Static("", classes="plot-y")
            yield Static("\n".join("┤" if i in (0, self.HEIGHT - 1) else "│" for i in range(self.HEIGHT)), classes="plot-yline")
            yield Sparkline([], summary_function=max)
        yield XAxis()

    def show(self, title: str, ticks: Sequence[int], values: Sequence[float], *, width: int | None = None) -> None:
        """Draw `values` (one per tick of `ticks`) under `title`, with its figures; the
        y-axis is `width` cells wide (default: what its labels need, see `y_width`)."""
        self.title = title
        self.ticks = list(ticks)
        self.values = [float(v) for v in values]
        data = self.values
        figures = ""
        if data:
            figures = f" · last {money(data[-1])} · peak {money(max(data))} · mean {money(sum(data) / len(data))}"
        self.query_one(".plot-label", Label).update(title + figures)
        ys = y_labels(data, self.unit, self.HEIGHT)
        width = width or y_width(ys)
        y = self.query_one(".plot-y", Static)
        y.styles.width = width
        y.update("\n".join(ys))
        self.query_one(Sparkline).data = data
        x = self.query_one(XAxis)
        x.styles.margin = (0, 0, 0, width)
        x.show(self.ticks)
