"""Permission boundaries, as properties over random organisations and runs.

Random read graphs (names, `*`, agents that do not exist), schedules, operator
injections to random recipients, and agents whose replies address anybody —
themselves, the operator, agents that may not read them, agents that do not exist —
while claiming to be someone else. Whatever happens:

* no agent's prompt holds an entry from an outbox it may not read, or one addressed
  only to others, or one from its own tick or later;
* every entry an agent may read reaches it, once, as new, at its next turn;
* an agent writes only its own outbox and its own memory, as itself;
* an operator message reaches exactly its recipients.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lemming.engine.engine import Engine
from lemming.engine.events import CommandApplied, MemoryChanged, MessageCommitted, TurnFinished
from lemming.engine.messages import OPERATOR
from lemming.engine.org import Org, load_org
from lemming.engine.prompt import extract_context
from lemming.engine.providers.retry import RetryPolicy
from tests.support import faults as fs
from tests.support import scripted_provider as sp
from tests.conftest import make_org
from tests.support.faults import FAST, slow

POOL = ["ann", "bo", "cy", "dee", "eve", "fay", "gus", "hal"]
MARK_RE = re.compile(r"M\|[a-z]+\|\d+\|\d+\||OP\|\d+\|")


@dataclass
class OrgSpec:
    agents: dict[str, dict[str, Any]]
    injections: dict[int, list[list[str] | None]]  # before tick t+1 (i.e. after tick t): recipients
    ticks: int
    seed: int
    provider: str  # "scripted" or "sim"
    disabled: dict[int, list[str]] = field(default_factory=dict)


@st.composite
def org_specs(draw, provider: str) -> OrgSpec:
    names = draw(st.lists(st.sampled_from(POOL), min_size=2, max_size=6, unique=True))
    agents: dict[str, dict[str, Any]] = {}
    for n in names:
        if draw(st.integers(0, 5)) == 0:
            reads: list[str] = ["*"]
        else:
            reads = draw(st.lists(st.sampled_from(names + ["ghost", n, OPERATOR]), max_size=len(names), unique=True))
        agents[n] = {
            "model": provider,
            "reads": reads,
            "every": draw(st.integers(1, 3)),
            "offset": draw(st.integers(-2, 2)),
            "tools": draw(st.sampled_from([[], ["list_agents", "memory_read", "clock"]])),
        }
    ticks = draw(st.integers(2, 7))
    recip = st.one_of(st.none(), st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
    injections = draw(st.dictionaries(st.integers(0, ticks - 1), st.lists(recip, min_size=1, max_size=2), max_size=3))
    disabled = draw(st.dictionaries(st.integers(0, ticks - 1), st.lists(st.sampled_from(names), max_size=1, unique=True), max_size=1))
    return OrgSpec(agents, injections, ticks, draw(st.integers(0, 2**32)), provider, disabled)


def _scripted_reply(agents: list[str], seed: int):
    """Replies that address anybody and claim to be anybody: the engine must not care."""

    def reply(ctx: dict[str, Any]) -> dict[str, Any]:
        me, tick = ctx["you"], ctx["tick"]
        rng = random.Random(f"{seed}:{me}:{tick}")
        targets = agents + [OPERATOR, "ghost", "all", "*", me, "../" + me]
        entries = []
        for i in range(rng.randint(0, 3)):
            k = rng.randint(0, 3)
            recipients = rng.sample(targets, k)
            entries.append(
                {
                    "kind": "message",
                    "payload": {"text": f"M|{me}|{tick}|{i}| hello"},
                    "recipients": recipients,
                    # Claims the engine must ignore.
                    "agent": rng.choice(agents + [OPERATOR]),
                    "from": OPERATOR,
                    "id": f"{rng.choice(agents)}-{tick}-{i}",
                    "meta": {"seq": -1},
                }
            )
        return {
            "agent": rng.choice(agents + [OPERATOR]),
            "outbox_entries": entries,
            "memory_updates": [
                {"op": "set", "key": f"t{tick}", "value": tick},
                {"op": "set", "key": "../" + rng.choice(agents), "value": 1},
                {"op": "append", "key": "log", "value": me},
            ],
            "tool_calls": [{"tool": "list_agents", "args": {}}],
            "notes": "claims",
        }

    return reply


_dirs: fs.ScratchDirs | None = None


def _build(spec: OrgSpec) -> tuple[Org, Path]:
    global _dirs
    if _dirs is None:
        _dirs = fs.ScratchDirs("perm")
    root = _dirs.new()
    models = sp.SCRIPTED_MODELS if spec.provider == "scripted" else None
    make_org(root, {n: dict(a) for n, a in spec.agents.items()}, models=models)
    # A generous inbox, so "reaches it once" is exact (the limit has its own tests).
    (root / "org.json").write_text(json.dumps({"inbox_new_limit": 10_000, "inbox_context": 3}))
    return load_org(root), root


async def _drive(org: Org, spec: OrgSpec) -> tuple[Engine, list]:
    engine = Engine(org, seed=spec.seed, paused=True, retry_policy=RetryPolicy(2, 0.001, 0.002, 0.01))
    sub = engine.subscribe(tokens=False)
    task = asyncio.create_task(engine.run())
    for t in range(spec.ticks):
        for k, recipients in enumerate(spec.injections.get(t, [])):
            engine.inject(f"OP|{t * 10 + k}| from the operator", recipients)
        for name in spec.disabled.get(t, []):
            engine.set_enabled(name, False)
        for name in spec.disabled.get(t - 2, []):
            engine.set_enabled(name, True)
        engine.step()
        for _ in range(5_000):
            await asyncio.sleep(0)
            if engine.tick > t:
                break
            await asyncio.sleep(0.001)
        assert engine.tick == t + 1, f"tick {t + 1} did not complete"
    engine.stop()
    assert await asyncio.wait_for(task, 30) == "stopped"
    return engine, sub.drain()


def may_read(spec: OrgSpec, reader: str, author: str) -> bool:
    """The rule, restated independently of the engine: `*` is every other agent."""
    reads = spec.agents[reader]["reads"]
    return author != reader and ("*" in reads or author in reads)


def check_run(spec: OrgSpec) -> None:
    if spec.provider == "scripted":
        from lemming.engine.providers import registry

        registry.ADAPTERS["scripted"] = ("tests.support.scripted_provider", "ScriptedProvider")
        sp.SEEN.clear()
        sp.DELAYS.clear()
        sp.REPLIES.clear()
        for n in spec.agents:
            sp.REPLIES[n] = _scripted_reply(sorted(spec.agents), spec.seed)
    org, root = _build(spec)
    try:
        with fs.EnvPatch(fs.fast_sim_env()):
            engine, events = asyncio.run(_drive(org, spec))
    finally:
        _dirs.drop(root)  # type: ignore[union-attr]
    agents = set(spec.agents)

    committed: dict[str, Any] = {}
    injected: set[str] = set()
    turns: dict[tuple[str, int], Any] = {}
    for ev in events:
        fs.assert_storable(ev.to_dict(), type(ev).__name__)
        if isinstance(ev, CommandApplied) and ev.command == "inject":
            injected.add(ev.args["id"])
        elif isinstance(ev, TurnFinished):
            turns[(ev.agent, ev.tick)] = ev.record
            assert ev.record.status == "ok", (ev.agent, ev.record.status, ev.record.error)
        elif isinstance(ev, MessageCommitted):
            e = ev.entry
            assert e.id not in committed, f"entry {e.id} committed twice"
            committed[e.id] = e
            assert set(e.recipients) <= agents | {OPERATOR}, e.recipients
            if e.agent == OPERATOR:
                assert e.id in injected, f"an operator entry nobody injected: {e.id}"
            else:
                # Written by the agent whose turn it was, whatever the reply claimed.
                assert e.agent in agents and (e.agent, ev.tick) in turns and e.tick == ev.tick
                assert e.id.startswith(f"{e.agent}-{e.tick}-")
                if spec.provider == "scripted":
                    assert e.payload["text"].startswith(f"M|{e.agent}|{e.tick}|"), (e.agent, e.payload)
        elif isinstance(ev, MemoryChanged):
            assert (ev.agent, ev.tick) in turns, f"{ev.agent} changed memory without a turn at {ev.tick}"
    assert injected <= committed.keys()
    # Memory: each agent's own, and only what its own replies wrote.
    for name, mem in engine.state.memory.items():
        if spec.provider == "scripted" and "log" in mem:
            assert set(mem["log"]) == {name}
        assert all(not k.startswith("..") for k in mem)
    for name, box in engine.state.board.outboxes.items():
        assert all(e.agent == name for e in box)

    by_marker = {}
    for e in committed.values():
        text = e.payload.get("text") if isinstance(e.payload, dict) else None
        if isinstance(text, str):
            m = MARK_RE.match(text)
            if m:
                by_marker[m.group(0)] = e

    def visible(reader: str, e, tick: int) -> bool:
        if e.tick >= tick:
            return False
        if e.agent == OPERATOR:
            return not e.recipients or reader in e.recipients
        return may_read(spec, reader, e.agent) and (not e.recipients or reader in e.recipients)

    shown_new: dict[str, list[tuple[int, str]]] = {n: [] for n in agents}
    for (reader, tick), rec in sorted(turns.items(), key=lambda kv: kv[0][1]):
        ctx = extract_context(rec.prompt[1]["content"])
        assert ctx is not None and ctx["you"] == reader and ctx["tick"] == tick
        for part in ("new", "earlier"):
            for view in ctx["inbox"][part]:
                e = committed[view["id"]]
                assert view["from"] == e.agent
                assert visible(reader, e, tick), f"{reader}@{tick} was shown {e.id} ({part})"
                if part == "new":
                    shown_new[reader].append((tick, e.id))
        # Nothing else leaks into the prompt text: every marker in it is visible.
        whole = rec.prompt[0]["content"] + rec.prompt[1]["content"]
        for mark in set(MARK_RE.findall(whole)):
            e = by_marker[mark]
            assert e.agent == reader or visible(reader, e, tick), f"{mark} leaked into {reader}@{tick}"

    # Completeness: each visible entry is new exactly once, at the reader's first turn after it.
    for reader in agents:
        ticks_fired = sorted(t for (a, t) in turns if a == reader)
        expected = []
        for e in committed.values():
            if e.agent == reader:
                continue
            later = [t for t in ticks_fired if t > e.tick]
            if later and visible(reader, e, later[0]):
                expected.append((later[0], e.id))
        assert sorted(shown_new[reader]) == sorted(expected), reader

    # Operator messages: exactly their recipients (every agent when none are named).
    for oid in injected:
        e = committed[oid]
        got = {r for r in agents if any(i == oid for _, i in shown_new[r])}
        fired_after = {a for (a, t) in turns if t > e.tick}
        want = (set(e.recipients) or agents) & fired_after
        assert got == want, (oid, e.recipients, got, want)


@FAST
@given(org_specs("scripted"))
def test_permission_boundaries_hold_for_random_orgs_and_hostile_replies(spec: OrgSpec) -> None:
    check_run(spec)


@FAST
@given(org_specs("sim"))
def test_permission_boundaries_hold_for_random_orgs_on_the_sim(spec: OrgSpec) -> None:
    check_run(spec)


@slow
@given(org_specs("scripted"))
def test_permission_boundaries_scripted_10k(spec: OrgSpec) -> None:
    check_run(spec)


@slow
@given(org_specs("sim"))
def test_permission_boundaries_sim_10k(spec: OrgSpec) -> None:
    check_run(spec)


@st.composite
def boards(draw):
    """A message board with random authors, ticks and audiences (the operator's included)."""
    from lemming.engine.messages import MessageBoard, OutboxEntry

    authors = ["ann", "bo", "cy", OPERATOR]
    board = MessageBoard()
    seq = 0
    for t in range(draw(st.integers(0, 12))):
        for _ in range(draw(st.integers(0, 4))):
            a = draw(st.sampled_from(authors))
            recipients = tuple(draw(st.lists(st.sampled_from(["ann", "bo", "cy", "dee"]), max_size=3)))
            board.add(OutboxEntry(f"{a}-{t}-{seq}", t, a, "message", {"text": str(seq)}, recipients=recipients, meta={"seq": seq}))
            seq += 1
    return board


@FAST
@given(
    boards(),
    st.sampled_from(["ann", "bo", "dee"]),
    st.lists(st.sampled_from(["ann", "bo", "cy", "ghost", OPERATOR]), unique=True),
    st.integers(0, 14),
    st.integers(0, 14),
    st.integers(1, 6),
    st.integers(0, 4),
)
def test_the_indexed_inbox_equals_a_scan_of_every_outbox(board, name, readable, tick, since, new_limit, context) -> None:
    fast = board.inbox(name, readable, tick, since, new_limit=new_limit, context=context)
    slow = board._inbox_by_scan(name, readable, tick, since, new_limit=new_limit, context=context)
    assert fast == slow
    shown = [e.id for e in fast.new]
    assert len(shown) == len(set(shown)), "an entry shown twice"
