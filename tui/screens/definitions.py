"""Rejected agent files (`D`): every file whose current content is not running, with why.

A file stays listed until it is fixed; meanwhile its last good definition runs.
"""

from __future__ import annotations

from typing import Mapping

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


def rejected_text(rejected: Mapping[str, tuple[str, ...]]) -> Text:
    t = Text()
    if not rejected:
        t.append("Every agent file is valid and running.\n", "bold")
        t.append("\nEdit a resume.json (E on the selected agent) and it applies at the next tick.")
        return t
    t.append(f"{len(rejected)} file(s) rejected — the last good definition keeps running.\n", "bold")
    for file, errors in sorted(rejected.items()):
        t.append(f"\n{file}\n", "bold underline")
        for e in errors:
            t.append(f"  • {e}\n")
    t.append("\nFix the file and save: the watcher applies it at the next tick boundary.")
    return t


class DefinitionsScreen(ModalScreen[None]):
    """Lists the rejected definition files until they are fixed."""

    DEFAULT_CSS = """
    DefinitionsScreen { align: center middle; }
    DefinitionsScreen > VerticalScroll {
        width: 90%;
        max-width: 110;
        height: 80%;
        border: thick $error;
        background: $surface;
        padding: 0 1;
    }
    """

    BINDINGS = [
        Binding("escape", "dismiss", "Close", id="definitions.close"),
        Binding("q", "dismiss", "Close", show=False, id="definitions.close_q"),
        Binding("D", "dismiss", "Close", show=False, id="definitions.close_d"),
    ]

    def __init__(self, rejected: Mapping[str, tuple[str, ...]]) -> None:
        super().__init__()
        self.rejected = dict(rejected)

    def compose(self) -> ComposeResult:
        with VerticalScroll() as v:
            v.border_title = "Agent files"
            yield Static(rejected_text(self.rejected), id="definitions-text")

    def show(self, rejected: Mapping[str, tuple[str, ...]]) -> None:
        """The list changed while the screen is open."""
        self.rejected = dict(rejected)
        self.query_one("#definitions-text", Static).update(rejected_text(self.rejected))
