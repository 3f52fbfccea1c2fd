"""Find the themes and the layout stylesheet kept under the repository's themes/ folder.

themes/ is a folder of data next to engine/ and tui/, not an installed package,
so it is loaded by path (an editable install and a checkout both have it).
"""

from __future__ import annotations

import importlib.util
import sys
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from textual.theme import Theme

THEMES_DIR = Path(__file__).resolve().parent.parent / "themes"
LAYOUT_TCSS = THEMES_DIR / "control_room.tcss"


@lru_cache(maxsize=1)
def _palettes() -> ModuleType:
    path = THEMES_DIR / "palettes.py"
    spec = importlib.util.spec_from_file_location("lemming_themes_palettes", path)
    if spec is None or spec.loader is None:  # pragma: no cover - a broken checkout
        raise ImportError(f"cannot load themes from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def themes() -> tuple[Theme, ...]:
    """The control room's own themes (dark, light, high contrast, ANSI)."""
    return tuple(_palettes().THEMES)


def default_theme() -> str:
    return str(_palettes().DEFAULT_THEME)


def theme_label(name: str) -> str:
    return str(_palettes().LABELS.get(name, name))
