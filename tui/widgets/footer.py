"""KeysFooter: Textual's Footer, with its keys in the first frame and repainted only when they change.

Textual's Footer composes empty, fills itself in after the screen's first
refresh, and then rebuilds all its key widgets on every "bindings updated"
signal (each focus change publishes one). At start-up that is three rebuilds,
each a layout pass of the whole screen, and the keys show two frames late; on
`tab` between panes it is a rebuild although the keys shown are the same. This
footer composes its keys at once and rebuilds only when what it shows changes.

It also fits its line: Textual's Footer lays the keys out in a row and cuts the row
at the edge, so at 80 columns a pane's own keys (the stream's a and v) pushed Help
and Quit off the screen. Here Help and Quit always show; the others show in order,
each one that still fits (the focused pane's keys first, they are what it adds).
"""

from __future__ import annotations

from rich.cells import cell_len
from textual import events
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

#: Actions whose keys the footer always shows, however narrow.
ESSENTIAL = frozenset({"app.help", "app.quit"})


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
        return keys, palette, self._line_width()

    def _line_width(self) -> int:
        # The footer spans the screen; before its first layout its own size is not known yet.
        return self.size.width or self.app.size.width

    def compose(self) -> ComposeResult:
        self._shown = self._keys_shown()
        yield from self.fitted(list(super().compose()), self._shown[2])

    def _cells(self, key: FooterKey) -> int:
        """The cells `key` takes in the row (its margin included)."""
        label, text = cell_len(key.key_display), cell_len(key.description)
        if self.compact:
            return label + (1 + text if text else 0) + 1
        return label + 2 + (text + 1 if text else 0)

    def fitted(self, widgets: list[Widget], width: int) -> list[Widget]:
        """The keys that fit `width`: the essential ones, then the others in order while
        there is room (the focused pane's own keys first)."""
        keys = [w for w in widgets if isinstance(w, FooterKey) and not w.has_class("-command-palette")]
        room = width - sum(self._cells(w) + 1 for w in widgets if w.has_class("-command-palette"))
        pane = {b.action for node, b, _, _ in self.screen.active_bindings.values() if node is not self.screen and node is not self.app}
        chosen: set[int] = set()
        for group in (
            [k for k in keys if k.action in ESSENTIAL],
            [k for k in keys if k.action in pane and k.action not in ESSENTIAL],
            [k for k in keys if k.action not in pane and k.action not in ESSENTIAL],
        ):
            for k in group:
                if self._cells(k) <= room or k.action in ESSENTIAL:
                    chosen.add(id(k))
                    room -= self._cells(k)
        return [w for w in widgets if not isinstance(w, FooterKey) or w.has_class("-command-palette") or id(w) in chosen]

    def on_resize(self, event: events.Resize) -> None:
        if self._shown is not None and self.is_attached and self._keys_shown() != self._shown:
            self.recompose()

    def bindings_changed(self, screen: Screen) -> None:
        if self._shown is not None and self.is_attached and screen is self.screen and self._keys_shown() == self._shown:
            return  # the same keys: rebuilding would only cost a layout pass
        super().bindings_changed(screen)

    def watch_show_command_palette(self, show: bool) -> None:
        if self._shown is not None and self.is_attached:
            self.bindings_changed(self.screen)
