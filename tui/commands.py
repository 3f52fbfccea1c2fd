"""The command palette (ctrl+p): every control-room action, plus the themes."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable, Iterator

from textual.command import DiscoveryHit, Hit, Hits, Provider

from lemming.themes import theme_label, themes

if TYPE_CHECKING:
    from lemming.tui.app import ControlRoom

#: Pane and view actions: the same in live and replay mode.
VIEW_ACTIONS: tuple[tuple[str, str, str], ...] = (
    ("Stream: selected agent / all agents", "a in the stream pane", "toggle_stream_mode"),
    ("Stream: conversation / raw reply text", "v in the stream pane", "toggle_stream_raw"),
    ("Messages: list / matrix", "m in the messages pane", "toggle_graph_mode"),
    ("Find in the run", "/ — every message, note and error; enter goes to its tick", "search"),
    ("Plots: spend, tokens/s, latency, failures per tick", "s — up to the cursor in replay", "plots"),
    ("Show the agents pane", "1", "show_pane('roster')"),
    ("Show the stream pane", "2", "show_pane('stream')"),
    ("Show the credits pane", "3", "show_pane('credits')"),
    ("Show the timeline pane", "4", "show_pane('timeline')"),
    ("Show the messages pane", "5", "show_pane('graph')"),
)

#: (title, help, action name with arguments) — the action runs on the app.
ACTIONS: tuple[tuple[str, str, str], ...] = (
    ("Pause / resume the run", "space — applied at the next tick boundary", "toggle_pause"),
    ("Step one tick", "n — exactly one tick, while paused", "step"),
    ("Inject a message", "i — from the operator to some agents or all", "inject"),
    ("Top up the selected agent", "t — add credits", "top_up"),
    ("Enable / disable the selected agent", "e", "toggle_enabled"),
    ("Longer tick interval", "+ — slower ticks", "slower"),
    ("Shorter tick interval", "- — faster ticks", "faster"),
    ("Inspect the selected turn", "enter — prompt, reply, parsed, usage, error", "inspect"),
    ("Abort the tick in flight", "cancel its calls; nothing of it is committed; the run pauses", "abort_tick"),
    *VIEW_ACTIONS,
    ("Edit the selected agent's resume.json", "E — in $EDITOR; applied at the next tick", "edit_agent"),
    ("Rejected agent files", "D — files whose last edit did not validate", "show_rejected"),
    ("Recorded runs", "ticks, spend, status, parent of each run in the database (lemming replay opens one)", "runs"),
    ("Help", "? — keys and legend", "help"),
    ("Quit", "q — stops the run cleanly", "quit"),
)


class ControlRoomCommands(Provider):
    """Actions of the control room and its themes, by name."""

    def _commands(self) -> Iterator[tuple[str, str, Callable[[], object]]]:
        app: ControlRoom = self.app  # type: ignore[assignment]
        for title, help_text, action in ACTIONS:
            yield title, help_text, partial(app.run_action, action)
        for theme in themes():
            yield (
                f"Theme: {theme_label(theme.name)}",
                f"switch to {theme.name} (remembered)",
                partial(app.action_set_theme, theme.name),
            )

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
