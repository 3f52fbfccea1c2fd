"""Where the message graph puts its agents: a force-directed layout fitted to a grid of text cells.

`spring_layout` is Fruchterman–Reingold (1991) in plain Python: every pair of agents
pushes apart, every permission (who may read whom) pulls its two ends together, and
the moves shrink as the layout cools. It starts from a circle in the roster's order,
so the same organisation always gets the same picture, and it depends only on the
permissions — traffic changes each tick and must not make the nodes jump.

`place_on_grid` then gives each agent a cell of a grid sized for its label (the
nearest free cell to where the layout put it), so labels never overlap, whatever the
pane's size; None when the pane has fewer cells than agents (the pane shows the
matrix instead). A graph library would add numpy for forty nodes; this is 60 lines.
"""

from __future__ import annotations

import math
from typing import Iterable

#: (x, y) in [0, 1] × [0, 1]
Point = tuple[float, float]


def spring_layout(nodes: list[str], edges: Iterable[tuple[str, str]], *, iterations: int = 60,
                  aspect: float = 1.0) -> dict[str, Point]:
    """Positions in the unit square for `nodes`, linked by the undirected `edges`.

    `aspect` is the drawing's width over its height (in layout units, so a wide pane
    spreads the nodes sideways). Deterministic: same input, same output."""
    n = len(nodes)
    if n == 0:
        return {}
    if n == 1:
        return {nodes[0]: (0.5, 0.5)}
    index = {name: i for i, name in enumerate(nodes)}
    # Sorted: a set's order would follow string hashing, which changes per process, and
    # the sums below (so the whole picture) depend on the order they are added in.
    links = sorted({(min(index[a], index[b]), max(index[a], index[b])) for a, b in edges
                    if a in index and b in index and a != b})
    w, h = math.sqrt(aspect), 1 / math.sqrt(aspect)
    xs = [w / 2 + w * 0.4 * math.cos(2 * math.pi * i / n) for i in range(n)]
    ys = [h / 2 + h * 0.4 * math.sin(2 * math.pi * i / n) for i in range(n)]
    k = math.sqrt(w * h / n)
    k2 = k * k
    temp = w / 10
    cool = temp / (iterations + 1)
    for _ in range(iterations):
        dx = [0.0] * n
        dy = [0.0] * n
        for i in range(n):
            xi, yi = xs[i], ys[i]
            for j in range(i + 1, n):
                ddx, ddy = xi - xs[j], yi - ys[j]
                d2 = ddx * ddx + ddy * ddy or 1e-9
                f = k2 / d2  # repulsion k²/d, along the unit vector (dd/d): k² dd / d²
                dx[i] += ddx * f
                dy[i] += ddy * f
                dx[j] -= ddx * f
                dy[j] -= ddy * f
        for i, j in links:
            ddx, ddy = xs[i] - xs[j], ys[i] - ys[j]
            d = math.sqrt(ddx * ddx + ddy * ddy) or 1e-9
            f = d / k  # attraction d²/k, along the unit vector
            dx[i] -= ddx * f
            dy[i] -= ddy * f
            dx[j] += ddx * f
            dy[j] += ddy * f
        for i in range(n):
            d = math.sqrt(dx[i] * dx[i] + dy[i] * dy[i]) or 1e-9
            step = min(d, temp)
            xs[i] = min(w, max(0.0, xs[i] + dx[i] / d * step))
            ys[i] = min(h, max(0.0, ys[i] + dy[i] / d * step))
        temp -= cool
    lo_x, hi_x, lo_y, hi_y = min(xs), max(xs), min(ys), max(ys)
    sx, sy = (hi_x - lo_x) or 1.0, (hi_y - lo_y) or 1.0
    return {name: ((xs[i] - lo_x) / sx, (ys[i] - lo_y) / sy) for i, name in enumerate(nodes)}


def place_on_grid(positions: dict[str, Point], order: list[str], cols: int, rows: int) -> dict[str, tuple[int, int]] | None:
    """A distinct (column, row) cell for each node, the nearest free one to its position;
    None when there are fewer cells than nodes."""
    if cols <= 0 or rows <= 0 or cols * rows < len(order):
        return None
    free = {(c, r) for c in range(cols) for r in range(rows)}
    out: dict[str, tuple[int, int]] = {}
    # The nodes nearest the centre choose first: they have the most neighbours to be near.
    def off_centre(name: str) -> float:
        x, y = positions.get(name, (0.5, 0.5))
        return (x - 0.5) ** 2 + (y - 0.5) ** 2

    for name in sorted(order, key=lambda n: (off_centre(n), order.index(n))):
        x, y = positions.get(name, (0.5, 0.5))
        want = (x * (cols - 1), y * (rows - 1))
        best = min(free, key=lambda cell: ((cell[0] - want[0]) ** 2 + (cell[1] - want[1]) ** 2, cell))
        free.discard(best)
        out[name] = best
    return out
