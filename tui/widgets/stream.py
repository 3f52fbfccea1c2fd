"""The token stream: the selected agent's reply as it streams, or every agent interleaved.

A reply streams as raw tokens; when its turn ends they are replaced by the turn as a
conversation (`conversation.turn_lines`: who said what to whom, Markdown rendered,
memory and tool lines dim, the notes). `v` toggles the raw reply text instead; in
"all" mode the conversation view shows each finished turn, not its tokens.

Fed once per pump with the text that arrived since the last pump, never per
token. Replies are wrapped to the pane's width here, so one-line JSON replies
stay readable without horizontal scrolling. In "all" mode each line is tagged
with its agent (`engineer │ ...`). `a` switches the mode; switched to "all", the
pane starts with the last turns the view holds, as following one agent does.

It is a Line API widget, like `Log`, with one difference that matters under a
token storm: its scrollable height is fixed (`max_lines`), with the text
anchored at the bottom like a terminal's scrollback. Appending text therefore
never changes the widget's virtual size, which in Textual means a layout pass
and a repaint of every scrollbar on the screen; only the stream's own lines are
repainted.
"""

from __future__ import annotations

from collections import deque
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from lemming.engine.events import TurnRecord
from lemming.engine.plainjson import printable

from lemming.tui.messages import StreamModeChanged
from lemming.tui.model import RunView, StreamPiece, turn_pieces
from lemming.tui.widgets.conversation import Line, line_text, turn_lines

TAG_SEP = " │ "
#: Finished turns shown when all mode is switched on (the view keeps a few per agent).
ALL_RECENT = 24


class TokenStream(ScrollView, can_focus=True):
    """Live reply text: of the selected agent, or of all agents with tagged lines."""

    DEFAULT_CSS = """
    TokenStream {
        height: 1fr;
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
    }
    TokenStream > .token-stream--tag { color: $primary; text-style: bold; }
    TokenStream > .token-stream--muted { color: $text-muted; }
    TokenStream > .token-stream--ok { color: $success; }
    TokenStream > .token-stream--error { color: $error; text-style: bold; }
    TokenStream > .token-stream--sender { color: $primary; text-style: bold; }
    TokenStream > .token-stream--header { color: $accent; }
    TokenStream > .token-stream--note { color: $text-muted; text-style: italic; }
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "token-stream--tag",
        "token-stream--muted",
        "token-stream--ok",
        "token-stream--error",
        "token-stream--sender",
        "token-stream--header",
        "token-stream--note",
    }

    BINDINGS = [
        # Short labels: the footer has 80 columns for these and the screen's keys.
        Binding("a", "toggle_mode", "One/all", tooltip="the selected agent, or all agents interleaved", id="stream.mode"),
        Binding("v", "toggle_raw", "Raw", tooltip="the raw reply text, or the conversation", id="stream.raw"),
        Binding("up,k", "scroll_up", "Up", show=False, id="stream.up"),
        Binding("down,j", "scroll_down", "Down", show=False, id="stream.down"),
        Binding("pageup", "page_up", "Page up", show=False, id="stream.page_up"),
        Binding("pagedown", "page_down", "Page down", show=False, id="stream.page_down"),
        Binding("home", "scroll_home", "Top", show=False, id="stream.top"),
        Binding("end", "scroll_end", "Bottom", show=False, id="stream.bottom"),
    ]

    def __init__(self, view: RunView, *, mode: str = "selected", max_lines: int = 1000, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.view = view
        self.mode = mode if mode in ("selected", "all") else "selected"
        self.agent: str | None = None
        self.max_lines = max_lines
        #: raw text lines (str) and rendered conversation lines (segments)
        self._lines: deque[str | Line] = deque(maxlen=max_lines)
        self.raw = False  # show replies as their raw text, not as a conversation
        self._turn_at: int | None = None  # absolute number of the current reply's first line
        self._partial = ""  # the last, unfinished line
        self._col = 0  # cells used on the current line, for wrapping
        self._styles: dict[str, Style] = {}
        self._base: Style | None = None
        self._cache: dict[int, Strip] = {}  # absolute line number -> strip, base style applied
        self._first = 0  # absolute number of _lines[0] (lines dropped so far)
        self._wrapped_at = 0
        self._placeholder = False
        self._paint: tuple[int, int, int] | None = None  # (width, height, scroll y) while a repaint runs
        self._wrap_width: int | None = None  # while a batch is fed
        self.virtual_size = Size(0, max_lines + 1)
        self._title()

    # --- looks ---------------------------------------------------------------------------

    def _title(self) -> None:
        self.border_title = "Stream"
        who = "all agents" if self.mode == "all" else (self.agent or "—")
        view = "raw" if self.raw else "conversation"
        self.border_subtitle = f"{who} · {view} · a: {'selected' if self.mode == 'all' else 'all'} · v: {'conversation' if self.raw else 'raw'}"

    def _style(self, name: str) -> Style:
        s = self._styles.get(name)
        if s is None:
            s = self._styles[name] = self.get_component_rich_style(f"token-stream--{name}")
        return s

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._cache.clear()
        self._base = None

    @property
    def base_style(self) -> Style:
        """The widget's own rich style (computing it walks the DOM: once per style change)."""
        if self._base is None:
            self._base = self.rich_style
        return self._base

    def _combined(self, name: str) -> Style:
        """The base style with a component class's style on top (what apply_style would make)."""
        key = "base+" + name
        s = self._styles.get(key)
        if s is None:
            s = self._styles[key] = self.base_style + self._style(name)
        return s

    def _palette(self) -> dict[str, Style]:
        return {name: self._style(name) for name in ("sender", "header", "muted", "note")}

    def _segments_strip(self, line: Line, width: int) -> Strip:
        """A rendered conversation line: its segments on the base style, cut or padded to `width`."""
        base = self.base_style
        return self._fitted([Segment(seg.text, base + seg.style if seg.style else base) for seg in line], width)

    def _fitted(self, segments: list[Segment], width: int) -> Strip:
        """`segments` cut or padded (base style) to exactly `width` cells."""
        base = self.base_style
        used = sum(cell_len(seg.text) for seg in segments)
        if used > width:
            segments = Segment.adjust_line_length(segments, width, base)
        elif used < width:
            segments.append(Segment(" " * (width - used), base))
        return Strip(segments, width)

    def _line_strip(self, line: str | Line, width: int) -> Strip:
        """One line as a strip of `width` cells: the tag, the separator and the body, styled.

        Built from segments directly (not through rich Text, which re-splits spans and
        re-measures): under a token storm in "all" mode every visible line is new at every
        repaint, so this runs for the whole pane several times a second.
        """
        if not isinstance(line, str):
            return self._segments_strip(line, width)
        base = self.base_style
        segments: list[Segment] = []
        start = 0
        i = line.find(TAG_SEP)
        if 0 < i <= 24:
            start = i + len(TAG_SEP)
            segments.append(Segment(line[:i], self._combined("tag")))
            segments.append(Segment(TAG_SEP, self._combined("muted")))
        body = line[start:] if start else line
        if body.startswith("✗"):
            style = self._combined("error")
        elif body.startswith("✓"):
            style = self._combined("ok")
        elif body.startswith(("──", "⟲", "▶")):
            style = self._combined("muted")
        else:
            style = base
        if body:
            segments.append(Segment(body, style))
        return self._fitted(segments, width)

    # --- the text ------------------------------------------------------------------------

    @property
    def lines(self) -> list[str]:
        """Every line held, the unfinished last one included (for tests and copying)."""
        out = [x if isinstance(x, str) else line_text(x) for x in self._lines]
        if self._partial:
            out.append(self._partial)
        return out

    @property
    def _total(self) -> int:
        """Lines shown: complete ones plus the partial one (an empty partial still takes a row)."""
        return len(self._lines) + 1

    def clear(self) -> None:
        self._first += len(self._lines) + 1
        self._lines.clear()
        self._partial = ""
        self._col = 0
        self._cache.clear()
        self.refresh()

    def write(self, data: str) -> None:
        """Append text (newlines end lines); the view follows the end if it was there."""
        if not data:
            return
        data = printable(data)  # model output: no terminal control codes reach the screen
        follow = self.scroll_offset.y >= self.max_scroll_y - 1
        parts = data.split("\n")
        self._partial += parts[0]
        for part in parts[1:]:
            if len(self._lines) == self._lines.maxlen:
                self._first += 1
            self._lines.append(self._partial)
            self._partial = part
        self._cache.pop(self._first + len(self._lines), None)  # the partial line changed
        if follow and self.scroll_offset.y != self.max_scroll_y:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    @property
    def wrap_width(self) -> int:
        w = self.scrollable_content_region.width - 1
        if w >= 20:
            return w
        # Hidden (compact layout, another tab shown): assume the pane gets the full width.
        return max(20, self.app.size.width - 4)

    def on_resize(self, event: events.Resize) -> None:
        self._cache.clear()
        width = self.wrap_width
        if width != self._wrapped_at and self.mode == "selected" and self.display:
            self.show_agent(self.agent)  # re-wrap the current reply at the new width
        self._wrapped_at = width
        self.scroll_end(animate=False, immediate=True, x_axis=False)

    def on_mount(self) -> None:
        self.scroll_end(animate=False, immediate=True, x_axis=False)

    # --- painting ------------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        # The pane's width and scroll offset, looked up once per repaint rather than per row
        # (each lookup walks to the screen and its compositor map).
        size = self.size
        self._paint = (size.width, size.height, int(self.scroll_offset.y))
        try:
            return super().render_lines(crop)
        finally:
            self._paint = None

    def render_line(self, y: int) -> Strip:
        width, height, top = self._paint or (*self.size, int(self.scroll_offset.y))
        vy = top + y
        # The text sits at the bottom of a fixed canvas of max_lines + 1 rows.
        index = vy - (self.max_lines + 1 - self._total)
        if index < 0 or index >= self._total:
            return Strip.blank(width, self.base_style)
        absolute = self._first + index
        strip = self._cache.get(absolute)
        if strip is None or strip.cell_length != width:
            line = self._lines[index] if index < len(self._lines) else self._partial
            strip = self._line_strip(line, width)
            if index < len(self._lines):
                self._cache[absolute] = strip
                if len(self._cache) > 4 * max(1, height):
                    self._cache = {k: v for k, v in self._cache.items() if k >= absolute - 2 * height}
        return strip

    # --- wrapping ------------------------------------------------------------------------

    def _newline(self) -> str:
        if self._col:
            self._col = 0
            return "\n"
        return ""

    def _wrapped(self, text: str, indent: int = 0) -> str:
        """`text` with newlines inserted so no line passes the wrap width."""
        text = printable(text)  # model output: control codes shown, never sent to the terminal
        width = self._wrap_width or self.wrap_width
        out: list[str] = []
        col = self._col
        for part in text.splitlines(keepends=True):
            nl = part.endswith("\n")
            chunk = part[:-1] if nl else part
            while chunk:
                room = width - col
                if room <= 0:
                    out.append("\n" + " " * indent)
                    col = indent
                    room = width - col
                out.append(chunk[:room])
                col += len(chunk[:room])
                chunk = chunk[room:]
            if nl:
                out.append("\n")
                col = 0
        self._col = col
        return "".join(out)

    def _line(self, text: str) -> str:
        """A whole line of its own."""
        s = self._newline() + printable(text) + "\n"
        self._col = 0
        return s

    @staticmethod
    def end_marker(rec: TurnRecord | None, text: str = "") -> str:
        if rec is None:
            return f"✗ {text or 'ended'}"
        if rec.status == "ok":
            return f"✓ ok · {rec.usage.output_tokens} tok · cost {rec.cost:.4g}"
        err = (rec.error or rec.status).replace("\n", " ")
        return f"✗ {rec.status}: {err[:300]} (enter: inspect)"

    # --- feeding -------------------------------------------------------------------------

    def feed(self, stream: dict[str, list[StreamPiece]]) -> None:
        """Append what arrived since the last pump."""
        # One width for the whole batch (looking it up walks to the screen: not once per agent).
        self._wrap_width = self.wrap_width
        try:
            if self.mode == "selected":
                pieces = stream.get(self.agent or "")
                if pieces:
                    self.write(self._selected_text(pieces))
                return
            out = [self._tagged_text(agent, pieces) for agent, pieces in stream.items()]
            if out:
                self.write("".join(out))
        finally:
            self._wrap_width = None

    def _selected_text(self, pieces: list[StreamPiece]) -> str:
        out: list[str] = []
        for p in pieces:
            if p.kind == "start":
                if self._placeholder:
                    self.clear()
                    self._placeholder = False
                out.append(self._line(f"── {self.agent} · tick {p.tick} ──"))
                self.write("".join(out))
                out.clear()
                self._turn_at = self._first + len(self._lines)
            elif p.kind == "text":
                out.append(self._wrapped(p.text))
            elif p.kind == "restart":
                out.append(self._line("⟲ retry: the reply starts over"))
            elif p.kind == "tool":
                out.append(self._line(p.text))
            elif p.kind == "end":
                rendered = None if self.raw or p.record is None else self._turn_lines(p.record)
                if rendered is not None and self._turn_at is not None and self._turn_at >= self._first:
                    out.clear()  # the raw tokens of this reply give way to the conversation
                    self._replace_from(self._turn_at, rendered)
                out.append(self._line(self.end_marker(p.record, p.text)))
                self._turn_at = None
        return "".join(out)

    def _turn_lines(self, rec: TurnRecord, width: int | None = None, indent: int = 0) -> list[Line] | None:
        return turn_lines(rec, (width or self._wrap_width or self.wrap_width) - indent, self._palette())

    def _replace_from(self, absolute: int, lines: list[Line]) -> None:
        """Drop the lines from `absolute` on (the partial one too) and put `lines` there."""
        follow = self.scroll_offset.y >= self.max_scroll_y - 1
        keep = absolute - self._first
        while len(self._lines) > keep:
            self._lines.pop()
        self._partial = ""
        self._col = 0
        for line in lines:
            if len(self._lines) == self._lines.maxlen:
                self._first += 1
            self._lines.append(line)
        self._cache = {k: v for k, v in self._cache.items() if k < absolute}
        if follow and self.scroll_offset.y != self.max_scroll_y:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    def _tagged_text(self, agent: str, pieces: list[StreamPiece]) -> str:
        tag = f"{agent[:16]:<10}{TAG_SEP}"
        indent = len(tag)
        out: list[str] = []
        for p in pieces:
            if p.kind == "text":
                if not self.raw or not p.text.strip():
                    continue  # the conversation view shows each finished turn, not its tokens
                out.append(self._newline() + tag)
                self._col = indent
                out.append(self._wrapped(p.text.strip("\n"), indent))
            else:
                if p.kind == "start":
                    body = f"▶ tick {p.tick}"
                elif p.kind == "restart":
                    body = "⟲ retry"
                elif p.kind == "tool":
                    body = p.text.strip()
                else:
                    rendered = None if self.raw or p.record is None else self._turn_lines(p.record, indent=indent)
                    if rendered:
                        self.write("".join(out) + self._newline())
                        out.clear()
                        self._append_tagged(tag, rendered)
                    body = self.end_marker(p.record, p.text)
                out.append(self._line(tag + body))
        out.append(self._newline())
        return "".join(out)

    def _append_tagged(self, tag: str, lines: list[Line]) -> None:
        """Rendered lines, each behind the agent's tag (all mode)."""
        follow = self.scroll_offset.y >= self.max_scroll_y - 1
        head = (Segment(tag[: -len(TAG_SEP)], self._style("tag")), Segment(TAG_SEP, self._style("muted")))
        for line in lines:
            if len(self._lines) == self._lines.maxlen:
                self._first += 1
            self._lines.append(head + line)
        self._cache.pop(self._first + len(self._lines), None)
        if follow and self.scroll_offset.y != self.max_scroll_y:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    # --- switching -----------------------------------------------------------------------

    def show_agent(self, name: str | None) -> None:
        """Follow another agent (selected mode): show its current or last reply."""
        self.agent = name
        self._title()
        if self.mode != "selected":
            return
        self.clear()
        self._placeholder = False
        if name is None:
            return
        a = self.view.agents.get(name)
        if a is None or (a.stream_tick is None and not a.history):
            self.write(self._line(f"── {name}: no turn yet ──"))
            self._placeholder = True
            return
        tick = a.stream_tick if a.stream_tick is not None else a.history[-1].tick
        self.write(self._line(f"── {name} · tick {tick} ──"))
        self._turn_at = self._first + len(self._lines)
        finished = a.thinking_tick is None and a.history and a.history[-1].tick == tick
        rendered = self._turn_lines(a.history[-1]) if finished and not self.raw else None
        if rendered is not None:
            self._replace_from(self._turn_at, rendered)
            out = []
        else:
            out = [self._wrapped(a.stream_text)]
        if finished:
            out.append(self._line(self.end_marker(a.history[-1])))
            self._turn_at = None
        self.write("".join(out))

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self.clear()
        self._title()
        if mode == "selected":
            self.show_agent(self.agent)
        else:
            self.write(self._line("── all agents, interleaved ──"))
            self._show_recent()

    def _show_recent(self) -> None:
        """All mode, just switched on: the last ALL_RECENT turns the view holds, oldest
        first, and the replies under way, as they would have shown had it been on."""
        order = self.view.positions
        done = sorted(
            ((rec.tick, order.get(name, 0), name, rec) for name, a in self.view.agents.items() for rec in a.history),
            key=lambda x: x[:2],
        )[-ALL_RECENT:]
        self._wrap_width = self.wrap_width
        try:
            for _, _, name, rec in done:
                self.write(self._tagged_text(name, turn_pieces(rec)))
            for name in self.view.order:
                a = self.view.agents[name]
                if a.thinking_tick is not None:
                    pieces = [StreamPiece("start", a.thinking_tick)]
                    if a.stream_tick == a.thinking_tick and a.stream_text:
                        pieces.append(StreamPiece("text", a.thinking_tick, a.stream_text))
                    self.write(self._tagged_text(name, pieces))
        finally:
            self._wrap_width = None

    def action_toggle_raw(self) -> None:
        """Raw reply text or the conversation (the inspector always has the raw reply)."""
        self.raw = not self.raw
        self.set_mode(self.mode)

    def action_toggle_mode(self) -> None:
        self.set_mode("all" if self.mode == "selected" else "selected")
        self.post_message(StreamModeChanged(self.mode))

    def action_page_up(self) -> None:
        self.scroll_page_up(animate=False)

    def action_page_down(self) -> None:
        self.scroll_page_down(animate=False)
