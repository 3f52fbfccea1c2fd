"""The top-up dialog: add credits to one agent. Enter (or F2) confirms, escape cancels."""

from __future__ import annotations

import math

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


def parse_amount(text: str) -> tuple[float | None, str | None]:
    """(amount, None) for a valid top-up, else (None, the problem)."""
    try:
        v = float(text.strip())
    except ValueError:
        return None, "Type a number of credits, e.g. 1.5"
    if not math.isfinite(v) or v <= 0:
        return None, "The amount must be a positive number."
    if v >= 1e12:
        return None, "That is more than the engine accepts (under 1e12)."
    return v, None


class TopUpDialog(ModalScreen[float | None]):
    """How many credits to add to `agent`."""

    DEFAULT_CSS = """
    TopUpDialog { align: center middle; }
    TopUpDialog > #top-up-box {
        width: 52;
        max-width: 100%;
        height: auto;
        border: round $primary;
        background: $surface;
        padding: 0 1;
    }
    TopUpDialog .dialog-title { text-style: bold; color: $primary; }
    TopUpDialog #top-up-amount { margin-top: 1; width: 1fr; }
    TopUpDialog #top-up-error { color: $error; height: auto; }
    TopUpDialog #buttons { height: 1; margin-top: 1; align-horizontal: right; }
    TopUpDialog #buttons Button { margin-left: 2; }
    """

    BINDINGS = [
        Binding("f2", "confirm", "Top up", priority=True, id="top_up.confirm"),
        Binding("escape", "cancel", "Cancel", id="top_up.cancel"),
    ]

    def __init__(self, agent: str, balance: float, max_credits: float, *, cursor_blink: bool = True) -> None:
        super().__init__()
        self.agent = agent
        self.balance = balance
        self.max_credits = max_credits
        self.cursor_blink = cursor_blink

    def suggestion(self) -> str:
        gap = self.max_credits - self.balance
        v = gap if gap > 0 else max(1.0, self.max_credits or 1.0)
        return f"{v:.4g}"

    def compose(self) -> ComposeResult:
        with Vertical(id="top-up-box"):
            yield Label(f"Top up {self.agent}", classes="dialog-title")
            yield Label(f"now {self.balance:.4g} of {self.max_credits:.4g} credits")
            yield Input(self.suggestion(), id="top-up-amount", compact=True, type="number")
            yield Static("", id="top-up-error")
            with Horizontal(id="buttons"):
                yield Button("Top up", variant="primary", id="confirm", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        amount = self.query_one("#top-up-amount", Input)
        if not self.cursor_blink:
            amount.cursor_blink = False
        amount.focus()

    @on(Input.Submitted, "#top-up-amount")
    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        self.action_confirm()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()

    def action_confirm(self) -> None:
        amount, problem = parse_amount(self.query_one("#top-up-amount", Input).value)
        if amount is None:
            self.query_one("#top-up-error", Static).update(problem or "")
            return
        self.dismiss(amount)

    def action_cancel(self) -> None:
        self.dismiss(None)
