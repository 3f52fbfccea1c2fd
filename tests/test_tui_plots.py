"""Plots (`s`): the series are the run's own figures, up to the cursor in replay."""

from __future__ import annotations

from pathlib import Path

from lemming.engine.events import CreditsCharged, TickCompleted, TurnFinished
from lemming.engine.store import RunStore
from textual.widgets import Label, Sparkline, Static

from lemming.tui.screens.plots import PlotsScreen
from lemming.tui.series import load_series, percentile
from lemming.tui.widgets.credits import money
from lemming.tui.widgets.plot import Plot, XAxis, x_axis
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
        spend = plots.query_one("#plot-spend", Plot)
        assert spend.query_one(Sparkline).data == want
        assert "spend per tick, bob" in str(plots.query_one("#plot-agent_spend .plot-label", Label).render())
        # the axes: the y-axis labelled with the series' largest and smallest value and the
        # unit, the x-axis with the tick range
        y = str(spend.query_one(".plot-y", Static).render()).splitlines()
        assert y[0] == f"{money(max(want))} cr" and y[-1] == f"{money(min(want))} cr"
        axis = str(spend.query_one(XAxis).render())
        assert axis.startswith("└tick 1") and axis.endswith("tick 5┘") and "tick 3" in axis
        assert len(axis) == spend.query_one(XAxis).size.width
        latency = plots.query_one("#plot-latency_p95", Plot)
        assert str(latency.query_one(".plot-y", Static).render()).splitlines()[0].endswith(" ms")
        await pilot.press("escape")
        await pilot.press("q")
    assert not app.failures


def test_the_x_axis_fits_its_width() -> None:
    assert x_axis([1, 2, 3, 4, 5, 6], 30) == "└tick 1─────tick 3─────tick 6┘"
    assert len(x_axis(list(range(100, 401)), 24)) == 24
    assert x_axis(list(range(100, 401)), 24).startswith("└tick 100") or x_axis(list(range(100, 401)), 24).startswith("└100")
    assert x_axis([], 5) == "└───┘" and x_axis([7], 12) == "└tick 7────┘"


async def test_the_credits_sparklines_read_quiet_ticks_and_their_scale(db: Path, tmp_path: Path) -> None:
    """At tick 5 of 16 shown: blank before tick 1, a dot for each tick an agent spent
    nothing in, a block for each tick it spent, on one scale the header states."""
    store = await RunStore.open(db, readonly=True)
    charges = [e for e in await store.events(RUN, prompts=False) if type(e) is CreditsCharged and e.tick <= 5]
    await store.close()
    app = replay_app(db, tmp_path / "cfg")
    async with app.run_test(size=SIZE) as pilot:
        screen = await replay_screen(pilot, app)
        await go(pilot, screen, 5)
        credits = screen.credits
        width = 150
        n = credits._spark_w(width)
        assert n == 16
        per_agent = {name: per_tick([(e.tick, e.amount) for e in charges if e.agent == name], 5, n)
                     for name in screen.view.order}
        peak = max(max(v) for v in per_agent.values())
        assert f"█ {money(peak)}/tick" in credits.render_header(width)[0].plain
        for i, name in enumerate(screen.view.order):
            agent = credits.source.org.agents.get(name)
            if agent is not None and not agent.resume.calls_model:  # "no model: never spends"
                continue
            row = credits.render_row(i, width).plain.rstrip()
            want = spark(per_agent[name], peak)
            want = " " * (n - 5) + "".join("·" if ch == " " else ch for ch in want[n - 5:])
            assert row.endswith(want), (name, row, want)
        await pilot.press("q")


async def test_the_y_axis_label_is_whole() -> None:
    """`166.20 tok/s` was cut to `166.20 tok/` by a fixed label width."""
    from textual.app import App, ComposeResult

    class One(App):
        def compose(self) -> ComposeResult:
            yield Plot("output tokens per second", "tok/s", id="p")

    app = One()
    async with app.run_test(size=(80, 24)) as pilot:
        plot = app.query_one(Plot)
        plot.show("tokens", [1, 2, 3], [12.5, 166.2, 0.4])
        await pilot.pause()
        y = plot.query_one(".plot-y", Static)
        top, bottom = str(y.render()).splitlines()[0], str(y.render()).splitlines()[-1]
        assert top == "166.20 tok/s" and bottom == "0.400 tok/s"
        assert y.content_region.width > len(top)  # whole, and a space before the axis
        assert plot.query_one(XAxis).region.x == plot.query_one(".plot-yline").region.x  # └ under ┤
