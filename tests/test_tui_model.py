"""RunView: the control room's fold of the engine's events (no Textual involved)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lemming.engine.engine import Engine
from lemming.engine.events import TickStarted, TokenDelta, TurnStarted
from lemming.engine.org import load_org
from lemming.engine.providers.registry import ProviderRegistry
from lemming.tui.model import MAX_TICK_ROWS, STREAM_CHARS, TURNS_PER_AGENT, RunView


async def _run(org_dir: Path, ticks: int, **kw) -> tuple[Engine, list]:
    org = load_org(org_dir)
    engine = Engine(org, seed=2, registry=ProviderRegistry(org.models), **kw)
    sub = engine.subscribe(tokens=True)
    await engine.run(ticks=ticks)
    return engine, sub.drain()


async def test_view_follows_the_run_tick_by_tick(org_dir: Path) -> None:
    engine, events = await _run(org_dir, 4)
    view = RunView(sorted(engine.org.agents))
    ch = view.apply(events)
    assert view.committed_tick == 4 and view.run_id == engine.run_id
    done = [r for r in view.rows if r.status == "done"]
    assert [r.tick for r in done] == [1, 2, 3, 4]
    assert done[0].fired == ("alice", "bob", "carol")  # carol every 2 from 1, dave every 3 from 0
    assert done[-1].total_spend == pytest.approx(engine.state.total_spend)  # the spend itself is the state's
    assert view.agents["alice"].turns == 4
    assert view.turn("alice").raw_output == engine.state.last_turn["alice"].raw_output
    # The stream pieces of one agent arrive in order: start, text..., end.
    kinds = [p.kind for p in ch.stream["alice"]]
    assert kinds[0] == "start" and kinds[-1] == "end" and "text" in kinds
    text = "".join(p.text for p in ch.stream["alice"] if p.kind == "text" and p.tick == 4)
    assert text == engine.state.last_turn["alice"].raw_output
    # Recent message volumes are what was committed.
    sent = sum(c for (frm, _), c in view.recent_volumes().items() if frm == "bob")
    assert sent >= 1 and engine.state.sent["bob"] >= sent


def test_token_text_of_one_agent_is_merged_per_batch() -> None:
    view = RunView(["a", "b"])
    events = [TickStarted(1, ("a", "b")), TurnStarted(1, "a", "sim"), TurnStarted(1, "b", "sim")]
    events += [TokenDelta(1, "a", "x") for _ in range(500)] + [TokenDelta(1, "b", "y")]
    ch = view.apply(events)
    texts = [p for p in ch.stream["a"] if p.kind == "text"]
    assert len(texts) == 1 and texts[0].text == "x" * 500
    assert view.agents["a"].thinking_tick == 1 and view.running_tick == 1


def test_what_the_view_keeps_is_bounded() -> None:
    view = RunView(["a"])
    view.apply([TurnStarted(1, "a", "sim")] + [TokenDelta(1, "a", "z" * 1000) for _ in range(50)])
    assert len(view.agents["a"].stream_text) == STREAM_CHARS
    for t in range(1, MAX_TICK_ROWS + 50):
        view.apply([TickStarted(t, ())])
    assert len(view.rows) == MAX_TICK_ROWS and view.rows[-1].tick == MAX_TICK_ROWS + 49
    assert view.row(1) is None and view.row(MAX_TICK_ROWS + 49) is not None
    assert view.agents["a"].history.maxlen == TURNS_PER_AGENT


async def test_operator_actions_show_on_the_tick_that_follows(org_dir: Path) -> None:
    org = load_org(org_dir)
    engine = Engine(org, seed=2, registry=ProviderRegistry(org.models), paused=True)
    sub = engine.subscribe(tokens=False)
    engine.inject("hi", ["bob"])
    engine.top_up("alice", 1.0)
    engine.set_enabled("dave", False)
    engine.step()
    task = asyncio.create_task(engine.run())
    for _ in range(200):
        await asyncio.sleep(0.01)
        if engine.tick >= 1:
            break
    engine.stop()
    await task
    view = RunView(sorted(org.agents))
    ch = view.apply(sub.drain())
    row1 = view.row(1)
    assert row1 is not None and row1.status == "done"
    assert row1.operator == ["✉→bob", "+1→alice", "disable dave"]
    assert not [n for n in ch.notices if n.severity == "error"]
