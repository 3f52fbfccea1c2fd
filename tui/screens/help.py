"""The help screen (`?`): every key of the mode (from the action table) and what the state glyphs mean."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from lemming.tui.actions import LIVE, REPLAY, help_lines

LEGEND = (
    ("·", "idle"),
    ("◆", "thinking: its turn is in flight"),
    ("$", "broke: out of credits, skipped until topped up"),
    ("✗", "error: its last turn failed (enter shows why)"),
    ("–", "disabled by the operator"),
    ("×", "retired: its folder was removed"),
    ("▶ / ⏸", "timeline: the tick running / the next tick while paused"),
    ("✉→x", "timeline: an operator message that lands on that tick"),
    ("⊘x", "timeline: x was due but skipped (broke, disabled, no model)"),
)


def help_text(mode: str = LIVE) -> Text:
    """Every key of `mode` (the action table's lines, by section) and the legend."""
    keyed = help_lines(mode)
    width = max(16, max(len(line.keys) for line in keyed) + 1)
    t = Text()
    if mode == REPLAY:
        t.append("Replay: a recorded run, read-only. The header shows REPLAY (WATCH while following\n")
        t.append("a run another process is writing) and the tick the panes show.\n\n", "italic")
    section = None
    for line in keyed:
        if line.section != section:
            t.append(("\n" if section else "") + line.section + "\n", "bold underline")
            section = line.section
        t.append(f"  {line.keys:<{width}}", "bold")
        t.append(line.what + "\n")
    t.append("\nStates and marks\n", "bold underline")
    for glyph, what in LEGEND:
        t.append(f"  {glyph:<{width}}", "bold")
        t.append(what + "\n")
    if mode == REPLAY:
        t.append(f"  {'▸':<{width}}", "bold")
        t.append("timeline: the tick the panes show; later ticks are dimmed\n")
        return t
    t.append("\nKeys are letters, digits, space and arrows so they work over SSH and in tmux;\n")
    t.append("the mouse is optional (--no-mouse turns it off).\n")
    t.append("Remap keys in $XDG_CONFIG_HOME/lemming/tui.json (else ~/.config/lemming/tui.json),\n")
    t.append('e.g. {"keymap": {"run.step": "s", "run.pause": "p,space"}}; the theme you pick is kept there too.\n')
    return t


class HelpScreen(ModalScreen[None]):
    """Keys and legend of `mode` (live or replay); escape, q or ? closes."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: round $primary;
        border-title-color: $primary;
        background: $surface;
        padding: 0 1;
    }
    """

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close", id="help.close")]

    def __init__(self, mode: str = LIVE) -> None:
        super().__init__()
        self.mode = mode

    def compose(self) -> ComposeResult:
        scroll = VerticalScroll()
        scroll.border_title = "LeMMing Control Room — " + ("replay help" if self.mode == REPLAY else "help")
        scroll.border_subtitle = "esc / q / ? closes"
        with scroll:
            yield Static(help_text(self.mode))

    def action_close(self) -> None:
        self.dismiss(None)
