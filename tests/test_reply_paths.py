"""A reply's items of the usual shape are written in their record form in the pass that
checks them (engine/prompt.py), and the turn's outcome is worked out from that form
(`Engine._outcome`): for any reply, the parsed reply, the record and the events a run
commits are the ones the pydantic models alone give."""

from __future__ import annotations

import asyncio
import json
import math
import struct
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lemming.engine import prompt
from lemming.engine.engine import Engine, round12
from lemming.engine.events import TurnFinished
from lemming.engine.memory import MemoryChange, apply_update, update_memory
from lemming.engine.org import Org, load_org
from lemming.engine.prompt import ContractViolation, parse_reply
from lemming.engine.replay import canonical
from tests.conftest import make_org
from tests.support import scripted_provider as sp
from tests.test_faults_hostile import FAST_RETRY, raw_reply, reply_text

# --- replies mostly of the usual shape, with what the fast checks must send to pydantic ---

_text = st.text(st.characters(codec="utf-8"), max_size=12)
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-2, 2, allow_nan=False), _text)
_value = st.recursive(_scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(_text, c, max_size=3), max_leaves=6)
_names = st.lists(st.sampled_from(["alpha", "beta", "gamma", "operator", "ghost", "*", ""]), max_size=3)
_usual_entry = st.fixed_dictionaries(
    {"payload": st.one_of(st.builds(lambda t: {"text": t}, _text), _text, _value)},
    optional={"kind": st.one_of(st.just("message"), st.text(max_size=66)), "tags": _names, "recipients": _names},
)
_odd_entry = st.one_of(
    st.fixed_dictionaries({}, optional={"kind": _scalar, "payload": _value, "tags": _value, "recipients": _value}),
    st.builds(lambda to, c: {"to": to, "content": c}, st.one_of(_text, _names), _text),
    _scalar,
)
_usual_update = st.fixed_dictionaries(
    {"key": st.sampled_from(["k", "log", "cfg", "a.b:c-d_e", "bad/key", "", "x" * 65])},
    optional={"op": st.sampled_from(["set", "append", "merge", "delete"]), "value": _value},
)
_odd_update = st.one_of(
    st.fixed_dictionaries({}, optional={"op": st.one_of(_scalar, st.just("pop")), "key": _value, "value": _value}),
    _scalar,
)
usual_reply = st.fixed_dictionaries(
    {},
    optional={
        "outbox_entries": st.one_of(st.lists(_usual_entry, max_size=3), st.lists(st.one_of(_usual_entry, _odd_entry), max_size=3), _scalar),
        "memory_updates": st.one_of(st.lists(_usual_update, max_size=4), st.lists(st.one_of(_usual_update, _odd_update), max_size=3), _scalar),
        "notes": st.one_of(_text, _value),
    },
)


def _both_ways(text: str) -> tuple[Any, Any]:
    """parse_reply of `text` with the fast checks and with the pydantic models alone."""
    def parse() -> Any:
        try:
            return parse_reply(text)
        except ContractViolation as e:
            return str(e)

    assert prompt._FAST_OK
    fast = parse()
    prompt._FAST_OK = False
    try:
        slow = parse()
    finally:
        prompt._FAST_OK = True
    return fast, slow


def _same_parse(text: str) -> None:
    fast, slow = _both_ways(text)
    if isinstance(slow, str):
        assert fast == slow
        return
    assert fast.violations == slow.violations and fast.repaired == slow.repaired and fast.notes == slow.notes
    assert fast == slow
    record = fast.to_dict()
    assert json.dumps(record) == json.dumps(slow.to_dict())  # (key order too: the store writes it)
    for a, b in zip(fast.entries + fast.memory_updates, slow.entries + slow.memory_updates, strict=True):
        assert type(a) is type(b) and a == b and a.model_fields_set == b.model_fields_set
    # The models made from the record form hold copies: the record keeps what it had.
    kept = json.dumps(record)
    for e in fast.entries:
        if isinstance(e.payload, (dict, list)):
            e.payload.clear()
        e.tags.append("changed")
    for m in fast.memory_updates:
        if isinstance(m.value, (dict, list)):
            m.value.clear()
    assert json.dumps(record) == kept


@settings(max_examples=400, deadline=None)
@given(usual_reply)
def test_usual_replies_parse_as_the_models_alone_parse_them(doc) -> None:
    _same_parse(json.dumps(doc))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_reply())
def test_hostile_replies_parse_as_the_models_alone_parse_them(recipe) -> None:
    _same_parse(reply_text(recipe))


def test_the_usual_reply_is_read_in_its_record_form() -> None:
    reply = parse_reply(json.dumps({
        "outbox_entries": [{"kind": "message", "payload": {"text": "hi"}}],
        "memory_updates": [{"op": "set", "key": "k", "value": "v"}],
    }))
    assert reply._entries is None and reply._updates is None  # (no model made)
    assert reply.to_dict() == {
        "outbox_entries": [{"kind": "message", "payload": {"text": "hi"}, "tags": [], "recipients": []}],
        "memory_updates": [{"op": "set", "key": "k", "value": "v"}],
        "tool_calls": [],
        "notes": "",
    }
    # a list with one item only pydantic reads is read by the models, item by item
    mixed = parse_reply(json.dumps({"outbox_entries": [{"payload": "a"}, {"to": "b", "content": "c"}, {"kind": ""}]}))
    assert mixed._entries is not None and [e.payload for e in mixed.entries] == ["a", {"text": "c"}]
    assert mixed.violations == ["outbox_entries[2].kind: String should have at least 1 character"]


# --- the same events from a run, either way ------------------------------------------------

_org: Org | None = None


def _scripted() -> None:
    from lemming.engine.providers import registry

    registry.ADAPTERS["scripted"] = ("tests.support.scripted_provider", "ScriptedProvider")


def _org_once(root: Path) -> Org:
    global _org
    _scripted()
    if _org is None:
        make_org(
            root,
            {
                "alpha": {"model": "scripted", "reads": ["beta"], "credits": {"max_credits": 0.05, "soft_cap": 0.03}},
                "beta": {"model": "scripted", "reads": ["alpha"]},
                "gamma": {"model": "scripted", "reads": ["alpha"]},
            },
            models=sp.SCRIPTED_MODELS,
        )
        _org = load_org(root)
    return _org


def _events(org: Org, replies: list[str]) -> list[str]:
    sp.SEEN.clear()
    sp.DELAYS.clear()
    sp.REPLIES.clear()
    sp.REPLIES["alpha"] = lambda ctx: replies[(ctx["tick"] - 1) % len(replies)]
    sp.REPLIES["beta"] = lambda ctx: replies[ctx["tick"] % len(replies)]

    async def go() -> list:
        engine = Engine(org, seed=5, retry_policy=FAST_RETRY)
        sub = engine.subscribe(tokens=False)
        assert await asyncio.wait_for(engine.run(ticks=3), 30) == "completed"
        return sub.drain()

    events = [e for e in asyncio.run(go()) if e.persistent]
    assert any(isinstance(e, TurnFinished) for e in events)
    return [json.dumps(canonical(e.to_dict()), sort_keys=True) for e in events]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(usual_reply.map(json.dumps), raw_reply().map(reply_text)), min_size=1, max_size=3))
def test_a_run_commits_the_events_the_models_alone_give(tmp_path_factory, replies) -> None:
    """Messages (with their recipients checked), memory changes over several ticks, the
    charges and the records (parsed reply, violations) are the same from the record form
    as from the pydantic models."""
    org = _org_once(tmp_path_factory.mktemp("org"))
    fast = _events(org, replies)
    prompt._FAST_OK = False
    try:
        slow = _events(org, replies)
    finally:
        prompt._FAST_OK = True
    assert fast == slow


# --- the memory update and the balance's rounding --------------------------------------------


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(["set", "append", "merge", "delete", "pop"]), st.sampled_from(["k", "log", "bad/key"]), _value), max_size=8))
def test_update_memory_is_apply_update(updates) -> None:
    a: dict = {}
    b: dict = {}
    for op, key, value in updates:
        change, problem = apply_update(a, op, key, value)
        assert update_memory(b, op, key, value) == problem
        assert a == b
        if problem is None:
            assert change == MemoryChange(op, key, b.get(key))


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


@settings(max_examples=3000)
@given(
    st.floats()
    | st.floats(-20000, 20000)
    | st.integers(-(10**16), 10**16).map(lambda n: n / 1e12)
    | st.integers(-(10**15), 10**15).map(lambda n: (n + 0.5) / 1e12)
    | st.integers(-(10**16), 10**16).map(lambda n: n / 1e12 + 5e-13)
    | st.floats(-1e-9, 1e-9)
)
def test_round12_is_round_to_12_places(x: float) -> None:
    got, want = round12(x), round(x, 12)
    assert _bits(got) == _bits(want) or (math.isnan(got) and math.isnan(want))
