"""The token stream: the selected agent's reply as it streams, or every agent interleaved.

A `Log` (cheap partial-line appends, bounded by max_lines). It is fed once per
pump with the text that arrived since the last pump, never per token. Replies
are wrapped to the pane's width here, so long one-line JSON replies stay
readable without horizontal scrolling. In "all" mode each line is tagged with
its agent (`engineer │ ...`). `a` switches the mode.
"""

from __future__ import annotations

from typing import ClassVar

from rich.highlighter import Highlighter
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.widgets import Log

from engine.events import TurnRecord

from ..messages import StreamModeChanged
from ..model import RunView, StreamPiece

TAG_SEP = " │ "


class _StreamHighlighter(Highlighter):
    """Colours agent tags, markers and errors using the pane's component styles."""

    def __init__(self, log: "TokenStream") -> None:
        self.log = log
        self.styles: dict[str, Style] = {}

    def _style(self, name: str) -> Style:
        s = self.styles.get(name)
        if s is None:
            s = self.styles[name] = self.log.get_component_rich_style(f"token-stream--{name}", partial=True)
        return s

    def highlight(self, text: Text) -> None:
        plain = text.plain
        start = 0
        i = plain.find(TAG_SEP)
        if 0 < i <= 24:
            text.stylize(self._style("tag"), 0, i)
            text.stylize(self._style("muted"), i, i + len(TAG_SEP))
            start = i + len(TAG_SEP)
        body = plain[start:]
        if body.startswith("✗"):
            text.stylize(self._style("error"), start)
        elif body.startswith("✓"):
            text.stylize(self._style("ok"), start)
        elif body.startswith(("──", "⟲", "▶")):
            text.stylize(self._style("muted"), start)


class TokenStream(Log):
    """Live reply text: of the selected agent, or of all agents with tagged lines."""

    DEFAULT_CSS = """
    TokenStream {
        height: 1fr;
        overflow-x: hidden;
        scrollbar-size-vertical: 1;
    }
    TokenStream > .token-stream--tag { color: $primary; text-style: bold; }
    TokenStream > .token-stream--muted { color: $text-muted; }
    TokenStream > .token-stream--ok { color: $success; }
    TokenStream > .token-stream--error { color: $error; text-style: bold; }
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "token-stream--tag",
        "token-stream--muted",
        "token-stream--ok",
        "token-stream--error",
    }

    BINDINGS = [Binding("a", "toggle_mode", "Selected/all", id="stream.mode")]

    def __init__(self, view: RunView, *, mode: str = "selected", max_lines: int = 2000, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(highlight=True, max_lines=max_lines, id=id, classes=classes)
        self.view = view
        self.mode = mode if mode in ("selected", "all") else "selected"
        self.agent: str | None = None
        self.highlighter = _StreamHighlighter(self)
        self._col = 0  # cells used on the current (last) line, for wrapping
        self._wrapped_at = 0
        self._placeholder = False
        self._title()

    def _title(self) -> None:
        self.border_title = "Stream"
        who = "all agents" if self.mode == "all" else (self.agent or "—")
        self.border_subtitle = f"{who} · a: {'selected' if self.mode == 'all' else 'all'}"

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self.highlighter.styles.clear()

    @property
    def wrap_width(self) -> int:
        w = self.scrollable_content_region.width - 1
        if w >= 20:
            return w
        # Hidden (compact layout, another tab shown): assume the pane gets the full width.
        return max(20, self.app.size.width - 4)

    def on_resize(self) -> None:
        width = self.wrap_width
        if width != self._wrapped_at and self.mode == "selected" and self.display:
            self.show_agent(self.agent)  # re-wrap the current reply at the new width
        self._wrapped_at = width

    # --- writing -------------------------------------------------------------------------

    def _newline(self) -> str:
        if self._col:
            self._col = 0
            return "\n"
        return ""

    def _wrapped(self, text: str, indent: int = 0) -> str:
        """`text` with newlines inserted so no line passes the wrap width."""
        width = self.wrap_width
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
        s = self._newline() + text + "\n"
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

    def feed(self, stream: dict[str, list[StreamPiece]]) -> None:
        """Append what arrived since the last pump."""
        if self.mode == "selected":
            pieces = stream.get(self.agent or "")
            if pieces:
                self.write(self._selected_text(pieces))
            return
        out: list[str] = []
        for agent, pieces in stream.items():
            out.append(self._tagged_text(agent, pieces))
        if out:
            self.write("".join(out))

    def _selected_text(self, pieces: list[StreamPiece]) -> str:
        out: list[str] = []
        for p in pieces:
            if p.kind == "start":
                if self._placeholder:
                    self.clear()
                    self._col = 0
                    self._placeholder = False
                out.append(self._line(f"── {self.agent} · tick {p.tick} ──"))
            elif p.kind == "text":
                out.append(self._wrapped(p.text))
            elif p.kind == "restart":
                out.append(self._line("⟲ retry: the reply starts over"))
            elif p.kind == "end":
                out.append(self._line(self.end_marker(p.record, p.text)))
        return "".join(out)

    def _tagged_text(self, agent: str, pieces: list[StreamPiece]) -> str:
        tag = f"{agent[:16]:<10}{TAG_SEP}"
        indent = len(tag)
        out: list[str] = []
        for p in pieces:
            if p.kind == "text":
                if not p.text.strip():
                    continue
                out.append(self._newline() + tag)
                self._col = indent
                out.append(self._wrapped(p.text.strip("\n"), indent))
            else:
                if p.kind == "start":
                    body = f"▶ tick {p.tick}"
                elif p.kind == "restart":
                    body = "⟲ retry"
                else:
                    body = self.end_marker(p.record, p.text)
                out.append(self._line(tag + body))
        out.append(self._newline())
        return "".join(out)

    # --- switching -----------------------------------------------------------------------

    def show_agent(self, name: str | None) -> None:
        """Follow another agent (selected mode): show its current or last reply."""
        self.agent = name
        self._title()
        if self.mode != "selected":
            return
        self.clear()
        self._col = 0
        if name is None:
            return
        a = self.view.agents.get(name)
        self._placeholder = False
        if a is None or (a.stream_tick is None and not a.history):
            self.write(self._line(f"── {name}: no turn yet ──"))
            self._placeholder = True
            return
        tick = a.stream_tick if a.stream_tick is not None else a.history[-1].tick
        out = [self._line(f"── {name} · tick {tick} ──"), self._wrapped(a.stream_text)]
        if a.thinking_tick is None and a.history and a.history[-1].tick == tick:
            out.append(self._line(self.end_marker(a.history[-1])))
        self.write("".join(out))

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self.clear()
        self._col = 0
        self._title()
        if mode == "selected":
            self.show_agent(self.agent)
        else:
            self.write(self._line("── all agents, interleaved ──"))

    def action_toggle_mode(self) -> None:
        self.set_mode("all" if self.mode == "selected" else "selected")
        self.post_message(StreamModeChanged(self.mode))
