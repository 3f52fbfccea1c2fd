"""Find in a run from the control room (`/`): hits at the right ticks, enter goes there."""

from __future__ import annotations

from pathlib import Path

from lemming.engine.events import MessageCommitted
from lemming.engine.store import RunStore
from lemming.tui.app import ControlRoom
from tests.support.app_driver import sim_engine
from lemming.tui.screens.inspector import InspectorScreen
from lemming.tui.screens.search import SearchScreen
from tests.support.app_driver import advance, wait_for
from tests.test_tui_replay import RUN, SIZE, db, org_four, recording, replay_app, replay_screen, at_tick  # noqa: F401


async def _search(pilot, app, words: str) -> SearchScreen:  # noqa: ANN001
    await pilot.press("slash")
    await wait_for(pilot, lambda: isinstance(app.screen, SearchScreen), what="the search dialog")
    dialog: SearchScreen = app.screen  # type: ignore[assignment]
    await pilot.press(*words)
    await wait_for(pilot, lambda: dialog.result is not None and dialog.result.query == words, what="the hits")
    await pilot.pause()
    return dialog


async def _messages(db: Path) -> list:
    store = await RunStore.open(db, readonly=True)
    try:
        return [e.entry for e in await store.events(RUN, prompts=False) if type(e) is MessageCommitted]
    finally:
        await store.close()


async def test_replay_search_moves_the_cursor_to_the_hit(db: Path, tmp_path: Path) -> None:
    entries = await _messages(db)
    injected = next(e for e in entries if e.agent == "operator")
    said = next(e for e in entries if e.agent == "bob" and 2 <= e.tick < 8)
    app = replay_app(db, tmp_path / "cfg")
    async with app.run_test(size=SIZE) as pilot:
        screen = await replay_screen(pilot, app)
        await at_tick(pilot, screen, 9)
        dialog = await _search(pilot, app, "friday")
        assert [(h.tick, h.agent, h.kind) for h in dialog.hits] == [(injected.tick, "operator", "message")]
        status = str(dialog.query_one("#search-status").render())
        assert status.startswith("1 match(es)")
        hits = dialog.query_one("#search-hits")
        assert "Ship it by Friday." in str(hits.get_option_at_index(0).prompt)
        await pilot.press("down", "enter")
        await at_tick(pilot, screen, injected.tick)
        # an agent's words: the cursor goes to the tick, the agent is selected
        await pilot.press("slash")
        await wait_for(pilot, lambda: isinstance(app.screen, SearchScreen), what="the search dialog")
        dialog = app.screen  # type: ignore[assignment]
        assert dialog.query_one("#search-query").value == "friday"  # the last search, ready to change
        dialog.query_one("#search-query").value = f'"{said.text}"'
        await wait_for(pilot, lambda: dialog.result is not None and dialog.result.query == f'"{said.text}"', what="hits")
        pairs = [(h.tick, h.agent) for h in dialog.hits]
        assert (said.tick, "bob") in pairs
        index = pairs.index((said.tick, "bob"))
        await pilot.press("down", *["down"] * index, "enter")
        await at_tick(pilot, screen, said.tick)
        assert screen.selected_agent == "bob"
        await pilot.press("slash")
        await wait_for(pilot, lambda: isinstance(app.screen, SearchScreen), what="the search dialog")
        await pilot.press("escape")
        await pilot.press("q")
    assert not app.failures


async def test_live_search_opens_the_turn_that_said_it(tmp_path: Path) -> None:
    org = org_four(tmp_path / "org")
    engine = sim_engine(org, seed=2, paused=True, interval=0.0, run_id="live-search")
    app = ControlRoom(engine, config_dir=tmp_path / "cfg", wall_clock=False, cursor_blink=False, animations=False,
                      pump_interval=0.02, record=tmp_path / "runs.db", watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.recording is not None, what="the recording")
        await advance(pilot, app, 4)
        rec = next(r for a in app.view.agents.values() for r in a.history
                   if r.parsed and r.parsed["outbox_entries"] and r.tick < 4)
        text = rec.parsed["outbox_entries"][0]["payload"]["text"]
        dialog = await _search(pilot, app, f'"{text}"')
        pairs = [(h.tick, h.agent) for h in dialog.hits]
        assert (rec.tick, rec.agent) in pairs
        await pilot.press("down", *["down"] * pairs.index((rec.tick, rec.agent)), "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, InspectorScreen), what="the inspector")
        shown = app.screen.record  # type: ignore[attr-defined]
        assert (shown.tick, shown.agent, shown.raw_output) == (rec.tick, rec.agent, rec.raw_output)
        await pilot.press("escape")
        await pilot.press("q")


async def test_live_search_without_a_recording_says_so(tmp_path: Path) -> None:
    org = org_four(tmp_path / "org")
    engine = sim_engine(org, seed=2, paused=True, interval=0.0, run_id="unrecorded")
    app = ControlRoom(engine, config_dir=tmp_path / "cfg", wall_clock=False, cursor_blink=False, animations=False,
                      pump_interval=0.02, watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await advance(pilot, app, 1)
        await pilot.press("slash")
        await pilot.pause()
        assert not isinstance(app.screen, SearchScreen)
        assert any("not recorded" in n.message for n in app._notifications)
        await pilot.press("q")
