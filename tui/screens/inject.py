"""The inject dialog: a message from the operator to some agents, or to all of them.

Validated before it is queued: some text (at most 20,000 characters), at least
one recipient or "all agents", a short kind. ctrl+s or F2 sends (so does the
Send button); escape or the Cancel button closes without sending.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, SelectionList, Static, TextArea

MAX_TEXT = 20_000
KIND_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,39}$")


@dataclass(frozen=True)
class InjectRequest:
    """What the operator asked for: `recipients` None means every agent."""

    text: str
    recipients: tuple[str, ...] | None
    kind: str = "message"


def validate_inject(text: str, all_agents: bool, recipients: list[str], kind: str) -> str | None:
    """The first problem with a request, as a sentence; None if it can be sent."""
    if not text.strip():
        return "Write some text to send."
    if len(text) > MAX_TEXT:
        return f"The text is {len(text):,} characters; the limit is {MAX_TEXT:,}."
    if not all_agents and not recipients:
        return "Pick at least one recipient, or tick \"All agents\"."
    if not KIND_RE.match(kind):
        return "Kind is one word (letters, digits, _ . -), e.g. message, directive, question."
    return None


class InjectDialog(ModalScreen[InjectRequest | None]):
    """Compose a message from the operator."""

    DEFAULT_CSS = """
    InjectDialog { align: center middle; }
    InjectDialog > #inject-box {
        width: 72;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: round $primary;
        background: $surface;
        padding: 0 1;
    }
    InjectDialog .dialog-title { text-style: bold; color: $primary; width: 1fr; }
    InjectDialog .field-label { color: $text-muted; margin-top: 1; }
    InjectDialog #inject-recipients { height: auto; max-height: 6; }
    InjectDialog #kind-row { height: 1; margin-top: 1; }
    InjectDialog #kind-row Label { width: 6; color: $text-muted; }
    InjectDialog #inject-kind { width: 24; background: $panel; }
    InjectDialog #inject-text { height: 4; background: $panel; }
    InjectDialog #inject-error { color: $error; height: auto; }
    InjectDialog #buttons { height: 1; margin-top: 1; align-horizontal: right; }
    InjectDialog #buttons Button { margin-left: 2; }
    """

    BINDINGS = [
        Binding("ctrl+s,f2", "send", "Send", priority=True, id="inject.send"),
        Binding("escape", "cancel", "Cancel", id="inject.cancel"),
    ]

    def __init__(self, agents: list[str], selected: str | None = None, *, cursor_blink: bool = True) -> None:
        super().__init__()
        self.agents = agents
        self.preselected = selected
        self.cursor_blink = cursor_blink

    def compose(self) -> ComposeResult:
        with Vertical(id="inject-box"):
            yield Label("Inject a message from the operator", classes="dialog-title")
            yield Label("To (space ticks, tab moves on)", classes="field-label")
            yield Checkbox("All agents", False, id="inject-all", compact=True)
            yield SelectionList[str](
                *[(name, name, name == self.preselected) for name in self.agents],
                id="inject-recipients",
                compact=True,
            )
            with Horizontal(id="kind-row"):
                yield Label("Kind")
                yield Input("message", id="inject-kind", compact=True, max_length=40)
            yield Label("Text", classes="field-label")
            yield TextArea(id="inject-text", compact=True, soft_wrap=True, tab_behavior="focus", placeholder="What the agents should read (ctrl+s or F2 sends)")
            yield Static("", id="inject-error")
            with Horizontal(id="buttons"):
                yield Button("Send", variant="primary", id="send", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        text = self.query_one("#inject-text", TextArea)
        kind = self.query_one("#inject-kind", Input)
        if not self.cursor_blink:
            text.cursor_blink = False
            kind.cursor_blink = False
        text.focus()

    @on(Checkbox.Changed, "#inject-all")
    def _all_changed(self, event: Checkbox.Changed) -> None:
        self.query_one("#inject-recipients", SelectionList).disabled = event.value

    @on(Button.Pressed, "#send")
    def _send_pressed(self) -> None:
        self.action_send()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    @on(Input.Submitted, "#inject-kind")
    def _kind_submitted(self) -> None:
        self.action_send()

    def request(self) -> tuple[InjectRequest | None, str | None]:
        """The request the form describes, or the problem with it."""
        text = self.query_one("#inject-text", TextArea).text
        all_agents = self.query_one("#inject-all", Checkbox).value
        recipients = list(self.query_one("#inject-recipients", SelectionList).selected)
        kind = self.query_one("#inject-kind", Input).value.strip() or "message"
        problem = validate_inject(text, all_agents, recipients, kind)
        if problem:
            return None, problem
        chosen = None if all_agents else tuple(sorted(recipients))
        return InjectRequest(text.strip(), chosen, kind), None

    def action_send(self) -> None:
        req, problem = self.request()
        if req is None:
            self.query_one("#inject-error", Static).update(problem or "")
            return
        self.dismiss(req)

    def action_cancel(self) -> None:
        self.dismiss(None)
