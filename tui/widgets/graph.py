"""The message graph: who may read whom, and who actually sent to whom over the last ticks.

Three views of the same graph (`m` cycles them):

* graph — the agents as nodes placed by a force-directed layout, who may read whom
  as faint edges, the recent traffic as bold edges with arrowheads, the selected
  agent's neighbourhood highlighted (graph_map.py, graph_layout.py); when the pane
  has no room for a node per agent it shows the matrix and says so.

* list — one row per agent: the outboxes it reads (←) and where its messages went
  in the last ticks with counts (→ qa 3 · all 2); readable with 6 agents or 40.
* matrix — a heat-map, senders down, readers across (graph_matrix.py): a cell's
  colour says how many of the sender's recent messages reached the reader (a
  broadcast counts for every reader; the count is written when the columns are
  wide enough), `·` the reader may read the sender's outbox, blank means no
  permission; the selected agent's row and column are marked.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.strip import Strip

from lemming.tui.run_source import RunSource

from lemming.tui.model import BROADCAST, RECENT_TICKS, RunView
from lemming.tui.widgets.graph_layout import spring_layout
from lemming.tui.widgets.graph_map import MAX_NODES, MapDrawing, draw_map, style_map
from lemming.tui.widgets.graph_matrix import (GLYPHS, MatrixLayout, abbreviations, column_labels, glyph_styles,
                                              heat_bounds, heat_level, heat_scale, heat_styles, matrix_layout)
from lemming.tui.widgets.line_table import AgentTable

#: The views `m` cycles through, in order.
MODES = ("graph", "matrix", "list")
#: Drawings kept by what they show (size, selection, agents, permissions, traffic), so
#: that stepping replay back to a tick already seen, or the traffic settling, draws nothing.
DRAWINGS_KEPT = 32


class MessageGraph(AgentTable):
    """Permissions and recent traffic between agents."""

    DEFAULT_CSS = """
    MessageGraph { height: 1fr; }
    """

    BINDINGS = [Binding("m", "toggle_matrix", "View", id="graph.matrix")]

    def __init__(self, source: RunSource, view: RunView, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(source, view, id=id, classes=classes)
        self.mode = "graph"
        self._version = 0
        self._positions: dict[str, tuple[float, float]] = {}
        self._layout_key: tuple | None = None
        self._pairs: set[tuple[str, str]] = set()
        self._drawing_key: tuple | None = None
        self._drawing: MapDrawing | None = None
        self._map_strips: dict[int, Strip] = {}
        self._drawings: OrderedDict[tuple, MapDrawing | None] = OrderedDict()
        self._content: tuple = ()
        self._may_read: set[tuple[str, str]] = set()
        self._may_read_key: frozenset[tuple[str, str]] = frozenset()
        self._org_seen: object = None
        self._volumes: Counter[tuple[str, str]] = Counter()
        self._readers: dict[str, set[str]] = {}
        self._reads: dict[str, list[str]] = {}
        self._sent: dict[str, list[tuple[str, int]]] = {}
        self._cells: dict[str, dict[str, int]] = {}  # sender → reader → messages (broadcasts counted per reader)
        self._bounds: list[int] = []
        self._matrix_key: tuple | None = None
        self._matrix_layout: MatrixLayout | None = None
        self._subtitle = ""
        self.border_title = "Messages"  # once: setting a border title repaints the pane
        self._title()

    @property
    def matrix(self) -> bool:
        """Whether the matrix is shown (chosen, or the graph has no room at this size)."""
        return self.mode == "matrix" or (self.mode == "graph" and self.drawing() is None)

    @property
    def shown(self) -> str:
        """The view on screen: graph, matrix or list."""
        return "matrix" if self.matrix else self.mode

    def _title(self) -> None:
        """The subtitle: which view is shown and why (set only when it changes: assigning a
        border title or subtitle repaints the pane, even the same text, and this is called
        while painting)."""
        nxt = MODES[(MODES.index(self.mode) + 1) % len(MODES)]
        shown = self.shown
        what = shown
        if self.mode == "graph" and shown == "matrix":
            what = "matrix: too many agents for a graph at this size"
        elif shown == "matrix":
            what = "matrix · heat-map"
        if shown == "graph" and self._drawing is not None:
            d = self._drawing
            if d.numbered:
                what += " · numbers: roster order"
            if d.links > d.edges:
                what += f" · busiest {d.edges} of {d.links} links"
        hint = " · ←→ scroll" if shown == "matrix" and self.matrix_layout().width > self.size.width else ""
        subtitle = f"{what} · last {RECENT_TICKS} ticks · m: {nxt}{hint}"
        if subtitle != self._subtitle:
            self._subtitle = subtitle
            self.border_subtitle = subtitle

    @property
    def header_height(self) -> int:  # type: ignore[override]
        if not self.matrix:
            return 1
        layout = self.matrix_layout()
        legend = layout.cell == 3 and abbreviations(self.view.order) is not None
        return 1 + layout.digit_rows + (1 if legend else 0)

    # --- graph view ----------------------------------------------------------------------

    def _layout(self, width: int, height: int) -> dict[str, tuple[float, float]]:
        """The nodes' places: recomputed when the agents or the permissions change (never
        for traffic, so that nodes stay where the operator saw them)."""
        aspect = round(width / max(1, 2 * height), 1)  # the key's value, so one key is one picture
        key = (tuple(self.view.order), frozenset(self._pairs), aspect)
        if key != self._layout_key:
            self._positions = spring_layout(list(self.view.order), self._pairs, aspect=aspect)
            self._layout_key = key
        return self._positions

    def drawing(self) -> MapDrawing | None:
        """The graph at the pane's size (cached until the data, the size or the selection change)."""
        if not self.is_mounted:
            return None
        width, height = self.size.width, self.size.height - 1
        if not self._readers and self.source.org.agents:
            self.recompute()
        key = (width, height, self.selected, self._version)
        if key != self._drawing_key:
            self._drawing_key = key
            self._map_strips.clear()
            order = list(self.view.order)
            # No layout for more agents than the pane could ever place (numbers as labels).
            cells = (width // (len(str(len(order))) + 3)) * max(1, (height + 1) // 2)
            if width < 8 or height < 3 or len(order) > min(cells, MAX_NODES):
                self._drawing = None
            else:
                positions = self._layout(width, height)
                content = (width, height, self.selected, self._layout_key, self._content)
                if content in self._drawings:
                    self._drawings.move_to_end(content)
                    self._drawing = self._drawings[content]
                else:
                    self._drawing = draw_map(width, height, order, positions, self._may_read, self._volumes,
                                             self._readers, self.selected)
                    self._drawings[content] = self._drawing
                    while len(self._drawings) > DRAWINGS_KEPT:
                        self._drawings.popitem(last=False)
            self._title()
        return self._drawing

    def _map_line(self, y: int, width: int) -> Strip:
        strip = self._map_strips.get(y)
        if strip is None:
            d = self._drawing
            base = self.base_style
            if d is None or y >= len(d.rows):
                return Strip.blank(width, base)
            styles = style_map({k: self.style(k) for k in ("muted", "accent", "primary", "warn")})
            segs = [Segment(text, base + styles.get(name, Style())) for text, name in d.rows[y]]
            strip = self._map_strips[y] = Strip(segs).adjust_cell_length(width, base)
        return strip

    def render_line(self, y: int) -> Strip:
        if self.mode == "graph":
            drawn = self.drawing() is not None
            if drawn and y >= 1:
                return self._map_line(y - 1, self.size.width)
        return super().render_line(y)

    def _virtual_height(self, count: int) -> int:
        if self.mode == "graph" and self.drawing() is not None:
            return self.size.height  # the graph fits the pane: nothing to scroll
        return super()._virtual_height(count)

    def watch_cursor_row(self, old: int, new: int) -> None:
        super().watch_cursor_row(old, new)
        if self.mode == "graph" and not self.matrix:
            self._header_cache = None
            self.refresh()  # the selected agent's neighbourhood moves with it
        elif self.matrix:
            self.invalidate(None, header=True)  # the selected agent's column is marked in every row

    def on_resize(self, event) -> None:  # noqa: ANN001
        super().on_resize(event)
        if self.mode == "graph":  # the graph may fit now, or no longer
            self.styles.overflow_x = "auto" if self.matrix else "hidden"
            self._title()

    @property
    def frozen_columns(self) -> int:  # type: ignore[override]
        return self.matrix_layout().frozen if self.matrix else 0

    def content_width(self, width: int) -> int:
        if not self.matrix:
            return width
        return self.matrix_layout().width

    def matrix_layout(self) -> MatrixLayout:
        """The matrix's columns at the pane's width (cached until the width or the agents change)."""
        order = self.view.order
        key = (self.size.width, len(order), order[0] if order else None, order[-1] if order else None)
        if key != self._matrix_key or self._matrix_layout is None:
            self._matrix_key = key
            self._matrix_layout = matrix_layout(self.size.width, order)
        return self._matrix_layout

    def action_toggle_matrix(self) -> None:
        """The next view: graph → matrix → list."""
        self.set_mode(MODES[(MODES.index(self.mode) + 1) % len(MODES)])

    def set_mode(self, mode: str) -> None:
        self.mode = mode if mode in MODES else "graph"
        self._matrix_layout = None
        # Only the matrix is wider than the pane; the list never scrolls sideways.
        self.styles.overflow_x = "auto" if self.matrix else "hidden"
        self._title()
        self.scroll_to(x=0, animate=False, immediate=True)
        self.invalidate(None, header=True)

    # --- data ----------------------------------------------------------------------------

    def recompute(self) -> None:
        """Refresh permissions and recent volumes (once per tick, not per row)."""
        org = self.source.org
        if org is not self._org_seen or not self._readers:
            # Permissions change only with the definitions (a new Org): not every tick.
            self._org_seen = org
            self._readers = {n: set(org.readers_of(n)) for n in org.agents}
            self._reads = {n: org.readable_by(n) for n in org.agents}
            self._pairs = {tuple(sorted((r, snd))) for snd, rs in self._readers.items() for r in rs if r != snd}  # type: ignore[misc]
            self._may_read = {(r, snd) for snd, rs in self._readers.items() for r in rs}
            self._may_read_key = frozenset(self._may_read)
        self._volumes = self.view.recent_volumes()
        # Per sender, so a row does not scan every pair (100 agents: a thousand pairs per row).
        sent: dict[str, list[tuple[str, int]]] = {}
        for (frm, to), c in self._volumes.items():
            sent.setdefault(frm, []).append((to, c))
        self._sent = sent
        cells: dict[str, dict[str, int]] = {}
        for frm, pairs in sent.items():
            row = cells.setdefault(frm, {})
            for to, c in pairs:
                if to == BROADCAST:
                    for r in self._readers.get(frm, ()):
                        if r != frm:
                            row[r] = row.get(r, 0) + c
                elif to != frm:
                    row[to] = row.get(to, 0) + c
        self._cells = cells
        # What a drawing shows besides the size and the selection (its cache key).
        self._content = (tuple(self.view.order), self._may_read_key, frozenset(self._volumes.items()))
        self._bounds = heat_bounds(max((c for row in cells.values() for c in row.values()), default=0))
        self._version += 1

    def refresh_graph(self) -> None:
        self.recompute()
        self.invalidate(None, header=True)
        self._title()

    # --- list view -----------------------------------------------------------------------

    def _name_w(self) -> int:
        return min(14, max([5] + [len(n) for n in self.view.order]))

    def render_header(self, width: int) -> list[Text]:
        name_w = self._name_w()
        if self.shown == "graph":
            t = Text("● agent  ", self.style("header"))
            t.append("· may read  ", self.style("muted"))
            t.append("─▸ sent", self.style("accent"))
            t.append(" (bold 2+, ━ 5+)  ", self.style("muted"))
            if self.selected:
                t.append(f"▌{self.selected}▐ selected", self.style("primary"))
            return [t]
        if not self.matrix:
            half = max(10, (width - name_w - 2) // 2)
            return [Text(f"{'agent':<{name_w}} {'reads ←':<{half}}sent →", self.style("header"))]
        return self._matrix_header()

    def render_row(self, index: int, width: int) -> Text:
        if not self._readers and self.source.org.agents:
            self.recompute()
        name = self.view.order[index]
        return self._matrix_row(index, name) if self.matrix else self._list_row(name, width)

    def _list_row(self, name: str, width: int) -> Text:
        name_w = self._name_w()
        half = max(10, (width - name_w - 2) // 2)
        t = Text()
        shown = name if len(name) <= name_w else name[: name_w - 1] + "…"
        t.append(f"{shown:<{name_w}} ", self.style("primary"))
        reads = self._reads.get(name, [])
        everyone = len(reads) >= 3 and len(reads) == len(self.source.org.agents) - 1
        if everyone:
            r = "* (everyone)"
        else:
            r = " ".join(reads) if reads else "—"
        if len(r) > half - 1:
            cut = r[: half - 6].rsplit(" ", 1)[0]
            rest = len(reads) - len(cut.split())
            r = f"{cut} +{rest}"
        t.append(f"{r:<{half}}", self.style("muted"))
        sent = list(self._sent.get(name, ()))
        if not sent:
            t.append("—", self.style("muted"))
            return t
        sent.sort(key=lambda x: (-x[1], x[0]))
        first = True
        for to, c in sent:
            if not first:
                t.append(" · ", self.style("muted"))
            first = False
            label = "all" if to == BROADCAST else to
            if to != BROADCAST and to not in self._readers.get(name, set()) and to != "operator":
                label += "!"  # addressed to an agent that may not read this outbox
            t.append(label)
            t.append(f" {c}", self.style("accent"))
        return t

    # --- matrix view ---------------------------------------------------------------------

    def _heat(self) -> list[Style]:
        layout = self.matrix_layout()
        if layout.cell == 3:
            return heat_styles(self.style("accent"), self.base_style)
        return glyph_styles(self.style("accent"))

    def _marked(self) -> Style:
        """The selected agent's column: the cursor row's background, down the matrix."""
        return Style(bgcolor=self.get_component_rich_style("line-table--cursor").bgcolor)

    def _cell(self, n: int, heat: list[Style], cell: int) -> tuple[str, Style]:
        level = heat_level(n, self._bounds)
        if cell == 3:
            return f"{min(n, 99):>2}", heat[level - 1]
        return GLYPHS[level - 1], heat[level - 1]

    def _matrix_header(self) -> list[Text]:
        layout = self.matrix_layout()
        names = self.view.order
        heat = self._heat()
        head, muted = self.style("header"), self.style("muted")
        # The key: which counts each colour (or glyph) holds.
        key = Text(f"{'messages':<{layout.frozen}}", head)
        for level, span in heat_scale(self._bounds):
            key.append(" ")
            if layout.cell == 3:  # the range in its own colour
                key.append(f" {span} ", heat[level - 1])
            else:
                key.append(GLYPHS[level - 1], heat[level - 1])
                key.append(f" {span}", muted)
        key.append("  · may read" if self._bounds else " none yet · may read", muted)
        sel = self.view.positions.get(self.selected) if self.selected else None
        marked = self._marked() + Style(bold=True)
        lines = [key]
        labels = column_labels(layout)
        corner = ("from ↓  to →", "") if len(labels) == 1 else ("from ↓", "to →")
        for i, row in enumerate(labels):
            left = corner[i] if i < len(corner) else ""
            t = Text(f"{left:<{layout.frozen}}"[: layout.frozen], head)
            for j, label in enumerate(row):
                t.append(label, marked if j == sel else head)
            lines.append(t)
        abbrev = abbreviations(names) if layout.cell == 3 else None
        if abbrev is not None:
            t = Text(" " * layout.frozen, muted)
            for j, label in enumerate(abbrev):
                t.append(f"{label:>3}", marked if j == sel else muted)
            lines.append(t)
        return lines

    def _matrix_row(self, index: int, name: str) -> Text:
        layout = self.matrix_layout()
        cell = layout.cell
        t = Text(f"{index + 1:>{layout.num_w}} ", self.style("header"))
        w = layout.name_w
        shown = name if len(name) <= w else name[: w - 1] + "…"
        t.append(f"{shown:<{w}} ", self.style("primary"))
        readers = self._readers.get(name, set())
        row = self._cells.get(name, {})
        heat = self._heat()
        sel = self.selected
        marked = self._marked()
        muted = self.style("muted")
        pad = " " * (cell - 1)
        for other in self.view.order:
            column = marked if other == sel else None
            if other == name:
                t.append(pad + "╲", muted + column if column else muted)
                continue
            n = row.get(other, 0)
            if n:
                text, style = self._cell(n, heat, cell)
                t.append(" " * (cell - len(text)), column)
                t.append(text, style)
            elif other in readers:
                t.append(pad + "·", muted + column if column else muted)
            else:
                t.append(" " * cell, column)
        return t
