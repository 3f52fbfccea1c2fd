"""The command palette (ctrl+p): the room's actions in its mode (from the action table), and the themes."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Iterator, Protocol, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from lemming.tui.actions import palette
from lemming.themes import theme_label, themes


class PaletteHost(Protocol):
    """What the palette needs of its app (a Room)."""

    @property
    def keys_mode(self) -> str: ...

    def offers(self, action: str) -> bool: ...

    async def run_action(self, action: str, default_namespace: Any = None) -> bool: ...

    def action_set_theme(self, name: str) -> None: ...


class RoomCommands(Provider):
    """The actions of the room's mode (live, replay or the run picker) and its themes, by name."""

    def _commands(self) -> Iterator[tuple[str, str, Callable[[], object]]]:
        app = cast(PaletteHost, self.app)
        for title, help_text, action in palette(app.keys_mode):
            if app.offers(action):
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
