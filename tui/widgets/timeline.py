"""The tick timeline: one row per tick — who fired, who failed, messages, cost, operator actions.

The last row is the tick that runs next (or is running): it is marked ▶ while it
runs and ⏸ while the run is paused, and lists what the operator queued for it
(an injected message shows there as ✉→recipients until it lands); when a row is
too narrow, the agents' names give way to the operator's actions. The cursor
follows the newest tick unless the operator moved it up to look at history.
"""

from __future__ import annotations

from rich.text import Text

from lemming.tui.run_source import RunSource

from lemming.tui.model import RunView, TickRow
from lemming.tui.widgets.credits import money
from lemming.tui.widgets.line_table import LineTable


def due_at(source: RunSource, tick: int) -> list[str]:
    """Agents whose schedule fires at `tick` (t % n == phase_offset % n)."""
    out = []
    for name, a in sorted(source.org.agents.items()):
        s = a.resume.schedule
        n = s.run_every_n_ticks
        if tick % n == s.phase_offset % n:
            out.append(name)
    return out


class Timeline(LineTable):
    """Every tick of the run (the newest 10,000), newest at the bottom."""

    DEFAULT_CSS = """
    Timeline { height: 1fr; }
    """

    grow_in_chunks = 32

    def __init__(self, source: RunSource, view: RunView, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.source = source
        self.view = view
        self.border_title = "Timeline"
        self.follow = True
        self._first_tick: int | None = None

    def row_count(self) -> int:
        return len(self.view.rows)

    @property
    def selected_tick(self) -> int | None:
        rows = self.view.rows
        if not rows:
            return None
        return rows[min(self.cursor_row, len(rows) - 1)].tick

    def row_at(self, index: int) -> TickRow:
        return self.view.rows[index]

    def render_header(self, width: int) -> list[Text]:
        t = Text(f"{'  tick':<9}{'fired':>6}{'✗':>3}{'msgs':>5}{'spend':>9}  agents", self.style("header"))
        return [t]

    def render_row(self, index: int, width: int) -> Text:
        row = self.view.rows[index]
        t = Text()
        if row.status == "running":
            t.append("▶ ", self.style("accent"))
        elif row.status == "next":
            paused = self.source.state.paused
            t.append("⏸ " if paused else "· ", self.style("warn") if paused else self.style("muted"))
        else:
            t.append("  ")
        t.append(f"{row.tick:>6} ", self.style("primary") if row.status in ("running", "next") else None)
        if row.status == "done":
            t.append(f"{len(row.fired):>6}")
            t.append(f"{len(row.failed):>3}", self.style("error") if row.failed else self.style("muted"))
            t.append(f"{row.messages:>5}")
            t.append(f"{money(row.spend):>9}  ", self.style("muted"))
        elif row.status == "running":
            n = len(row.firing) - len(row.skipped)
            t.append(f"{row.finished:>3}/{n:<2}", self.style("accent"))
            t.append(f"{len(row.failed):>3}", self.style("error") if row.failed else self.style("muted"))
            t.append(f"{'':>5}{'running':>9}  ", self.style("accent"))
        elif row.status == "aborted":
            t.append(f"{'aborted — nothing committed':<32}", self.style("error"))
        else:
            state = self.source.state
            if state.stopped is not None:
                label = "stopped"
            elif state.paused:
                label = "paused"
            else:
                label = "next"
            t.append(f"{'':>14}{label:>9}  ", self.style("warn") if state.paused else self.style("muted"))
        agents = Text()
        self._agents(row, agents)
        op = Text()
        if row.operator:
            op.append(" op:", self.style("accent"))
            for note in row.operator:
                op.append(f" {note}", self.style("accent"))
        # What the operator did is rarer and more telling than who fired: when the row is
        # too narrow for both, the list of agents gives way (ending in …), not the op notes.
        room = width - t.cell_len - op.cell_len
        if op and agents.cell_len > room:
            agents.truncate(max(0, room - 1))
            agents.append("…", self.style("muted"))
        t.append_text(agents)
        t.append_text(op)
        return t

    def _agents(self, row: TickRow, t: Text) -> None:
        failed = set(row.failed)
        if row.status == "done":
            names = list(row.fired)
        elif row.status == "running":
            names = [n for n in row.firing if n not in row.skipped]
        elif row.status == "next":
            names = due_at(self.source, row.tick)
        else:
            names = list(row.firing)
        # Failures first: with forty agents the end of the line may be cut off.
        names.sort(key=lambda n: n not in failed)
        for n in names:
            if n in failed:
                t.append(f"✗{n} ", self.style("error"))
            elif row.status == "next":
                t.append(f"{n} ", self.style("muted"))
            else:
                t.append(f"{n} ")
        for n, reason in row.skipped.items():
            t.append(f"⊘{n}({reason}) ", self.style("muted"))

    # --- updates -------------------------------------------------------------------------

    def refresh_ticks(self, ticks: set[int]) -> None:
        """Repaint the rows of these ticks; keep following the newest tick if following."""
        rows = self.view.rows
        first = rows[0].tick if rows else None
        old_count = self._row_count
        at_end = self.cursor_row >= old_count - 1
        if first != self._first_tick:
            # The oldest rows were dropped: every index moved.
            self._first_tick = first
            self.invalidate(None)
        else:
            indexes = set()
            for tick in ticks:
                i = self._index_of_tick(tick)
                if i is not None:
                    indexes.add(i)
            self.invalidate(indexes)
        if self.follow and at_end and self._row_count:
            self.cursor_row = self._row_count - 1
            self.scroll_cursor_visible()

    def _index_of_tick(self, tick: int) -> int | None:
        rows = self.view.rows
        if not rows:
            return None
        # Rows are mostly consecutive ticks: guess, then check.
        guess = tick - rows[0].tick
        if 0 <= guess < len(rows) and rows[guess].tick == tick:
            return guess
        for i in range(len(rows) - 1, -1, -1):
            if rows[i].tick == tick:
                return i
        return None

    def watch_cursor_row(self, old: int, new: int) -> None:
        super().watch_cursor_row(old, new)
        self.follow = new >= self.row_count() - 1
