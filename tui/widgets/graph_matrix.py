"""The message graph as a heat-map matrix: senders down, readers across.

Pure layout and styling (no widget here; `MessageGraph` shows it):

* `matrix_layout` picks the widest column that lets every reader fit the pane: three
  cells (the count, coloured by volume), two or one (a shade glyph `░▒▓█`). Only when
  even one cell per reader does not fit does the matrix scroll sideways.
* `column_labels` — the readers' roster numbers: across when they fit a column, else
  written downwards (tens on one line, units on the next), so that 40 agents fit a
  70-cell pane; the rows (number and name) are the legend, and at three cells a line
  of two-letter abbreviations is added when they tell the agents apart.
* `heat_level` / `heat_scale` — four levels of intensity over the busiest cell's
  volume, and the header line that says which counts each level holds.
* `heat_styles` — the levels as styles from the pane's own colours: a background
  blended from the pane's towards the accent colour when the theme has true colours,
  and on the ANSI theme (the terminal's own palette, which cannot be blended) the
  accent colour plain, bold, reversed, reversed bold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from rich.color import Color, ColorType
from rich.style import Style

#: Levels of intensity and the glyph of each in a narrow column.
LEVELS = 4
GLYPHS = "░▒▓█"
#: Background blend towards the accent colour per level (true-colour themes).
BLEND = (0.22, 0.42, 0.66, 0.92)
#: Row names are cut to this many cells (and to NARROW_NAME when the columns do not fit).
NAME_W = 14
NARROW_NAME = 8


@dataclass(frozen=True, slots=True)
class MatrixLayout:
    """Where the matrix's parts go: row numbers, names, then a column per reader."""

    agents: int
    cell: int  # cells per reader column: 3 (counts), 2 or 1 (glyphs)
    name_w: int
    num_w: int

    @property
    def frozen(self) -> int:
        """The row label's width (number, space, name, space): stays put when scrolling."""
        return self.num_w + 1 + self.name_w + 1

    @property
    def width(self) -> int:
        return self.frozen + self.agents * self.cell

    @property
    def across(self) -> bool:
        """Whether column numbers are written across (else downwards, a digit a line)."""
        return len(str(self.agents)) < self.cell

    @property
    def digit_rows(self) -> int:
        return 1 if self.across else len(str(self.agents))


def matrix_layout(width: int, names: Sequence[str]) -> MatrixLayout:
    """The widest columns with which every reader fits `width` cells."""
    n = len(names)
    num_w = len(str(max(1, n)))
    name_w = min(NAME_W, max([5] + [len(s) for s in names]))
    for name in (name_w, min(name_w, NARROW_NAME)):
        for cell in (3, 2, 1):
            layout = MatrixLayout(n, cell, name, num_w)
            if layout.width <= width:
                return layout
    return MatrixLayout(n, 1, min(name_w, NARROW_NAME), num_w)


def abbreviations(names: Sequence[str]) -> list[str] | None:
    """Two-letter labels that tell the agents apart (first or last two letters), or None."""
    for pick in (lambda s: s[:2], lambda s: s[-2:]):
        labels = [pick(s) for s in names]
        if len(set(labels)) == len(labels):
            return labels
    return None


def column_labels(layout: MatrixLayout) -> list[list[str]]:
    """Per header line, each column's label (`layout.cell` wide): the reader's number."""
    n, cell = layout.agents, layout.cell
    if layout.across:
        return [[f"{i:>{cell}}" for i in range(1, n + 1)]]
    digits = len(str(n))
    lines: list[list[str]] = []
    for d in range(digits):
        line = []
        for i in range(1, n + 1):
            s = f"{i:>{digits}}"[d]
            line.append(f"{s:>{cell}}")
        lines.append(line)
    return lines


def heat_bounds(peak: int) -> list[int]:
    """The highest count of each level (levels whose range would be empty are dropped)."""
    if peak <= 0:
        return []
    out: list[int] = []
    for k in range(1, LEVELS + 1):
        hi = math.ceil(peak * k / LEVELS)
        if not out or hi > out[-1]:
            out.append(hi)
    return out


def heat_level(n: int, bounds: Sequence[int]) -> int:
    """The level (1..len(bounds)) of a count, scaled so that the busiest is the top level."""
    for k, hi in enumerate(bounds, 1):
        if n <= hi:
            return k + LEVELS - len(bounds)  # few levels: the top ones (a single 1 is not faint)
    return LEVELS


def heat_scale(bounds: Sequence[int]) -> list[tuple[int, str]]:
    """(level, "lo–hi") for each level in use, for the header's key."""
    out: list[tuple[int, str]] = []
    lo = 1
    for k, hi in enumerate(bounds, 1):
        out.append((k + LEVELS - len(bounds), str(hi) if hi == lo else f"{lo}–{hi}"))
        lo = hi + 1
    return out


def _blend(a: Color, b: Color, t: float) -> Color:
    (r1, g1, b1), (r2, g2, b2) = a.get_truecolor(), b.get_truecolor()
    return Color.from_rgb(r1 + (r2 - r1) * t, g1 + (g2 - g1) * t, b1 + (b2 - b1) * t)


def _contrast(c: Color) -> Color:
    r, g, b = c.get_truecolor()
    lum = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return Color.from_rgb(0, 0, 0) if lum > 140 else Color.from_rgb(255, 255, 255)


def heat_styles(accent: Style, base: Style) -> list[Style]:
    """The style of each level (index 0 is level 1) from the pane's accent and base styles."""
    fg, bg = accent.color, base.bgcolor
    truecolor = fg is not None and bg is not None and all(
        c.type in (ColorType.TRUECOLOR, ColorType.EIGHT_BIT) for c in (fg, bg))
    if not truecolor:
        # The terminal's palette: no blending, so weight by attributes (dim is unreliable).
        return [accent, accent + Style(bold=True), accent + Style(reverse=True),
                accent + Style(reverse=True, bold=True)]
    out = []
    for k, t in enumerate(BLEND):
        cell = _blend(bg, fg, t)  # type: ignore[arg-type]
        out.append(Style(bgcolor=cell, color=_contrast(cell), bold=k >= 2))
    return out


def glyph_styles(accent: Style) -> list[Style]:
    """Narrow columns: the glyph carries the intensity; the heaviest two are bold."""
    return [accent, accent, accent + Style(bold=True), accent + Style(bold=True)]
