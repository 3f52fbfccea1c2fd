"""LineTable: the base of the list-shaped panes (roster, credits, timeline, graph).

A Line API widget: it paints only the rows on screen, caches each rendered row
until the pane says it changed (`invalidate`), and keeps a fixed header at the
top. One row may carry the cursor (arrows, page keys, home/end, mouse click).
Subclasses say how many rows there are and how to draw one at a given width;
they never touch Textual's layout per update, which keeps a 100-agent roster
cheap to refresh several times a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from lemming.tui.messages import PaneFailed

if TYPE_CHECKING:
    from lemming.tui.model import RunView
    from lemming.tui.run_source import RunSource


class LineTable(ScrollView, can_focus=True):
    """A scrollable list of one-line rows with a header and a cursor."""

    DEFAULT_CSS = """
    LineTable {
        height: 1fr;
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
    }
    LineTable > .line-table--header {
        color: $text-muted;
        text-style: bold;
    }
    LineTable > .line-table--cursor {
        background: $block-cursor-blurred-background;
        color: $block-cursor-blurred-foreground;
    }
    LineTable:focus > .line-table--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
        text-style: $block-cursor-text-style;
    }
    LineTable > .line-table--muted { color: $text-muted; }
    LineTable > .line-table--ok { color: $success; }
    LineTable > .line-table--warn { color: $warning; }
    LineTable > .line-table--error { color: $error; text-style: bold; }
    LineTable > .line-table--accent { color: $accent; }
    LineTable > .line-table--primary { color: $primary; }
    LineTable > .line-table--bar { color: $success; }
    LineTable > .line-table--bar-low { color: $warning; }
    LineTable > .line-table--bar-empty { color: $error; }
    LineTable > .line-table--track { color: $text-muted; }
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "line-table--header",
        "line-table--cursor",
        "line-table--muted",
        "line-table--ok",
        "line-table--warn",
        "line-table--error",
        "line-table--accent",
        "line-table--primary",
        "line-table--bar",
        "line-table--bar-low",
        "line-table--bar-empty",
        "line-table--track",
    }

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False, id="list.up"),
        Binding("down,j", "cursor(1)", "Down", show=False, id="list.down"),
        Binding("pageup", "page(-1)", "Page up", show=False, id="list.page_up"),
        Binding("pagedown", "page(1)", "Page down", show=False, id="list.page_down"),
        Binding("home", "cursor_to(0)", "First", show=False, id="list.first"),
        Binding("end", "cursor_to(-1)", "Last", show=False, id="list.last"),
    ]

    #: Number of fixed header lines (0 for none).
    header_height: ClassVar[int] = 1
    cursor_row: reactive[int] = reactive(0, init=False)

    class CursorMoved(Message):
        """The cursor moved to `row` (posted by every LineTable)."""

        def __init__(self, table: "LineTable", row: int) -> None:
            super().__init__()
            self.table = table
            self.row = row

        @property
        def control(self) -> "LineTable":
            return self.table

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._cache: dict[int, Strip] = {}
        self._header_cache: list[Strip] | None = None
        self._row_count = 0
        self._styles: dict[str, Style] = {}
        self._base: Style | None = None
        self._failed = False
        self._paint: tuple[int, int, int, int, int] | None = None  # (width, full width, scroll y, rows, header) while repainting

    # --- what subclasses provide ---------------------------------------------------------

    def row_count(self) -> int:
        return 0

    def render_row(self, index: int, width: int) -> Text:
        return Text()

    def render_header(self, width: int) -> list[Text]:
        return []

    def content_width(self, width: int) -> int:
        """How wide rows are drawn; wider than the pane means horizontal scrolling."""
        return width

    #: Columns on the left that stay put while scrolling horizontally (row labels).
    frozen_columns: int = 0

    @property
    def row_width(self) -> int:
        """Cells a row has on screen: the pane's width less its vertical scrollbar (a row
        drawn as wide as the pane loses its last cell under the scrollbar)."""
        return max(0, self.size.width - self.scrollbar_size_vertical)

    # --- styles --------------------------------------------------------------------------

    def style(self, name: str) -> Style:
        """A partial rich style of a component class, e.g. style("error")."""
        s = self._styles.get(name)
        if s is None:
            s = self.get_component_rich_style(f"line-table--{name}")
            self._styles[name] = s
        return s

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._cache.clear()
        self._header_cache = None
        self._base = None

    @property
    def base_style(self) -> Style:
        """The widget's own rich style (computing it walks the DOM: once per style change)."""
        if self._base is None:
            self._base = self.rich_style
        return self._base

    # --- updating ------------------------------------------------------------------------

    def invalidate(self, rows: "set[int] | list[int] | None" = None, *, header: bool = False) -> None:
        """Forget rendered rows (all when `rows` is None) and repaint what is on screen."""
        count = self.row_count()
        height = self._virtual_height(count)
        vwidth = self._virtual_width(self.row_width)
        if count != self._row_count or self.virtual_size.height != height or self.virtual_size.width != vwidth:
            self._row_count = count
            self.virtual_size = Size(vwidth, height)
            if self.cursor_row >= count:
                self.cursor_row = max(0, count - 1)
            rows = None
        if header:
            self._header_cache = None
        if rows is None:
            self._cache.clear()
            self._header_cache = None
            self.refresh()
            return
        top = int(self.scroll_offset.y)
        visible = range(top, top + max(0, self.size.height - self.header_height))
        for r in rows:
            self._cache.pop(r, None)
            if r in visible:
                self.refresh_line(r + self.header_height)
        if header:
            self.refresh_lines(top, self.header_height)

    #: Grow the scrollable height this many rows at a time (0: exactly the rows). A change of
    #: virtual size costs a layout pass and a repaint of every scrollbar on screen, so a list
    #: that gains a row per tick (the timeline) grows in steps.
    grow_in_chunks: ClassVar[int] = 0

    def _virtual_height(self, count: int) -> int:
        rows = count + self.header_height
        pane = self.size.height
        if rows <= pane:
            # A list shorter than the pane takes the pane's height: a new row (a tick) is then
            # no change of size, and a list that fits never shows a scrollbar anyway.
            return pane
        chunk = self.grow_in_chunks
        if chunk:
            # Only once the list scrolls anyway: a short list never shows a scrollbar.
            count = -(-count // chunk) * chunk
        return count + self.header_height

    def _virtual_width(self, width: int) -> int:
        """0 while rows fit the pane (no horizontal scrolling): a resize then keeps the size."""
        full = self.content_width(width)
        return full if full > width else 0

    def on_resize(self, event: events.Resize) -> None:
        self._cache.clear()
        self._header_cache = None
        size = Size(self._virtual_width(event.size.width), self._virtual_height(self.row_count()))
        if size != self.virtual_size:
            self.virtual_size = size

    # --- painting ------------------------------------------------------------------------

    def _strip(self, text: Text, width: int) -> Strip:
        text.no_wrap = True
        text.overflow = "ellipsis"
        text.truncate(width, overflow="ellipsis", pad=True)
        segments = list(text.render(self.app.console))
        return Strip(segments, width)

    def _hscroll(self, strip: Strip, width: int, full: int) -> Strip:
        if full <= width:
            return strip
        frozen = min(self.frozen_columns, width)
        x = int(self.scroll_offset.x)
        left = strip.crop(0, frozen)
        right = strip.crop(frozen + x, frozen + x + width - frozen)
        return Strip.join([left, right]).adjust_cell_length(width, self.base_style)

    def render_lines(self, crop: Region) -> list[Strip]:
        # Width, scroll offset and row count once per repaint, not per row (the size is a
        # walk to the screen's compositor map).
        width = self.row_width
        self._paint = (width, max(width, self.content_width(width)), int(self.scroll_offset.y), self.row_count(), self.header_height)
        try:
            return super().render_lines(crop)
        finally:
            self._paint = None

    def render_line(self, y: int) -> Strip:
        if self._paint is not None:
            width, full, top, count, header = self._paint
        else:
            width = self.row_width
            full = max(width, self.content_width(width))
            top, count, header = int(self.scroll_offset.y), self.row_count(), self.header_height
        base = self.base_style
        if y < header:
            if self._header_cache is None:
                try:
                    self._header_cache = [self._strip(t, full) for t in self.render_header(full)]
                except Exception as exc:
                    return self._render_failed(exc, width)
            if y < len(self._header_cache):
                return self._hscroll(self._header_cache[y], width, full).apply_style(base)
            return Strip.blank(width, base)
        index = top + y - header
        if index < 0 or index >= count:
            return Strip.blank(width, base)
        strip = self._cache.get(index)
        if strip is None or strip.cell_length != full:  # drawn before a scrollbar came or went
            try:
                strip = self._strip(self.render_row(index, full), full)
            except Exception as exc:  # report once; keep painting the rest of the screen
                return self._render_failed(exc, width)
            self._cache[index] = strip
        strip = self._hscroll(strip, width, full).apply_style(base)
        if self.show_cursor and index == self.cursor_row:
            cursor = self.get_component_rich_style("line-table--cursor")
            if not self.has_focus:
                # Blurred: mark the row, keep its colours (bars, states) readable.
                cursor = Style(bgcolor=cursor.bgcolor)
            strip = Strip(list(Segment.apply_style(strip, post_style=cursor)), strip.cell_length)
        return strip

    def _render_failed(self, exc: Exception, width: int) -> Strip:
        if not self._failed:
            self._failed = True
            self.post_message(PaneFailed(self.id or type(self).__name__, f"{type(exc).__name__}: {exc}", exc))
        return Strip([Segment(f"⚠ {type(exc).__name__}: {exc}"[:width], self.style("error"))]).adjust_cell_length(width, self.base_style)

    # --- the cursor ----------------------------------------------------------------------

    @property
    def show_cursor(self) -> bool:
        return True

    @property
    def page_rows(self) -> int:
        return max(1, self.size.height - self.header_height)

    def watch_cursor_row(self, old: int, new: int) -> None:
        top = int(self.scroll_offset.y)
        for r in (old, new):
            if top <= r < top + self.page_rows:
                self.refresh_line(r + self.header_height)
        self.scroll_cursor_visible()
        self.post_message(self.CursorMoved(self, new))

    def scroll_cursor_visible(self) -> None:
        top = int(self.scroll_offset.y)
        r = self.cursor_row
        if r < top:
            self.scroll_to(y=r, animate=False, immediate=True)
        elif r >= top + self.page_rows:
            self.scroll_to(y=r - self.page_rows + 1, animate=False, immediate=True)

    def move_cursor(self, row: int) -> None:
        count = self.row_count()
        if count == 0:
            return
        self.cursor_row = max(0, min(count - 1, row))

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(self.cursor_row + delta)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor_row + direction * self.page_rows)

    def action_cursor_to(self, row: int) -> None:
        self.move_cursor(row if row >= 0 else self.row_count() - 1)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y >= self.header_height:
            self.move_cursor(int(self.scroll_offset.y) + offset.y - self.header_height)


class AgentTable(LineTable):
    """A LineTable with one row per agent, in the view's order (roster, credits, graph)."""

    def __init__(self, source: RunSource, view: RunView, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.source = source
        self.view = view

    def row_count(self) -> int:
        return len(self.view.order)

    def index_of(self, name: str) -> int | None:
        return self.view.positions.get(name)

    @property
    def selected(self) -> str | None:
        names = self.view.order
        if not names:
            return None
        return names[min(self.cursor_row, len(names) - 1)]

    def select(self, name: str | None) -> None:
        """Put the cursor on `name` (quietly if it is already there)."""
        if name is None:
            return
        i = self.index_of(name)
        if i is not None and i != self.cursor_row:
            self.cursor_row = i

    def refresh_agents(self, names: "set[str] | None") -> None:
        """Repaint the rows of these agents (all when None)."""
        if names is None:
            self.invalidate(None, header=True)
            return
        rows = {i for i in (self.index_of(n) for n in names) if i is not None}
        self.invalidate(rows)
