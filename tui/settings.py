"""The control room's remembered preferences (today: the theme), in a small JSON file.

Where: $XDG_CONFIG_HOME/lemming/tui.json, else ~/.config/lemming/tui.json.
A missing or broken file means defaults; saving never raises into the UI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

FILE_NAME = "tui.json"


class UISettings(BaseModel):
    """What the control room remembers between runs."""

    model_config = ConfigDict(extra="ignore")

    theme: str | None = None
    stream_mode: str = "selected"  # or "all"
    #: Binding id -> keys, e.g. {"run.step": "s", "app.quit": "q,f10"} (ids are in the help screen's source).
    keymap: dict[str, str] = {}


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "lemming"


def load_settings(directory: Path | None = None) -> UISettings:
    path = (directory or config_dir()) / FILE_NAME
    try:
        return UISettings.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError):
        return UISettings()


def save_settings(settings: UISettings, directory: Path | None = None) -> str | None:
    """Write the settings; return an error message instead of raising."""
    directory = directory or config_dir()
    path = directory / FILE_NAME
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(settings.model_dump_json(indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        return f"could not save {path}: {e.strerror or e}"
    return None
