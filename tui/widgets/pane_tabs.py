"""The tab strip of the compact layout (small terminals show one pane at a time).

Not focusable: digits 1-5 or tab switch panes, a click works where there is a mouse.
"""

from __future__ import annotations

from rich.text import Text
from textual.events import Click
from textual.message import Message
from textual.widget import Widget

PANES: tuple[tuple[str, str], ...] = (
    ("roster", "Agents"),
    ("stream", "Stream"),
    ("credits", "Credits"),
    ("timeline", "Timeline"),
    ("graph", "Messages"),
)


class PaneTabs(Widget):
    """`1 Agents  2 Stream  3 Credits  4 Timeline  5 Messages`, the active one marked."""

    DEFAULT_CSS = """
    PaneTabs {
        height: 1;
        background: $panel;
        color: $text-muted;
    }
    PaneTabs > .pane-tabs--active { background: $primary; color: $background; text-style: bold; }
    PaneTabs > .pane-tabs--key { color: $accent; text-style: bold; }
    """

    COMPONENT_CLASSES = {"pane-tabs--active", "pane-tabs--key"}

    class Chosen(Message):
        def __init__(self, pane: str) -> None:
            super().__init__()
            self.pane = pane

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.active = PANES[0][0]
        self._spans: list[tuple[int, int, str]] = []

    def activate(self, pane: str) -> None:
        if pane != self.active:
            self.active = pane
            self.refresh()

    def render(self) -> Text:
        active = self.get_component_rich_style("pane-tabs--active")
        key = self.get_component_rich_style("pane-tabs--key")
        t = Text(no_wrap=True, overflow="ellipsis")
        self._spans = []
        for i, (pane, label) in enumerate(PANES, 1):
            start = t.cell_len
            if pane == self.active:
                t.append(f" {i} {label} ", active)
            else:
                t.append(" ")
                t.append(str(i), key)
                t.append(f" {label} ")
            self._spans.append((start, t.cell_len, pane))
        return t

    def on_click(self, event: Click) -> None:
        for start, end, pane in self._spans:
            if start <= event.x < end:
                self.post_message(self.Chosen(pane))
                return
