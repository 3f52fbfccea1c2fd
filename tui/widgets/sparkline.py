"""Sparklines as text: a series of numbers as one line of block characters.

For panes that draw their rows as text (the credits pane's spend per tick): Textual's
`Sparkline` widget is a widget per series, too heavy for a row per agent.
"""

from __future__ import annotations

from typing import Iterable, Sequence

BLOCKS = "▁▂▃▄▅▆▇█"


def spark(values: Sequence[float], top: float | None = None) -> str:
    """One block per value, scaled to `top` (default: the largest value); a zero is a
    blank, any positive value at least the lowest block."""
    peak = top if top is not None else max(values, default=0.0)
    if peak <= 0:
        return " " * len(values)
    out = []
    for v in values:
        if v <= 0:
            out.append(" ")
        else:
            out.append(BLOCKS[min(len(BLOCKS) - 1, int(v / peak * (len(BLOCKS) - 1) + 0.5))])
    return "".join(out)


def per_tick(points: Iterable[tuple[int, float]], last_tick: int, ticks: int) -> list[float]:
    """Sums of (tick, amount) points for each of the `ticks` ticks ending at `last_tick`."""
    first = last_tick - ticks + 1
    out = [0.0] * ticks
    for t, v in points:
        if first <= t <= last_tick:
            out[t - first] += v
    return out
