"""The control room's themes and layout stylesheet (shipped with the package as data).

`palettes` holds the `textual.theme.Theme` objects; `control_room.tcss` the layout.
Both are read from this package's own folder, so an installed wheel and a source
checkout behave the same.
"""

from __future__ import annotations

from pathlib import Path

from textual.theme import Theme

from lemming.themes import palettes

#: The layout stylesheet of every screen (colours come from the theme variables only).
LAYOUT_TCSS = Path(__file__).resolve().parent / "control_room.tcss"


def themes() -> tuple[Theme, ...]:
    """The control room's own themes (dark, light, high contrast, ANSI)."""
    return tuple(palettes.THEMES)


def default_theme() -> str:
    return str(palettes.DEFAULT_THEME)


def theme_label(name: str) -> str:
    return str(palettes.LABELS.get(name, name))
