"""Plots (`s`): the series are the run's own figures, up to the cursor in replay."""

from __future__ import annotations

from pathlib import Path

from lemming.engine.events import CreditsCharged, TickCompleted, TurnFinished
from lemming.engine.store import RunStore
from lemming.tui.screens.plots import PlotsScreen
from lemming.tui.series import load_series, percentile
from lemming.tui.widgets.sparkline import per_tick, spark
from tests.support.app_driver import wait_for
from tests.test_tui_replay import RUN, SIZE, at_tick, db, go, recording, replay_app, replay_screen  # noqa: F401


def test_spark_and_per_tick() -> None:
    assert spark([0, 1, 2, 4]) == " ▃▅█"  # eight levels, rounded
    assert spark([1, 1], top=4) == "▃▃" and spark([0, 0]) == "  "
    assert per_tick([(3, 1.0), (5, 2.0), (5, 0.5), (1, 9.0)], 5, 3) == [1.0, 0.0, 2.5]


async def test_series_are_the_runs_figures(db: Path) -> None:
    store = await RunStore.open(db, readonly=True)
    try:
        events = await store.events(RUN, prompts=False)
        series = await load_series(store, RUN, 6, "alice")
        ticks = [e for e in events if type(e) is TickCompleted and e.tick <= 6]
        assert series.ticks == [e.tick for e in ticks] == list(range(1, 7))
        assert series.spend == [e.spend for e in ticks]
        assert series.failures == [len(e.failed) for e in ticks]
        for i, t in enumerate(series.ticks):
            lat = [e.record.latency_ms for e in events if type(e) is TurnFinished and e.tick == t]
            assert series.latency_p50[i] == percentile(lat, 0.5) and series.latency_p95[i] == percentile(lat, 0.95)
            mine = sum(e.amount for e in events if type(e) is CreditsCharged and e.tick == t and e.agent == "alice")
            assert abs(series.agent_spend[i] - mine) < 1e-12
            done = ticks[i]
            toks = sum(e.record.usage.output_tokens for e in events if type(e) is TurnFinished and e.tick == t)
            assert series.tokens_per_s[i] == (toks / (done.duration_ms / 1000) if done.duration_ms > 0 else 0.0)
        assert any(series.agent_spend) and any(series.latency_p50)
    finally:
        await store.close()


async def test_replay_plots_cover_the_run_up_to_the_cursor(db: Path, tmp_path: Path) -> None:
    store = await RunStore.open(db, readonly=True)
    want = [e.spend for e in await store.events(RUN, prompts=False) if type(e) is TickCompleted and e.tick <= 5]
    await store.close()
    app = replay_app(db, tmp_path / "cfg")
    async with app.run_test(size=SIZE) as pilot:
        screen = await replay_screen(pilot, app)
        await go(pilot, screen, 5)
        screen.select_agent("bob")
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, PlotsScreen) and app.screen.series is not None, what="plots")
        plots: PlotsScreen = app.screen  # type: ignore[assignment]
        assert plots.series.ticks == [1, 2, 3, 4, 5] and plots.series.agent == "bob"
        assert plots.query_one("#plot-spend").data == want
        assert "spend per tick, bob" in str(plots.query_one("#label-agent_spend").render())
        await pilot.press("escape")
        await pilot.press("q")
    assert not app.failures
