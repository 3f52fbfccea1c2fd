"""What the control room tells the operator about their own keys: the editor that is not
there, the speed keys pressed faster than ticks, a top-up, and a seat that never calls a
model (App.run_test + Pilot, on the sim)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_org
from tests.support.app_driver import advance, wait_for
from tests.test_tui_behaviour import SIZE, make_app


def notices(app, title: str | None = None) -> list[str]:  # noqa: ANN001
    return [text for _, t, text in app.notices if title is None or t == title]


async def test_a_missing_editor_is_named_and_the_room_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISUAL", "no-such-editor-4711 --wait")
    org = make_org(tmp_path / "org", {"alice": {}})
    app = make_app(org, tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await advance(pilot, app, 1)
        await pilot.press("E")
        await wait_for(pilot, lambda: bool(notices(app, "Edit")), what="the edit notice")
        text = notices(app, "Edit")[0]
        assert "'no-such-editor-4711'" in text and "not a program on PATH" in text
        assert str(org / "agents" / "alice" / "resume.json") in text
        await advance(pilot, app, 1)  # the room still steers the run
        assert app.engine.tick == 2


async def test_speed_keys_pressed_within_one_tick_add_up_and_say_where_they_are(org_dir: Path, tmp_path: Path) -> None:
    # Slow turns: the keys are pressed while a tick is in flight, and the run applies the
    # new interval only at its end; each press steps on from the one before.
    app = make_app(org_dir, tmp_path, paused=False, interval=0.5, tokens_per_s=40)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: bool(app.engine.thinking), what="a tick in flight")
        await pilot.press("plus", "plus", "plus")
        assert notices(app)[-3:] == ["Speed: 1s between ticks.", "Speed: 2s between ticks.", "Speed: 5s between ticks."]
        await wait_for(pilot, lambda: app.engine.state.interval == 5.0, what="the interval asked for")
        await wait_for(pilot, lambda: bool(app.engine.thinking), what="a tick in flight")
        await pilot.press(*["minus"] * 6)  # 5 → 2 → 1 → 0.5 → 0.25 → 0.1 → 0
        assert notices(app)[-1] == "Speed: no pause between ticks."
        await pilot.press("minus")
        assert notices(app)[-1] == "Speed: no pause between ticks (the limit)."
        await wait_for(pilot, lambda: app.engine.state.interval == 0.0, what="no pause")


async def test_a_top_up_is_confirmed_and_a_seat_without_a_model_is_refused(tmp_path: Path) -> None:
    org = make_org(tmp_path / "org", {"alice": {"credits": {"max_credits": 1.0}}, "human": {"model": "none"}})
    app = make_app(org, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine.running, what="the run")
        assert app.main.selected_agent == "alice"
        await pilot.press("t")
        await pilot.pause()
        await pilot.press("ctrl+a", "ctrl+k", *"2", "enter")
        await wait_for(pilot, lambda: any(n.startswith("Topping up alice") for n in notices(app)), what="the top-up notice")
        assert "about 3, above its max_credits of 1." in notices(app)[-1]
        await pilot.press("down")
        assert app.main.selected_agent == "human"
        await pilot.press("t")
        await pilot.pause()
        assert notices(app)[-1] == 'human has model "none": it never calls a model, so it never spends credits.'
        assert len(app.screen_stack) == 1  # no dialog
        await pilot.press("enter")
        await pilot.pause()
        assert notices(app)[-1].startswith('human has model "none": a seat that never takes a turn')
