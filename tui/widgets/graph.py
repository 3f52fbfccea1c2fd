"""The message graph: who may read whom, and who actually sent to whom over the last ticks.

Two views of the same graph (`m` switches):

* list — one row per agent: the outboxes it reads (←) and where its messages went
  in the last ticks with counts (→ qa 3 · all 2); readable with 6 agents or 40.
* matrix — senders down, readers across: `·` the reader may read the sender's
  outbox, a number is how many of the sender's recent messages reached it (a
  broadcast counts for every reader), blank means no permission.
"""

from __future__ import annotations

from collections import Counter

from rich.text import Text
from textual.binding import Binding

from lemming.tui.run_source import RunSource

from lemming.tui.model import BROADCAST, RECENT_TICKS, RunView
from lemming.tui.widgets.line_table import AgentTable


class MessageGraph(AgentTable):
    """Permissions and recent traffic between agents."""

    DEFAULT_CSS = """
    MessageGraph { height: 1fr; }
    """

    BINDINGS = [Binding("m", "toggle_matrix", "List/matrix", id="graph.matrix")]

    def __init__(self, source: RunSource, view: RunView, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(source, view, id=id, classes=classes)
        self.matrix = False
        self._volumes: Counter[tuple[str, str]] = Counter()
        self._readers: dict[str, set[str]] = {}
        self._reads: dict[str, list[str]] = {}
        self._sent: dict[str, list[tuple[str, int]]] = {}
        self._title()

    def _title(self) -> None:
        self.border_title = "Messages"
        hint = " · ←→ scroll" if self.matrix else ""
        self.border_subtitle = f"{'matrix' if self.matrix else 'list'} · last {RECENT_TICKS} ticks · m{hint}"

    @property
    def header_height(self) -> int:  # type: ignore[override]
        return 2 if self.matrix and self._legend() else 1

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
        self.matrix = not self.matrix
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

    def refresh_graph(self) -> None:
        self.recompute()
        self.invalidate(None, header=True)

    # --- list view -----------------------------------------------------------------------

    def _name_w(self) -> int:
        return min(14, max([5] + [len(n) for n in self.view.order]))

    def render_header(self, width: int) -> list[Text]:
        name_w = self._name_w()
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
