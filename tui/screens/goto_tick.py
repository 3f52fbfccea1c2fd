"""The "go to tick" dialog of replay mode (`g`): type a tick number, enter goes there."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static


def parse_tick(text: str, lo: int, hi: int) -> tuple[int | None, str | None]:
    """(tick, None) for a tick of the run, else (None, the problem)."""
    text = text.strip()
    try:
        t = int(text)
    except ValueError:
        return None, f"Type a tick number from {lo} to {hi}."
    if not lo <= t <= hi:
        return None, f"The run has ticks {lo} to {hi}."
    return t, None


class GoToTickDialog(ModalScreen[int | None]):
    """Which tick to show; dismissed with the tick, or None on escape."""

    DEFAULT_CSS = """
    GoToTickDialog { align: center middle; }
    GoToTickDialog > #goto-box {
        width: 40;
        max-width: 100%;
        height: auto;
        border: round $primary;
        background: $surface;
        padding: 0 1;
    }
    GoToTickDialog .dialog-title { text-style: bold; color: $primary; }
    GoToTickDialog #goto-tick { margin-top: 1; width: 1fr; }
    GoToTickDialog #goto-error { color: $error; height: auto; }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="goto.cancel")]

    def __init__(self, current: int, lo: int, hi: int, *, cursor_blink: bool = True) -> None:
        super().__init__()
        self.current = current
        self.lo = lo
        self.hi = hi
        self.cursor_blink = cursor_blink

    def compose(self) -> ComposeResult:
        with Vertical(id="goto-box"):
            yield Label("Go to tick", classes="dialog-title")
            yield Label(f"ticks {self.lo}–{self.hi}; now {self.current}")
            yield Input(str(self.current), id="goto-tick", compact=True, type="integer", select_on_focus=True)
            yield Static("", id="goto-error")

    def on_mount(self) -> None:
        box = self.query_one("#goto-tick", Input)
        if not self.cursor_blink:
            box.cursor_blink = False
        box.focus()

    @on(Input.Submitted, "#goto-tick")
    def _submitted(self) -> None:
        tick, problem = parse_tick(self.query_one("#goto-tick", Input).value, self.lo, self.hi)
        if tick is None:
            self.query_one("#goto-error", Static).update(problem or "")
            return
        self.dismiss(tick)

    def action_cancel(self) -> None:
        self.dismiss(None)
