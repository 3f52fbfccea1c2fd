"""The message graph: who may read whom, and who actually sent to whom over the last ticks.

Three views of the same graph (`m` cycles them):

* graph — the agents as nodes placed by a force-directed layout, who may read whom
  as faint edges, the recent traffic as bold edges with arrowheads, the selected
  agent's neighbourhood highlighted (graph_map.py, graph_layout.py); when the pane
  has no room for a node per agent it shows the matrix and says so.

* list — one row per agent: the outboxes it reads (←) and where its messages went
  in the last ticks with counts (→ qa 3 · all 2); readable with 6 agents or 40.
* matrix — senders down, readers across: `·` the reader may read the sender's
  outbox, a number is how many of the sender's recent messages reached it (a
  broadcast counts for every reader), blank means no permission.
"""

from __future__ import annotations

from collections import Counter

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.strip import Strip

from lemming.tui.run_source import RunSource

from lemming.tui.model import BROADCAST, RECENT_TICKS, RunView
from lemming.tui.widgets.graph_layout import spring_layout
from lemming.tui.widgets.graph_map import MAX_NODES, MapDrawing, draw_map, style_map
from lemming.tui.widgets.line_table import AgentTable

#: The views `m` cycles through, in order.
MODES = ("graph", "matrix", "list")


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
        self._volumes: Counter[tuple[str, str]] = Counter()
        self._readers: dict[str, set[str]] = {}
        self._reads: dict[str, list[str]] = {}
        self._sent: dict[str, list[tuple[str, int]]] = {}
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
        # Assigning a border title repaints the widget, even the same title: render_line
        # calls this, so an unconditional assignment repainted the pane every frame.
        if not getattr(self, "_titled", False):
            self.border_title = "Messages"
            self._titled = True
        nxt = MODES[(MODES.index(self.mode) + 1) % len(MODES)]
        shown = self.shown
        what = shown
        if self.mode == "graph" and shown == "matrix":
            what = "matrix: too many agents for a graph at this size"
        elif shown == "graph" and self._drawing is not None:
            d = self._drawing
            if d.numbered:
                what += " · numbers: roster order"
            if d.links > d.edges:
                what += f" · busiest {d.edges} of {d.links} links"
        hint = " · ←→ scroll" if shown == "matrix" else ""
        subtitle = f"{what} · last {RECENT_TICKS} ticks · m: {nxt}{hint}"
        if subtitle != self.border_subtitle:
            self.border_subtitle = subtitle

    @property
    def header_height(self) -> int:  # type: ignore[override]
        return 2 if self.matrix and self._legend() else 1

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
                may_read = {(r, snd) for snd, rs in self._readers.items() for r in rs}
                self._drawing = draw_map(width, height, order, self._layout(width, height), may_read, self._volumes,
                                         self._readers, self.selected)
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
            self._title()
            if drawn and y >= 1:
                return self._map_line(y - 1, self.size.width)
        return super().render_line(y)

    def _virtual_height(self, count: int) -> int:
        if self.mode == "graph" and self.drawing() is not None:
            return self.size.height  # the graph fits the pane: nothing to scroll
        return super()._virtual_height(count)

    def watch_cursor_row(self, old: int, new: int) -> None:
        super().watch_cursor_row(old, new)
        if self.mode == "graph":
            self._header_cache = None
            self.refresh()  # the selected agent's neighbourhood moves with it

    def on_resize(self, event) -> None:  # noqa: ANN001
        super().on_resize(event)
        if self.mode == "graph":  # the graph may fit now, or no longer
            self.styles.overflow_x = "auto" if self.matrix else "hidden"
            self._title()

    @property
    def frozen_columns(self) -> int:  # type: ignore[override]
        return self._name_w() + 4 if self.matrix else 0

    def content_width(self, width: int) -> int:
        if not self.matrix:
            return width
        return self._name_w() + 4 + 3 * len(self.view.order)

    def _legend(self) -> list[str] | None:
        """Two-letter column labels if they tell the agents apart, else None (numbers only)."""
        names = self.view.order
        for pick in (lambda n: n[:2], lambda n: n[-2:]):
            labels = [pick(n) for n in names]
            if len(set(labels)) == len(labels):
                return labels
        return None

    def action_toggle_matrix(self) -> None:
        """The next view: graph → matrix → list."""
        self.set_mode(MODES[(MODES.index(self.mode) + 1) % len(MODES)])

    def set_mode(self, mode: str) -> None:
        self.mode = mode if mode in MODES else "graph"
        # Only the matrix is wider than the pane; the list never scrolls sideways.
        self.styles.overflow_x = "auto" if self.matrix else "hidden"
        self._title()
        self.scroll_to(x=0, animate=False, immediate=True)
        self.invalidate(None, header=True)

    # --- data ----------------------------------------------------------------------------

    def recompute(self) -> None:
        """Refresh permissions and recent volumes (once per tick, not per row)."""
        org = self.source.org
        self._readers = {n: set(org.readers_of(n)) for n in org.agents}
        self._reads = {n: org.readable_by(n) for n in org.agents}
        self._volumes = self.view.recent_volumes()
        # Per sender, so a row does not scan every pair (100 agents: a thousand pairs per row).
        sent: dict[str, list[tuple[str, int]]] = {}
        for (frm, to), c in self._volumes.items():
            sent.setdefault(frm, []).append((to, c))
        self._sent = sent
        self._pairs = {tuple(sorted((r, snd))) for snd, rs in self._readers.items() for r in rs if r != snd}  # type: ignore[misc]
        self._version += 1

    def refresh_graph(self) -> None:
        self.recompute()
        self.invalidate(None, header=True)

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
        names = self.view.order
        cols = Text(f"{'sender ↓  reader →':<{name_w + 4}}", self.style("header"))
        for i, _ in enumerate(names, 1):
            cols.append(f"{i:>3}", self.style("header"))
        labels = self._legend()
        if labels is None:
            return [cols]
        legend = Text(f"{'':<{name_w + 4}}", self.style("muted"))
        for label in labels:
            legend.append(f"{label:>3}", self.style("muted"))
        return [cols, legend]

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

    def _matrix_row(self, index: int, name: str) -> Text:
        name_w = self._name_w()
        t = Text(f"{index + 1:>3} ", self.style("header"))
        shown = name if len(name) <= name_w else name[: name_w - 1] + "…"
        t.append(f"{shown:<{name_w}}", self.style("primary"))
        readers = self._readers.get(name, set())
        broadcast = self._volumes.get((name, BROADCAST), 0)
        for other in self.view.order:
            if other == name:
                t.append("  ╲", self.style("muted"))
                continue
            n = self._volumes.get((name, other), 0) + (broadcast if other in readers else 0)
            if n:
                t.append(f"{min(n, 99):>3}", self.style("accent"))
            elif other in readers:
                t.append("  ·", self.style("muted"))
            else:
                t.append("   ")
        return t
