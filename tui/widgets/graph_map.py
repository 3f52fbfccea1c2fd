"""The message graph drawn as a graph: agents as labelled nodes, edges between them.

`draw_map` paints a grid of text cells (no widget here; `MessageGraph` shows it):

* nodes — each agent's label (`●name`, or `●12`, its roster number, when the names
  do not fit), placed by `graph_layout` so that agents who may read each other sit
  near each other; labels never overlap.
* faint edges (`·`) — who may read whom (either way).
* bold edges — the last ticks' traffic, sender to recipient (a broadcast reaches
  every reader), drawn with line characters and an arrowhead at the recipient;
  heavier with volume (1 / 2–4 / 5 or more messages).
* the selected agent in reverse, its neighbours bold, the edges touching it in the
  highlight style; the rest stays as it is.

A busy organisation would be a tangle: past `FAINT_PER_NODE` permissions per agent
only the selected agent's are drawn, and past `FLOWS_PER_NODE` links per agent only
the busiest (and all of the selected agent's); `MapDrawing` says how many of how many.

Returns None when the pane has fewer label cells than agents, or there are more than
`MAX_NODES` agents: the caller shows the matrix and says why.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Mapping

from rich.style import Style

from lemming.tui.widgets.graph_layout import Point, place_on_grid

#: Message volume from which a traffic edge is bold, and heavy.
BOLD_FROM = 2
HEAVY_FROM = 5
BROADCAST = "*"
#: More agents than this are never drawn as a graph (numbers in a tangle): the matrix.
MAX_NODES = 60
#: Faint permission edges per agent past which only the selected agent's are drawn.
FAINT_PER_NODE = 3
#: Traffic links per agent drawn at most (the busiest; the selected agent's always).
FLOWS_PER_NODE = 1.5

#: one row of the drawing: (text, style name) runs
Row = list[tuple[str, str]]

#: Recent placements on the grid, by (order, positions, grid): a placement depends on
#: neither the traffic nor the selection, and it is the dearest part of a drawing.
_PLACED: "OrderedDict[tuple, dict[str, tuple[int, int]] | None]" = OrderedDict()
PLACED_KEPT = 16


def _placed(positions: Mapping[str, Point], order: list[str], cols: int, rows: int) -> dict[str, tuple[int, int]] | None:
    key = (tuple(order), tuple(positions.get(n) for n in order), cols, rows)
    if key in _PLACED:
        _PLACED.move_to_end(key)
        return _PLACED[key]
    placed = place_on_grid(dict(positions), order, cols, rows)
    _PLACED[key] = placed
    while len(_PLACED) > PLACED_KEPT:
        _PLACED.popitem(last=False)
    return placed


@dataclass
class MapDrawing:
    """What `draw_map` made: the rows, whether labels are numbers, where each node is."""

    rows: list[Row]
    numbered: bool
    cells: dict[str, tuple[int, int]] = field(default_factory=dict)  # name → (x, y) of its label
    edges: int = 0  # traffic edges drawn
    links: int = 0  # distinct sender → recipient links in the window (more than drawn when busy)


def _glyph(dx: int, dy: int, heavy: bool) -> str:
    angle = math.degrees(math.atan2(dy * 2, dx))  # a cell is about twice as tall as wide
    a = abs(angle)
    if a < 25 or a > 155:
        return "━" if heavy else "─"
    if 65 < a < 115:
        return "┃" if heavy else "│"
    return "╲" if (dx > 0) == (dy > 0) else "╱"


def _arrow(dx: int, dy: int) -> str:
    if abs(dx) >= abs(dy) * 2:
        return "▸" if dx > 0 else "◂"
    return "▾" if dy > 0 else "▴"


def _line(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    """Bresenham's cells from (x0, y0) to (x1, y1), both ends included."""
    out = []
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err = dx + dy
    while True:
        out.append((x0, y0))
        if x0 == x1 and y0 == y1:
            return out
        e2 = 2 * err
        if e2 >= dy:
            err += dy
            x0 += sx
        if e2 <= dx:
            err += dx
            y0 += sy


def draw_map(
    width: int,
    height: int,
    order: list[str],
    positions: Mapping[str, Point],
    may_read: set[tuple[str, str]],
    traffic: Counter[tuple[str, str]],
    readers: Mapping[str, set[str]],
    selected: str | None,
) -> MapDrawing | None:
    """The graph in `width` × `height` cells (see the module docstring); None if it cannot fit.

    `may_read` holds (reader, sender) pairs; `traffic` (sender, recipient or "*") →
    messages; `readers[sender]` who may read the sender's outbox (for broadcasts)."""
    if width < 8 or height < 3 or not order or len(order) > MAX_NODES:
        return None
    longest = max(len(n) for n in order)
    placed = None
    numbered = False
    for numbered, label_w in ((False, min(longest, 14) + 1), (True, len(str(len(order))) + 1)):
        cw = label_w + 2  # a label and room for edges between labels
        cols, rows = width // cw, max(1, (height + 1) // 2)
        placed = _placed(positions, order, cols, rows)
        if placed is not None:
            break
    if placed is None:
        return None
    # Spread the used grid over the whole pane.
    used_c = max(c for c, _ in placed.values()) + 1
    used_r = max(r for _, r in placed.values()) + 1
    labels: dict[str, str] = {}
    for i, name in enumerate(order):
        text = str(i + 1) if numbered else (name if len(name) <= 14 else name[:13] + "…")
        labels[name] = "●" + text
    cells: dict[str, tuple[int, int]] = {}
    for name, (c, r) in placed.items():
        lw = len(labels[name])
        x = round(c * (width - lw) / max(1, used_c - 1)) if used_c > 1 else (width - lw) // 2
        y = round(r * (height - 1) / max(1, used_r - 1)) if used_r > 1 else height // 2
        cells[name] = (max(0, min(width - lw, x)), max(0, min(height - 1, y)))

    chars = [[" "] * width for _ in range(height)]
    styles = [[""] * width for _ in range(height)]
    taken: set[tuple[int, int]] = set()
    for name, (x, y) in cells.items():
        for i in range(len(labels[name])):
            taken.add((x + i, y))

    def centre(name: str) -> tuple[int, int]:
        x, y = cells[name]
        return x + len(labels[name]) // 2, y

    near = set()
    if selected is not None:
        near = {a for a, b in may_read if b == selected} | {b for a, b in may_read if a == selected}
        near |= {t for (f, t) in traffic if f == selected} | {f for (f, t) in traffic if t == selected}
        if traffic.get((selected, BROADCAST)):
            near |= readers.get(selected, set())
        near.discard(selected)

    # Faint edges: each pair once.
    pairs = {tuple(sorted(p)) for p in may_read if p[0] in cells and p[1] in cells and p[0] != p[1]}
    if len(pairs) > FAINT_PER_NODE * len(cells):
        pairs = {p for p in pairs if selected in p}
    for a, b in sorted(pairs):
        hot = selected in (a, b)
        (x0, y0), (x1, y1) = centre(a), centre(b)
        for (x, y) in _line(x0, y0, x1, y1):
            if (x, y) not in taken and chars[y][x] == " ":
                chars[y][x] = "·"
                styles[y][x] = "near" if hot else "faint"

    # Traffic: sender → recipient, a broadcast to each reader.
    flows: Counter[tuple[str, str]] = Counter()
    for (frm, to), n in traffic.items():
        if frm not in cells:
            continue
        if to == BROADCAST:
            for r in readers.get(frm, ()):
                if r in cells and r != frm:
                    flows[(frm, r)] += n
        elif to in cells and to != frm:
            flows[(frm, to)] += n
    drawn = 0
    links = len(flows)
    keep = max(24, int(FLOWS_PER_NODE * len(cells)))
    if links > keep:
        busiest = sorted(flows.items(), key=lambda kv: (-kv[1], kv[0]))
        flows = Counter(dict(busiest[:keep] + [kv for kv in busiest[keep:] if selected in kv[0]]))
    for (frm, to), n in sorted(flows.items(), key=lambda kv: (kv[1], kv[0])):  # heavy ones on top
        hot = selected in (frm, to)
        style = "hot" if hot else ("heavy" if n >= BOLD_FROM else "flow")
        (x0, y0), (x1, y1) = centre(frm), centre(to)
        path = [p for p in _line(x0, y0, x1, y1) if p not in taken]
        if not path:
            continue
        glyph = _glyph(x1 - x0, y1 - y0, n >= HEAVY_FROM)
        for (x, y) in path:
            chars[y][x] = glyph
            styles[y][x] = style
        ax, ay = path[-1]
        chars[ay][ax] = _arrow(x1 - x0, y1 - y0)
        drawn += 1

    for name, (x, y) in cells.items():
        style = "selected" if name == selected else ("neighbour" if name in near else "node")
        for i, ch in enumerate(labels[name]):
            chars[y][x + i] = ch
            styles[y][x + i] = style

    rows: list[Row] = []
    for y in range(height):
        row: Row = []
        run, run_style = [], styles[y][0]
        for x in range(width):
            if styles[y][x] != run_style:
                row.append(("".join(run), run_style))
                run, run_style = [], styles[y][x]
            run.append(chars[y][x])
        row.append(("".join(run), run_style))
        rows.append(row)
    return MapDrawing(rows, numbered, cells, drawn, links)


def style_map(base: Mapping[str, Style]) -> dict[str, Style]:
    """The drawing's style names from the pane's own styles (`muted`, `accent`, `primary`, `warn`)."""
    muted, accent, primary, warn = (base.get(k, Style()) for k in ("muted", "accent", "primary", "warn"))
    return {
        "": Style(),
        "faint": muted + Style(dim=True),
        "near": primary,
        "flow": accent,
        "heavy": accent + Style(bold=True),
        "hot": warn + Style(bold=True),
        "node": Style(bold=True),
        "neighbour": primary + Style(bold=True),
        "selected": primary + Style(bold=True, reverse=True),
    }
