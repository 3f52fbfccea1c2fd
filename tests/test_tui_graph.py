"""The message graph as a graph: layout, drawing, and the pane's three views."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from lemming.tui.widgets.graph_layout import place_on_grid, spring_layout
from lemming.tui.widgets.graph_map import draw_map
from tests.test_tui_behaviour import SIZE, make_app
from tests.support.app_driver import advance


def _text(rows) -> list[str]:  # noqa: ANN001
    return ["".join(t for t, _ in row) for row in rows]


def _styled(rows, style: str) -> set[tuple[int, int]]:  # noqa: ANN001
    out = set()
    for y, row in enumerate(rows):
        x = 0
        for text, s in row:
            if s == style:
                out.update((x + i, y) for i in range(len(text)))
            x += len(text)
    return out


def test_layout_is_deterministic_and_pulls_linked_agents_together() -> None:
    names = [f"n{i}" for i in range(12)]
    # two cliques of six joined by one link
    edges = [(a, b) for g in (names[:6], names[6:]) for a in g for b in g if a < b] + [("n0", "n6")]
    pos = spring_layout(names, edges, aspect=2.0)
    assert pos == spring_layout(names, edges, aspect=2.0)
    assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y in pos.values())

    def d(a: str, b: str) -> float:
        (x0, y0), (x1, y1) = pos[a], pos[b]
        return ((x0 - x1) ** 2 + (y0 - y1) ** 2) ** 0.5

    inside = [d(a, b) for g in (names[1:6], names[7:]) for a in g for b in g if a < b]
    across = [d(a, b) for a in names[1:6] for b in names[7:]]
    assert max(inside) < min(across)
    cells = place_on_grid(pos, names, 4, 3)
    assert cells is not None and len(set(cells.values())) == 12
    assert place_on_grid(pos, names, 3, 3) is None  # nine cells for twelve agents


def test_drawing_shows_permissions_faint_and_traffic_bold_with_arrows() -> None:
    order = ["alice", "bob", "carol"]
    pos = {"alice": (0.0, 0.0), "bob": (1.0, 0.0), "carol": (0.0, 1.0)}
    may_read = {("bob", "alice"), ("carol", "alice")}  # bob and carol read alice
    traffic = Counter({("alice", "bob"): 3})
    d = draw_map(60, 9, order, pos, may_read, traffic, {"alice": {"bob", "carol"}}, None)
    assert d is not None and not d.numbered and (d.edges, d.links) == (1, 1)
    text = _text(d.rows)
    ax, ay = d.cells["alice"]
    bx, by = d.cells["bob"]
    cx, cy = d.cells["carol"]
    assert text[ay][ax:ax + 6] == "●alice" and text[by][bx:bx + 4] == "●bob" and text[cy][cx:cx + 6] == "●carol"
    # alice → bob: a bold run of ─ on their row, ending in ▸ just before bob's label
    row = text[ay]
    assert ay == by and row[ax + 6:bx] == "─" * (bx - ax - 7) + "▸"
    assert _styled(d.rows, "heavy") >= {(x, ay) for x in range(ax + 6, bx)}
    # alice — carol: may read, no traffic: faint dots only
    between = [text[y][ax + 3] for y in range(ay + 1, cy)]
    assert between and set(between) == {"·"}
    assert not _styled(d.rows, "flow") and not _styled(d.rows, "hot")
    # carol selected: her edge is highlighted, alice is her neighbour, bob is not
    d2 = draw_map(60, 9, order, pos, may_read, traffic, {"alice": {"bob", "carol"}}, "carol")
    assert (ax, ay) in _styled(d2.rows, "neighbour") and (bx, by) not in _styled(d2.rows, "neighbour")
    assert (cx, cy) in _styled(d2.rows, "selected") and _styled(d2.rows, "near")
    # a broadcast reaches every reader: alice → bob and alice → carol
    d3 = draw_map(60, 9, order, pos, may_read, Counter({("alice", "*"): 1}), {"alice": {"bob", "carol"}}, None)
    assert d3.edges == 2 and "▾" in "".join(text_row[ax + 3] for text_row in _text(d3.rows))
    # small: the labels become roster numbers; smaller still: no graph
    small = draw_map(8, 3, order, pos, may_read, traffic, {}, None)
    assert small is not None and small.numbered and _text(small.rows)[0] == "●1───▸●2"
    assert draw_map(7, 3, order, pos, may_read, traffic, {}, None) is None


async def test_the_messages_pane_is_a_graph_then_a_matrix_then_a_list(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await advance(pilot, app, 3)
        graph = app.main.graph
        assert graph.shown == "graph" and graph.border_subtitle.startswith("graph")
        drawing = graph.drawing()
        assert set(drawing.cells) == set(app.view.order)
        screen_text = "\n".join(_text(drawing.rows))
        for name in app.view.order:
            assert f"●{name}" in screen_text
        # the traffic drawn is the view's: every sender → recipient link of the window
        assert drawing.links == len({(f, t) for (f, t) in app.view.recent_volumes() if t != "*"}
                                    | {(f, r) for (f, t) in app.view.recent_volumes() if t == "*"
                                       for r in app.engine.org.readers_of(f) if r != f})
        await pilot.press("5", "m")
        assert graph.shown == "matrix" and graph.border_subtitle.startswith("matrix")
        await pilot.press("m")
        assert graph.shown == "list" and graph.border_subtitle.startswith("list")
        await pilot.press("m")
        assert graph.shown == "graph"
        await pilot.press("q")


async def test_forty_agents_fit_a_small_pane_and_seventy_show_the_matrix(tmp_path: Path) -> None:
    from lemming.tui.bench.ui import make_storm_org

    for n, shown in ((40, "graph"), (70, "matrix")):
        org = make_storm_org(tmp_path / f"org{n}", n)
        app = make_app(org, tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await advance(pilot, app, 1)
            await pilot.press("5")
            await pilot.pause()
            graph = app.main.graph
            assert graph.mode == "graph" and graph.shown == shown
            if shown == "graph":  # forty labels in 78 × 19 cells, none overlapping
                cells = graph.drawing().cells
                assert set(cells) == set(app.view.order)
                spans = [(y, x + i) for name, (x, y) in cells.items() for i in range(len(name) + 1)]
                assert len(spans) == len(set(spans))
            else:
                assert "too many agents for a graph" in graph.border_subtitle
            await pilot.press("q")


def test_heat_levels_scale_to_the_busiest_cell() -> None:
    from lemming.tui.widgets.graph_matrix import heat_bounds, heat_level, heat_scale, matrix_layout

    bounds = heat_bounds(12)
    assert bounds == [3, 6, 9, 12]
    assert [heat_level(n, bounds) for n in (1, 3, 4, 9, 12)] == [1, 1, 2, 3, 4]
    assert heat_scale(bounds) == [(1, "1–3"), (2, "4–6"), (3, "7–9"), (4, "10–12")]
    # a quiet window: few levels, the top ones (one message is not the faintest colour)
    assert heat_bounds(2) == [1, 2] and heat_level(1, [1, 2]) == 3 and heat_level(2, [1, 2]) == 4
    # forty agents in a 70-cell pane: one cell a reader, numbers written downwards
    layout = matrix_layout(70, [f"agent{i:03}" for i in range(40)])
    assert layout.width <= 70 and layout.cell == 1 and layout.digit_rows == 2
    # the demo's eight agents at 80×24: counts in three-cell columns, numbers across
    demo = matrix_layout(78, ["analyst", "ceo", "engineer", "human", "manager", "planner", "qa", "researcher"])
    assert demo.cell == 3 and demo.across


async def test_the_matrix_is_a_heat_map_with_the_selected_agent_marked(org_dir: Path, tmp_path: Path) -> None:
    app = make_app(org_dir, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await advance(pilot, app, 3)
        graph = app.main.graph
        await pilot.press("5", "m")
        await pilot.pause()
        assert graph.shown == "matrix" and "heat-map" in graph.border_subtitle
        width = graph.size.width
        layout = graph.matrix_layout()
        assert layout.width <= width  # every reader's column fits: no sideways scrolling
        header = graph.render_header(width)
        assert len(header) == graph.header_height
        assert all(t.cell_len <= width for t in header)
        cells = graph._cells
        order = app.view.order
        assert any(cells.values()), "the run sent messages"
        # each count sits in its reader's column, in the style of its level
        heat = graph._heat()
        for i, sender in enumerate(order):
            row = graph.render_row(i, width)
            for j, reader in enumerate(order):
                x = layout.frozen + j * layout.cell
                chunk = row.plain[x:x + layout.cell]
                n = cells.get(sender, {}).get(reader, 0)
                if n and reader != sender:
                    assert chunk.strip() == (str(min(n, 99)) if layout.cell == 3 else chunk.strip())
                    styles = {s.style for s in row.spans if s.start <= x + layout.cell - 1 < s.end}
                    level = graph._cell(n, heat, layout.cell)[1]
                    assert level in styles
        # the selected agent's column carries the cursor's background in every row
        selected = graph.selected
        col = order.index(selected)
        marked = graph._marked()
        for i, sender in enumerate(order):
            if sender == selected:
                continue
            row = graph.render_row(i, width)
            x = layout.frozen + col * layout.cell
            if cells.get(sender, {}).get(selected):
                continue  # a count keeps its heat colour
            assert any(s.start <= x < s.end and marked.bgcolor == (s.style.bgcolor if hasattr(s.style, "bgcolor") else None)
                       for s in row.spans), (sender, row.spans)
        await pilot.press("q")
