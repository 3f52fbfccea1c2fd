"""The bounded message board: what the live engine keeps of the run's messages.

A bounded board drops what no inbox can show any more; every inbox it gives must be
the one an unbounded board gives, whatever the schedule, the audiences and the
agents that never fire, and what it holds must not grow with the run.
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from lemming.engine.messages import OPERATOR, MessageBoard, OutboxEntry
from tests.support.faults import FAST

AGENTS = ["ann", "bo", "cy", "dee", "eve"]


def _held(board: MessageBoard) -> int:
    """Entry references the board holds: its windows and its marks."""
    n = 0
    for ob in board._index.values():
        for src in (ob.to_all, *ob.to.values()):
            n += len(src.entries) + sum(len(ctx) for _, ctx in src.marks.values())
    return n


def _run(seed: int, ticks: int, new_limit: int, context: int, fire_p: float, scan: bool = False) -> tuple[int, int]:
    """Run a random organisation on two boards, one bounded after every tick; every
    inbox of every turn must be the same. Returns (entries added, entries held)."""
    rng = random.Random(seed)
    readable = {a: rng.sample([*AGENTS, OPERATOR, "ghost"], rng.randint(0, 4)) for a in AGENTS}
    silent = rng.choice(AGENTS)  # never fires: its cursor stays at 0
    gone_quiet = rng.choice(AGENTS)  # stops firing halfway (broke, disabled)
    full, bounded = MessageBoard(), MessageBoard()
    cursors = {a: 0 for a in AGENTS}
    seq = 0
    for t in range(1, ticks + 1):
        if rng.random() < 0.1:  # the operator's message at the boundary (the last committed tick)
            rcpt = tuple(rng.sample(AGENTS, rng.randint(0, 2)))
            e = OutboxEntry(f"operator-{t - 1}-{seq}", t - 1, OPERATOR, "message", {"text": "op"}, recipients=rcpt, meta={"seq": seq})
            seq += 1
            full.add(e)
            bounded.add(e)
        fired = [
            a for a in AGENTS
            if a != silent and not (a == gone_quiet and t > ticks // 2) and rng.random() < fire_p
        ]
        for a in fired:
            want = full.inbox(a, readable[a], t, cursors[a], new_limit=new_limit, context=context)
            got = bounded.inbox(a, readable[a], t, cursors[a], new_limit=new_limit, context=context)
            assert got == want, (t, a)
            if scan:  # and both are what the plain scan of every outbox gives (the indexed path's reference)
                assert want == full._inbox_by_scan(a, readable[a], t, cursors[a], new_limit=new_limit, context=context), (t, a)
        for a in fired:  # the tick commits: each fired agent's turn, then its messages
            cursors[a] = t
            for i in range(rng.randint(0, 3)):
                rcpt = tuple(rng.sample(AGENTS, rng.randint(0, 2))) if rng.random() < 0.5 else ()
                e = OutboxEntry(f"{a}-{t}-{i}", t, a, "message", {"text": f"{a}{t}{i}"}, recipients=rcpt, meta={"seq": seq})
                seq += 1
                full.add(e)
                bounded.add(e)
        bounded.bound(cursors, readable, new_limit=new_limit, context=context)
    for a in AGENTS:  # and every agent's inbox at the end, the silent ones too
        want = full.inbox(a, readable[a], ticks + 1, cursors[a], new_limit=new_limit, context=context)
        assert bounded.inbox(a, readable[a], ticks + 1, cursors[a], new_limit=new_limit, context=context) == want
    assert bounded.count == full.count
    return full.count, _held(bounded)


@FAST
@given(st.integers(0, 10**9), st.integers(1, 120), st.integers(1, 6), st.integers(0, 4), st.floats(0.05, 1.0))
def test_a_bounded_board_gives_the_inboxes_of_an_unbounded_one(seed, ticks, new_limit, context, fire_p) -> None:
    _run(seed, ticks, new_limit, context, fire_p, scan=True)


def test_what_a_bounded_board_holds_does_not_grow_with_the_run() -> None:
    held = {}
    for ticks in (500, 5000):
        added, held[ticks] = _run(3, ticks, new_limit=4, context=2, fire_p=0.7)
        assert added > ticks  # the run wrote plenty
    assert held[5000] <= held[500] * 1.5 + 50, held


def test_a_bounded_board_drops_the_views_of_entries_it_no_longer_holds() -> None:
    board = MessageBoard()
    for t in range(1, 400):
        board.add(OutboxEntry(f"ann-{t}-0", t, "ann", "message", {"text": str(t)}, meta={"seq": t}))
        inbox = board.inbox("bo", ["ann"], t + 1, t, new_limit=3, context=2)
        for e in inbox.new + inbox.context:
            board.view_cache.setdefault(e.id, ("view", "\"view\""))
        board.bound({"ann": t, "bo": t}, {"ann": [], "bo": ["ann"]}, new_limit=3, context=2)
    assert len(board.view_cache) <= 2 * (3 + 2) + 1


async def _demo_events(root, *, bounded: bool, ticks: int) -> tuple[list[str], int]:
    import json

    from lemming.engine.engine import Engine
    from lemming.engine.org import load_org
    from lemming.engine.replay import canonical

    engine = Engine(load_org(root), seed=4)
    engine.state.bounded = bounded
    sub = engine.subscribe(tokens=False)
    await engine.run(ticks=ticks)
    log = [json.dumps(canonical(e.to_dict()), sort_keys=True) for e in sub.drain() if e.persistent]
    return log, _held(engine.state.board)


async def test_a_run_on_a_bounded_board_is_the_run_on_an_unbounded_one(tmp_path, monkeypatch) -> None:
    """The demo's shape (agents on different schedules, a seat that never fires, budgets
    that run out), bounded every few ticks: the same events, byte for byte."""
    import json

    from lemming.engine import messages
    from lemming.tui.bench.memory import make_long_run_org

    monkeypatch.setattr(messages, "BOUND_EVERY", 8)
    root = make_long_run_org(tmp_path)
    for resume in (root / "agents").glob("*/resume.json"):  # some go broke along the way
        d = json.loads(resume.read_text())
        d["credits"] = {"max_credits": {"analyst": 0.02, "qa": 0.05}.get(d["name"], 1e12)}
        resume.write_text(json.dumps(d))
    org = json.loads((root / "org.json").read_text())
    (root / "org.json").write_text(json.dumps({**org, "inbox_new_limit": 3, "inbox_context": 2}))
    full, held_full = await _demo_events(root, bounded=False, ticks=600)
    bounded, held_bounded = await _demo_events(root, bounded=True, ticks=600)
    assert any('"agent_skipped"' in line and '"broke"' in line for line in full)
    assert bounded == full
    assert held_bounded < held_full / 4, (held_bounded, held_full)  # and it stays so: see above


def test_a_reader_sees_new_sources_and_a_changed_readable_list() -> None:
    """The board keeps each reader's sources between inboxes: an author's first entry, its
    first entry for that reader, the operator's first, and a reader whose readable outboxes
    changed (a hot reload; the same list changed in place too) must show at once."""
    board = MessageBoard()
    readable = ["ann"]

    def check(t: int) -> None:
        got = board.inbox("bo", readable, t, 0, new_limit=10, context=2)
        assert got == board._inbox_by_scan("bo", readable, t, 0, new_limit=10, context=2)

    check(1)
    board.add(OutboxEntry("ann-1-0", 1, "ann", "message", {"text": "all"}, meta={"seq": 0}))
    check(2)
    board.add(OutboxEntry("ann-2-0", 2, "ann", "message", {"text": "bo"}, recipients=("bo",), meta={"seq": 1}))
    check(3)
    board.add(OutboxEntry("operator-2-2", 2, OPERATOR, "message", {"text": "op"}, recipients=("bo",), meta={"seq": 2}))
    board.add(OutboxEntry("cy-2-3", 2, "cy", "message", {"text": "cy"}, meta={"seq": 3}))
    check(3)
    assert [e.id for e in board.inbox("bo", readable, 3, 0, new_limit=10, context=2).new] == ["ann-1-0", "ann-2-0", "operator-2-2"]
    readable = ["ann", "cy"]
    check(3)
    readable.remove("ann")
    check(3)
    assert [e.id for e in board.inbox("bo", readable, 3, 0, new_limit=10, context=2).new] == ["operator-2-2", "cy-2-3"]
