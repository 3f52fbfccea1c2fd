"""The help screen (`?`): every key, what the panes show, and what the state glyphs mean."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

#: (key, what it does) in the order an operator meets them. The app's bindings carry the
#: same keys; tests check that every footer binding is listed here.
KEYS: tuple[tuple[str, str, str], ...] = (
    ("Run", "space", "pause / resume (applied at the next tick boundary)"),
    ("Run", "n", "step exactly one tick while paused"),
    ("Run", "+ / -", "longer / shorter wait between ticks"),
    ("Run", "i", "inject a message from the operator (recipients, kind, text)"),
    ("Run", "ctrl+p → Abort", "abort the tick in flight (nothing of it is committed)"),
    ("Agent", "↑ ↓ / j k", "select an agent (roster, credits, messages)"),
    ("Agent", "enter", "inspect the selected agent's last turn, or the timeline row's turn"),
    ("Agent", "t", "top up the selected agent's credits"),
    ("Agent", "e", "enable / disable the selected agent"),
    ("Agent", "E", "edit the selected agent's resume.json in $EDITOR (hot-reloads at the next tick)"),
    ("App", "D", "rejected agent files and why (listed until fixed)"),
    ("Panes", "tab / shift+tab", "next / previous pane"),
    ("Panes", "1-5", "show a pane: agents, stream, credits, timeline, messages"),
    ("Panes", "a", "stream: the selected agent, or all agents interleaved"),
    ("Panes", "v", "stream: each turn as a conversation, or the raw reply text"),
    ("Panes", "/", "find in the run: every message, note and error; enter goes there"),
    ("Panes", "s", "plots: spend, tokens/s, latency p50/p95, failures per tick"),
    ("Panes", "m", "messages: list or matrix view"),
    ("App", "ctrl+p", "command palette: every action, themes"),
    ("App", "?", "this help"),
    ("App", "q", "quit: the tick in flight ends (or is aborted after a few seconds); q again aborts now"),
)

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


def help_text() -> Text:
    t = Text()
    section = None
    for group, key, what in KEYS:
        if group != section:
            t.append(("\n" if section else "") + group + "\n", "bold underline")
            section = group
        t.append(f"  {key:<16}", "bold")
        t.append(what + "\n")
    t.append("\nStates and marks\n", "bold underline")
    for glyph, what in LEGEND:
        t.append(f"  {glyph:<16}", "bold")
        t.append(what + "\n")
    t.append("\nKeys are letters, digits, space and arrows so they work over SSH and in tmux;\n")
    t.append("the mouse is optional (--no-mouse turns it off).\n")
    t.append("Remap keys in $XDG_CONFIG_HOME/lemming/tui.json (else ~/.config/lemming/tui.json),\n")
    t.append('e.g. {"keymap": {"run.step": "s", "run.pause": "p,space"}}; the theme you pick is kept there too.\n')
    return t


class HelpScreen(ModalScreen[None]):
    """Keys and legend; escape, q or ? closes."""

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

    def compose(self) -> ComposeResult:
        scroll = VerticalScroll()
        scroll.border_title = "LeMMing Control Room — help"
        scroll.border_subtitle = "esc / q / ? closes"
        with scroll:
            yield Static(help_text())

    def action_close(self) -> None:
        self.dismiss(None)
