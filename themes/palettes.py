"""The control room's themes: `textual.theme.Theme` objects, registered by the app.

Four of them: a dark and a light theme, a high-contrast one, and one that uses
the terminal's own ANSI palette (colours follow the user's terminal scheme,
which is what reads best over SSH and in tmux). Panes use only the standard
theme variables ($primary, $success, $warning, $error, $accent, $foreground,
$text-muted ...), so Textual's built-in themes work too.
"""

from __future__ import annotations

from textual.theme import Theme

DARK = Theme(
    name="lemming-dark",
    primary="#4FA3E0",
    secondary="#7A8CA5",
    accent="#F2B84B",
    warning="#F2B84B",
    error="#E5566B",
    success="#5CC98A",
    foreground="#D8DEE6",
    background="#12161C",
    surface="#1A2029",
    panel="#232B36",
    dark=True,
    variables={
        "footer-key-foreground": "#4FA3E0",
        "block-cursor-text-style": "bold",
    },
)

LIGHT = Theme(
    name="lemming-light",
    primary="#1F6FB2",
    secondary="#55657A",
    accent="#B26B00",
    warning="#A35F00",
    error="#C0293E",
    success="#1E8A4C",
    foreground="#1E232A",
    background="#F4F5F7",
    surface="#E8EBEF",
    panel="#D9DEE5",
    dark=False,
    variables={
        "footer-key-foreground": "#1F6FB2",
        "block-cursor-text-style": "bold",
    },
)

CONTRAST = Theme(
    name="lemming-contrast",
    primary="#FFFF00",
    secondary="#00FFFF",
    accent="#FF00FF",
    warning="#FFFF00",
    error="#FF3030",
    success="#00FF00",
    foreground="#FFFFFF",
    background="#000000",
    surface="#000000",
    panel="#000000",
    boost="#FFFFFF",
    dark=True,
    luminosity_spread=0.0,
    text_alpha=1.0,
    variables={
        "border": "#FFFFFF",
        "border-blurred": "#A0A0A0",
        "text-muted": "#D0D0D0",
        "block-cursor-background": "#FFFF00",
        "block-cursor-foreground": "#000000",
        "block-cursor-text-style": "bold",
        "block-cursor-blurred-background": "#FFFFFF",
        "block-cursor-blurred-foreground": "#000000",
        "footer-key-foreground": "#FFFF00",
        "footer-background": "#000000",
        "input-selection-background": "#00FFFF 50%",
    },
)

ANSI = Theme(
    name="lemming-ansi",
    ansi=True,
    primary="ansi_blue",
    secondary="ansi_cyan",
    accent="ansi_magenta",
    warning="ansi_yellow",
    error="ansi_red",
    success="ansi_green",
    foreground="ansi_default",
    background="ansi_default",
    surface="ansi_default",
    panel="ansi_default",
    boost="ansi_default",
    dark=True,
    variables={
        "ansi-background": "ansi_black",
        "ansi-foreground": "ansi_white",
        "border": "ansi_blue",
        "border-blurred": "ansi_bright_black",
        "text-muted": "ansi_bright_black",
        "block-cursor-foreground": "ansi_black",
        "block-cursor-background": "ansi_cyan",
        "block-cursor-text-style": "none",
        "block-cursor-blurred-foreground": "ansi_black",
        "block-cursor-blurred-background": "ansi_white",
        "input-cursor-background": "ansi_white",
        "input-cursor-foreground": "ansi_black",
        "input-cursor-text-style": "none",
        "input-selection-background": "ansi_bright_blue",
        "input-selection-foreground": "ansi_black",
        "screen-selection-background": "ansi_bright_blue",
        "screen-selection-foreground": "ansi_black",
        "footer-key-foreground": "ansi_cyan",
    },
)

THEMES: tuple[Theme, ...] = (DARK, LIGHT, CONTRAST, ANSI)
DEFAULT_THEME = DARK.name
#: What the palette and the help screen call each theme.
LABELS = {
    DARK.name: "Dark",
    LIGHT.name: "Light",
    CONTRAST.name: "High contrast",
    ANSI.name: "Terminal (ANSI palette)",
}
