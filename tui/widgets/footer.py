"""KeysFooter: Textual's Footer, with its keys in the first frame and repainted only when they change.

Textual's Footer composes empty, fills itself in after the screen's first
refresh, and then rebuilds all its key widgets on every "bindings updated"
signal (each focus change publishes one). At start-up that is three rebuilds,
each a layout pass of the whole screen, and the keys show two frames late; on
`tab` between panes it is a rebuild although the keys shown are the same. This
footer composes its keys at once and rebuilds only when what it shows changes.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer


class KeysFooter(Footer):
    """The key footer of the control room's screens (see the module docstring)."""

    def __init__(self, *, show_command_palette: bool = True, compact: bool = False, id: str | None = None) -> None:
        super().__init__(show_command_palette=show_command_palette, compact=compact, id=id)
        # The screen's bindings are known when the footer composes: no need to wait a refresh.
        self.set_reactive(Footer._bindings_ready, True)
        self._shown: tuple | None = None

    def _keys_shown(self) -> tuple:
        """What compose would show now: the visible bindings, their state and the palette key."""
        active = self.screen.active_bindings
        keys = tuple(
            (b.key, b.action, b.description, b.key_display, b.tooltip, b.group, enabled, tooltip)
            for (_, b, enabled, tooltip) in active.values()
            if b.show
        )
        palette = None
        if self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE:
            entry = active.get(self.app.COMMAND_PALETTE_BINDING)
            if entry is not None:
                palette = (entry[1].key, entry[1].description, entry[2])
        return keys, palette

    def compose(self) -> ComposeResult:
        self._shown = self._keys_shown()
        yield from super().compose()

    def bindings_changed(self, screen: Screen) -> None:
        if self._shown is not None and self.is_attached and screen is self.screen and self._keys_shown() == self._shown:
            return  # the same keys: rebuilding would only cost a layout pass
        super().bindings_changed(screen)

    def watch_show_command_palette(self, show: bool) -> None:
        if self._shown is not None and self.is_attached:
            self.bindings_changed(self.screen)
