"""Snapshots of the MCP servers view (`M`) and the inspector's workspace browser (`w`), at
80×24 and 160×50, on the seeded demo run of test_tui_snapshots (paused, stepped). What
differs from run to run (pid, uptime, latency, modified times) shows as —."""

from __future__ import annotations

import pytest

from tests.support.app_driver import advance
from tests.test_tui_snapshots import app_factory  # noqa: F401  (a fixture)

SIZES = [(80, 24), (160, 50)]
#: Ticks before the picture: the researcher has called the time server by then (seed 7).
TICKS = 12


def _after(*keys: str):  # noqa: ANN202
    async def run_before(pilot) -> None:  # noqa: ANN001
        await advance(pilot, pilot.app, TICKS)
        for key in keys:
            await pilot.press(key)
            await pilot.pause()
        await pilot.pause(0.3)

    return run_before


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "160x50"])
def test_mcp_servers(snap_compare, app_factory, size: tuple[int, int]) -> None:  # noqa: F811
    """The demo's time server: up, its two tools held by the researcher, its calls so far."""
    assert snap_compare(app_factory(), terminal_size=size, run_before=_after("M"))


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "160x50"])
def test_workspace_browser(snap_compare, app_factory, size: tuple[int, int]) -> None:  # noqa: F811
    """The researcher's last turn in the inspector, then its files: a note open."""
    keys = ("1", *["down"] * 7, "enter", "w", "down", "enter", "down")
    assert snap_compare(app_factory(), terminal_size=size, run_before=_after(*keys))
