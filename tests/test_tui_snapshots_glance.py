"""Snapshots of the views that show the run at a glance: the conversation, the graph, find.

Each at 80×24 and 160×50, and on two themes (the default and the ANSI one), on the
seeded demo run of test_tui_snapshots (three ticks, paused).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.app_driver import deterministic_app
from tests.test_tui_snapshots import _stepped, app_factory  # noqa: F401  (a fixture)

THEMES = ["lemming-dark", "lemming-ansi"]
SIZES = [(80, 24), (160, 50)]


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("size", SIZES, ids=["80x24", "160x50"])
def test_conversation(snap_compare, app_factory, theme: str, size: tuple[int, int]) -> None:  # noqa: F811
    """The stream pane: analyst's turns as messages under arrows, memory and notes dim."""
    assert snap_compare(app_factory(theme=theme), terminal_size=size, run_before=lambda p: _stepped(p, "2"))


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("size", SIZES, ids=["80x24", "160x50"])
def test_graph(snap_compare, app_factory, theme: str, size: tuple[int, int]) -> None:  # noqa: F811
    """The messages pane as a graph, manager selected (its neighbourhood highlighted)."""
    assert snap_compare(app_factory(theme=theme), terminal_size=size,
                        run_before=lambda p: _stepped(p, "1", "down", "down", "down", "down", "5"))


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("size", SIZES, ids=["80x24", "160x50"])
def test_graph_matrix(snap_compare, app_factory, theme: str, size: tuple[int, int]) -> None:  # noqa: F811
    """The messages pane's heat-map matrix, manager selected (its row and column marked)."""
    assert snap_compare(app_factory(theme=theme), terminal_size=size,
                        run_before=lambda p: _stepped(p, "1", "down", "down", "down", "down", "5", "m"))


def test_graph_forty_agents(snap_compare, tmp_path: Path) -> None:
    """Forty agents at 160×50: every node placed, the busiest links drawn."""
    from lemming.tui.bench.ui import make_storm_org

    org = make_storm_org(tmp_path / "org40", 40)
    app = deterministic_app(org, seed=3, config_dir=tmp_path / "cfg")
    assert snap_compare(app, terminal_size=(160, 50), run_before=lambda p: _stepped(p, "5"))


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "160x50"])
def test_search_dialog(snap_compare, app_factory, tmp_path: Path, size: tuple[int, int]) -> None:  # noqa: F811
    """`/` on a recorded run: the hits of "budget" with the word highlighted."""

    async def run_before(pilot) -> None:  # noqa: ANN001
        from tests.support.app_driver import wait_for

        await _stepped(pilot, "slash")
        await pilot.press(*"budget")
        dialog = pilot.app.screen
        await wait_for(pilot, lambda: getattr(dialog, "result", None) is not None, what="the hits")
        await pilot.pause(0.05)

    app = app_factory(record=tmp_path / "runs.db")
    assert snap_compare(app, terminal_size=size, run_before=run_before)
