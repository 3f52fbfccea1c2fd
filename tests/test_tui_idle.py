"""A control room with nothing happening does no work: paused, with every pane drawn,
no widget asks to be repainted. (A pane whose render set its own border title repainted
itself every frame: ~10% of a core while paused, and `Pilot.press` waited up to a
second for an idle that never came.)"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from textual.widget import Widget

from tests.support.app_driver import advance, deterministic_app, settle


@pytest.mark.parametrize("size", [(80, 24), (160, 50)], ids=["80x24", "160x50"])
async def test_a_paused_control_room_does_not_repaint(monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]) -> None:
    app = deterministic_app()
    async with app.run_test(size=size) as pilot:
        await advance(pilot, app, 2)  # messages in the graph, turns in the tables
        await settle(pilot, app)
        repaints: Counter[str] = Counter()
        original = Widget.refresh

        def counting(self: Widget, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            repaints[f"{type(self).__name__}#{self.id}"] += 1
            return original(self, *args, **kwargs)

        monkeypatch.setattr(Widget, "refresh", counting)
        for _ in range(10):  # a third of a second of frames, with the pump running
            await asyncio.sleep(0.03)
        monkeypatch.setattr(Widget, "refresh", original)
        assert not repaints, f"widgets repainted while nothing changed: {dict(repaints)}"
