"""`OrgState.apply_all` (a batch at once, what the engine's commit calls) gives the state
that `apply` of each event in turn gives, on random batches of every kind that changes
the state, in any order and with repeats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lemming.engine.events import (
    AgentSkipped,
    CommandApplied,
    CreditsCharged,
    CreditsToppedUp,
    Event,
    MemoryChanged,
    MessageCommitted,
    RunPaused,
    RunResumed,
    SoftCapReached,
    TickCompleted,
    TickStarted,
    TokenDelta,
    TokenUsage,
    ToolCallFinished,
    ToolCallStarted,
    TurnFinished,
    TurnRecord,
    TurnStarted,
)
from lemming.engine.messages import OutboxEntry
from lemming.engine.org import load_org
from lemming.engine.state import OrgState
from tests.conftest import make_org

AGENTS = ("alice", "bob", "carol")
agent = st.sampled_from(AGENTS + ("operator",))
money = st.floats(min_value=0.0, max_value=10.0, allow_nan=False) | st.sampled_from([0.1, 0.2, 0.3, 1e-12])


def event(tick: int) -> st.SearchStrategy[Event]:
    def entry(a: str, i: int, to: tuple[str, ...]) -> MessageCommitted:
        return MessageCommitted(tick, OutboxEntry(f"{a}-{tick}-{i}", tick, a, "message", {"text": f"hi {i}"},
                                                  recipients=to, meta={"seq": i}))

    def record(a: str, status: str) -> TurnFinished:
        rec = TurnRecord(tick, a, "sim", "sim", "sim-1", [], "h", status=status, usage=TokenUsage(3, 4))
        return TurnFinished(tick, a, rec)

    return st.one_of(
        st.builds(entry, agent, st.integers(0, 99), st.lists(st.sampled_from(AGENTS), max_size=2).map(tuple)),
        st.builds(lambda a, op, k, v: MemoryChanged(tick, a, op, k, None if op == "delete" else v),
                  agent, st.sampled_from(["set", "append", "delete"]), st.sampled_from("xyz"),
                  st.one_of(st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=2),
                            st.dictionaries(st.sampled_from("ab"), st.integers(), max_size=2))),
        st.builds(lambda a, x, b: CreditsCharged(tick, a, x, b), agent, money, money),
        st.builds(lambda a, x, b: CreditsToppedUp(tick, a, x, b), agent, money, money),
        st.builds(lambda a, b: SoftCapReached(tick, a, b, 5.0), agent, money),
        st.builds(record, agent, st.sampled_from(["ok", "provider"])),
        st.builds(lambda a: ToolCallStarted(tick, a, 1, 0, "shell", "ls"), agent),
        st.builds(lambda a: ToolCallFinished(tick, a, 1, 0, "shell", True, "ok"), agent),
        st.builds(lambda a: TurnStarted(tick, a, "sim", 100), agent),
        st.builds(lambda a: AgentSkipped(tick, a, "broke"), agent),
        st.builds(lambda a: TokenDelta(tick, a, "x"), agent),
        st.builds(lambda a, on: CommandApplied(tick, "enable" if on else "disable", {"agents": [a]}), agent, st.booleans()),
        st.just(RunPaused(tick)),
        st.just(RunResumed(tick)),
        st.builds(lambda x: TickCompleted(tick, AGENTS, (), 1, x, x), money),
    )


def batches() -> st.SearchStrategy[list[list[Event]]]:
    """A few ticks' batches: each a start, random events, and (mostly) its completion last."""
    def tick_batch(tick: int) -> st.SearchStrategy[list[Event]]:
        return st.tuples(st.lists(event(tick), max_size=25), st.booleans()).map(
            lambda p: [TickStarted(tick, AGENTS), *p[0], *([TickCompleted(tick, AGENTS, (), 0, 0.0, 0.0)] if p[1] else [])]
        )

    return st.integers(1, 4).flatmap(lambda n: st.tuples(*(tick_batch(t) for t in range(1, n + 1))).map(list))


def _state(root: Path) -> OrgState:
    s = OrgState.initial(load_org(root))
    s.bounded = True
    return s


def _everything(s: OrgState) -> Any:
    d = s.to_dict()
    d.pop("org_root")
    # floats by their exact bits: the sums must be the very same additions
    d["total_spend"] = s.total_spend.hex()
    d["spent"] = {k: v.hex() for k, v in s.spent.items()}
    d["credits"] = {k: v.hex() for k, v in s.credits.items()}
    return json.dumps(d, default=str), list(s.spent), list(s.sent), list(s.memory), dict(s.running_tool), s.paused


@settings(max_examples=150, deadline=None)
@given(batches=batches())
def test_apply_all_is_apply_of_each_event(tmp_path_factory, batches: list[list[Event]]) -> None:
    root = make_org(tmp_path_factory.mktemp("org"), {name: {} for name in AGENTS})
    one, all_ = _state(root), _state(root)
    for batch in batches:
        for ev in batch:
            one.apply(ev)
        all_.apply_all(batch)
        assert _everything(all_) == _everything(one)
