"""The timeline in replay mode: every recorded tick, and the cursor on the tick the panes show.

The rows are the live timeline's (who fired, failed, messages, spend, operator
actions); the tick shown is marked ▸ and the ticks after it are dimmed, since at
that point of the run they had not happened yet. A row whose tick has not been
read from the store yet shows `…` until it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

from lemming.tui.widgets.timeline import Timeline

if TYPE_CHECKING:
    from lemming.tui.model import RunView
    from lemming.tui.run_source import RunSource


class ReplayTimeline(Timeline):
    """The replay cursor's timeline (see the module docstring)."""

    def __init__(self, source: RunSource, view: RunView, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(source, view, id=id, classes=classes)
        self.follow = False
        #: The tick the panes show (None before the first one).
        self.shown_tick: int | None = None
        self.border_subtitle = "p plays"

    def on_resize(self, event) -> None:  # noqa: ANN001
        # Shown again (another tab, a new size): bring the cursor's row into view.
        self.call_after_refresh(self.scroll_cursor_visible)

    def render_row(self, index: int, width: int) -> Text:
        row = self.view.rows[index]
        if row.status == "loading":
            t = Text("  ")
            t.append(f"{row.tick:>6} ", self.style("muted"))
            t.append("…", self.style("muted"))
            return t
        t = super().render_row(index, width)
        shown = self.shown_tick
        if shown is not None:
            if row.tick == shown:
                marked = Text("▸ ", self.style("accent"))
                marked.append_text(t[2:])
                t = marked
            elif row.tick > shown:
                t.stylize(self.style("muted"))
        return t

    def refresh_ticks(self, ticks: set[int]) -> None:
        """Repaint these ticks' rows (replay never follows: the cursor is the operator's)."""
        self.invalidate({i for i in (self.view.index.index_of(t) for t in ticks) if i is not None})

    def show_tick(self, tick: int, *, cursor: int | None = None, everything: bool = False) -> None:
        """Mark `tick` as the one the panes show; the cursor goes to `cursor` (the tick the
        operator asked for, which the panes may not have reached yet), else to `tick`."""
        old = self.shown_tick
        self.shown_tick = tick
        index = self.view.index
        if everything or old is None:
            self.invalidate(None)
        else:
            lo, hi = sorted((old, tick))
            self.invalidate({i for i in (index.index_of(t) for t in range(lo, hi + 1)) if i is not None})
        i = index.index_of(tick if cursor is None else cursor)
        if i is not None and i != self.cursor_row:
            self.cursor_row = i

    def set_play(self, text: str) -> None:
        if self.border_subtitle != text:
            self.border_subtitle = text
