"""Snapshot tests of the control room (pytest-textual-snapshot), kept under tests/snapshots/.

Every snapshot is a seeded sim run of the demo organisation that starts paused
and is stepped a fixed number of ticks before the picture is taken; the sim
streams with no delay, the screen shows no wall-clock text, cursor blink and
animations are off. Update with `pytest tests/test_tui_snapshots.py --snapshot-update`
and look at the SVGs before committing them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_textual_snapshot import SVGImageExtension

from tests.support.app_driver import REPO, advance, deterministic_app

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
_original_dirname = SVGImageExtension.dirname.__func__  # type: ignore[attr-defined]


def _dirname(cls, *, test_location) -> str:  # noqa: ANN001
    # This module's snapshots live in tests/snapshots/<module>/ rather than __snapshots__/.
    if Path(test_location.filepath).name.startswith("test_tui_"):
        return str(SNAPSHOTS / test_location.basename)
    return _original_dirname(cls, test_location=test_location)


SVGImageExtension.dirname = classmethod(_dirname)  # type: ignore[method-assign]

STEPS = 3


@pytest.fixture
def app_factory(tmp_path: Path):
    def make(**kw):
        return deterministic_app(REPO, seed=7, config_dir=tmp_path / "cfg", **kw)

    return make


async def _stepped(pilot, *keys: str) -> None:  # noqa: ANN001
    await advance(pilot, pilot.app, STEPS)
    for key in keys:
        await pilot.press(key)
        await pilot.pause()
    await pilot.pause(0.05)


def test_main_screen_80x24(snap_compare, app_factory) -> None:
    """Compact layout: the roster with the tab strip, after three ticks."""
    assert snap_compare(app_factory(), terminal_size=(80, 24), run_before=_stepped)


def test_main_screen_80x24_timeline_tab(snap_compare, app_factory) -> None:
    """Compact layout, timeline tab: the paused next tick is marked."""
    assert snap_compare(app_factory(), terminal_size=(80, 24), run_before=lambda p: _stepped(p, "4"))


def test_main_screen_160x50(snap_compare, app_factory) -> None:
    """Wide layout: every pane at once."""
    assert snap_compare(app_factory(), terminal_size=(160, 50), run_before=_stepped)


def test_inject_dialog(snap_compare, app_factory) -> None:
    async def run_before(pilot) -> None:  # noqa: ANN001
        await _stepped(pilot, "i")
        await pilot.press(*"Ship it")

    assert snap_compare(app_factory(), terminal_size=(100, 30), run_before=run_before)


def test_inspector(snap_compare, app_factory) -> None:
    """The selected agent's last turn, summary section."""
    assert snap_compare(app_factory(), terminal_size=(100, 30), run_before=lambda p: _stepped(p, "down", "down", "enter"))


def test_inspector_parsed_section(snap_compare, app_factory) -> None:
    assert snap_compare(app_factory(), terminal_size=(100, 30), run_before=lambda p: _stepped(p, "down", "down", "enter", "4"))


def test_help_screen(snap_compare, app_factory) -> None:
    assert snap_compare(app_factory(), terminal_size=(100, 36), run_before=lambda p: _stepped(p, "question_mark"))


@pytest.mark.parametrize("theme", ["lemming-dark", "lemming-light", "lemming-contrast", "lemming-ansi"])
def test_theme(snap_compare, app_factory, theme: str) -> None:
    assert snap_compare(app_factory(theme=theme), terminal_size=(120, 32), run_before=_stepped)


def test_forty_agents_messages_matrix(snap_compare, tmp_path: Path) -> None:
    """Forty agents: the message graph as a matrix stays readable."""
    from lemming.tui.bench.ui import make_storm_org

    org = make_storm_org(tmp_path / "org40", 40)
    app = deterministic_app(org, seed=3, config_dir=tmp_path / "cfg")
    assert snap_compare(app, terminal_size=(160, 50), run_before=lambda p: _stepped(p, "5", "m"))


def test_forty_agents_messages_list(snap_compare, tmp_path: Path) -> None:
    from lemming.tui.bench.ui import make_storm_org

    org = make_storm_org(tmp_path / "org40", 40)
    app = deterministic_app(org, seed=3, config_dir=tmp_path / "cfg")
    assert snap_compare(app, terminal_size=(160, 50), run_before=lambda p: _stepped(p, "5", "m", "m"))
