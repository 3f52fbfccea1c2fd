"""The prompt and the sim take short cuts on the hot path; each must give exactly what the
plain version gives (the recorded prompts, hashes and replies of a seeded run depend on it)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from lemming.engine.jsontext import copy_plain, dumps_plain, dumps_sorted, dumps_text
from lemming.engine.messages import Inbox, MessageBoard, OutboxEntry
from lemming.engine.prompt import FENCE_RE, ContractViolation, _fenced, _view_pair, build_prompt, parse_reply, prompt_hash
from lemming.engine.providers.sim import CHUNK_TOKENS, TOKEN_RE, SimProvider
from lemming.engine.resume import Resume

text = st.lists(st.sampled_from(list("ab é`{}\"\\\n\t\u00a0\u2028\x1c") + ["```", "```json\n", "json"]), max_size=30).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


def _outcome(f, value):
    try:
        return f(value)
    except ValueError as e:
        return type(e)


@given(json_values)
def test_encoders_write_what_json_dumps_writes(value) -> None:
    assert _outcome(dumps_plain, value) == _outcome(lambda v: json.dumps(v, ensure_ascii=False, allow_nan=False), value)
    assert dumps_text(value) == json.dumps(value, ensure_ascii=False)
    assert dumps_sorted(value) == json.dumps(value, ensure_ascii=False, sort_keys=True)
    assert copy_plain(value) == copy.deepcopy(value)


def test_encoders_refuse_what_json_dumps_refuses() -> None:
    for bad in (float("nan"), {"a": [float("inf")]}):
        try:
            dumps_plain(bad)
        except ValueError:
            pass
        else:
            raise AssertionError("NaN and infinities are refused")
    loop: list = []
    loop.append(loop)
    try:
        dumps_plain(loop)
    except ValueError:
        pass
    else:
        raise AssertionError("a circular value is refused")
    try:
        dumps_plain({"a": object()})
    except TypeError:
        pass
    else:
        raise AssertionError("non-JSON types are refused")


@settings(max_examples=300)
@given(text)
def test_fence_lookup_is_the_regex(s: str) -> None:
    m = FENCE_RE.search(s)
    assert _fenced(s) == (m.group(1) if m else None)


@settings(max_examples=300)
@given(st.text(alphabet=st.sampled_from(list("abcdefghij \n\t\u00a0\u2003\x1c")), max_size=400))
def test_sim_chunks_are_its_tokens_joined(s: str) -> None:
    toks = TOKEN_RE.findall(s)
    assert SimProvider.chunks(s) == ["".join(toks[i : i + CHUNK_TOKENS]) for i in range(0, len(toks), CHUNK_TOKENS)]
    assert SimProvider(None).count_tokens(s) == len(toks)


def _plain_prompt(resume: Resume, *, tick, inbox, memory, readers, can_read, tool_results, balance, max_tokens):
    """build_prompt's context block as one json.dumps of the context dict."""

    def view(e: OutboxEntry) -> dict:
        d = {"id": e.id, "tick": e.tick, "from": e.agent, "kind": e.kind, "payload": e.payload}
        if e.recipients:
            d["to"] = list(e.recipients)
        if e.tags:
            d["tags"] = list(e.tags)
        return d

    context = {
        "tick": tick,
        "you": resume.name,
        "your_outbox_is_read_by": readers,
        "you_read_outboxes_of": can_read,
        "credits_left": round(balance, 6),
        "max_reply_tokens": max_tokens,
        "memory": memory,
        "inbox": {"new": [view(e) for e in inbox.new], "earlier": [view(e) for e in inbox.context], "not_shown": inbox.dropped},
        "tool_results": tool_results,
    }
    return f"Tick {tick}. Everything you know this turn:\n```json\n" + json.dumps(context, ensure_ascii=False, sort_keys=True) + "\n```\nReply with the JSON object only."


entries = st.builds(
    lambda i, agent, kind, payload, tags, to: OutboxEntry(f"{agent}-{i}", i, agent, kind, payload, tuple(tags), 0.0, tuple(to)),
    st.integers(0, 50),
    st.sampled_from(["ann", "bob", "operator", 'q"\\t\n']),
    st.sampled_from(["message", "note\u2028"]),
    json_values | st.builds(lambda t: {"text": t}, text),
    st.lists(text, max_size=2),
    st.lists(st.sampled_from(["ann", "bob", "cy"]), max_size=2),
)


@settings(max_examples=200)
@given(
    new=st.lists(entries, max_size=4),
    old=st.lists(entries, max_size=3),
    memory=st.dictionaries(text, json_values, max_size=4),
    balance=st.floats(allow_nan=False, allow_infinity=False) | st.integers(-5, 5),
    max_tokens=st.none() | st.integers(1, 5000),
    tool_results=st.lists(st.dictionaries(text, json_values, max_size=3), max_size=2),
    cached=st.booleans(),
    readers=st.lists(text, max_size=3),
    can_read=st.lists(text, max_size=3),
    tick=st.integers(0, 10**6),
)
def test_the_context_block_is_json_dumps_of_the_context(new, old, memory, balance, max_tokens, tool_results, cached, readers, can_read, tick) -> None:
    resume = Resume.model_validate(
        {"name": "cy", "title": "Tester", "model": "sim", "instructions": "Test.", "permissions": {"read_outboxes": ["*"], "tools": ["clock"]}}
    )
    # Ids are unique within a board (the cache relies on it).
    new = [dataclasses.replace(e, id=f"{e.agent}-{e.tick}-n{k}") for k, e in enumerate(new)]
    old = [dataclasses.replace(e, id=f"{e.agent}-{e.tick}-o{k}") for k, e in enumerate(old)]
    inbox = Inbox(new=new, context=old, dropped=len(new), view_cache={} if cached else None)
    args = dict(tick=tick, inbox=inbox, memory=memory, readers=readers, can_read=can_read, tool_results=tool_results, balance=balance, max_tokens=max_tokens)
    # Twice: the second time the entries' JSON comes from the cache.
    for _ in range(2):
        messages = build_prompt(resume, **args)  # type: ignore[arg-type]
        assert messages[1]["content"] == _plain_prompt(resume, **args)
        blob = json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        assert prompt_hash(messages) == hashlib.sha256(blob.encode()).hexdigest()


@settings(max_examples=300)
@given(
    agent=st.sampled_from(["ann", "a00073", 'q"\\t\n', "é\u2028"]),
    kind=st.sampled_from(["message", "note\u2028", 'k"']),
    text=text,
    tick=st.integers(-5, 10**9),
)
def test_an_entrys_view_is_its_json_and_that_json_escaped(agent, kind, text, tick) -> None:
    """The usual entry's view is written without json.dumps, escaped without escaping it
    when none of its strings needs escaping: both must be what json.dumps gives."""
    e = OutboxEntry(f"{agent}-{tick}-0", tick, agent, kind, {"text": text})
    view = json.dumps({"from": agent, "id": e.id, "kind": kind, "payload": {"text": text}, "tick": tick}, ensure_ascii=False, sort_keys=True)
    assert _view_pair(e) == (view, json.dumps(view, ensure_ascii=False)[1:-1])


def test_prompt_hash_of_other_shapes_is_the_json_hash() -> None:
    for messages in ([{"role": "user", "content": "hi"}], [{"role": "system", "content": "a", "name": "x"}, {"role": "user", "content": "b"}]):
        blob = json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        assert prompt_hash(messages) == hashlib.sha256(blob.encode()).hexdigest()


def test_a_board_keeps_each_entry_view_once() -> None:
    board = MessageBoard()
    board.add(OutboxEntry("ann-1-0", 1, "ann", "message", {"text": "hi"}))
    inbox = board.inbox("bob", ["ann"], 2, 0, new_limit=10, context=2)
    assert inbox.view_cache is board.view_cache
    resume = Resume.model_validate({"name": "bob", "model": "sim"})
    build_prompt(resume, tick=2, inbox=inbox, memory={}, readers=[], can_read=["ann"], tool_results=[], balance=1.0, max_tokens=None)
    assert set(board.view_cache) == {"ann-1-0"}
    assert re.search(r'"id": "ann-1-0"', board.view_cache["ann-1-0"][0])


reply_items = st.dictionaries(st.sampled_from(["kind", "payload", "tags", "recipients", "op", "key", "value", "tool", "args", "to", "content"]), json_values, max_size=5)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(["outbox_entries", "memory_updates", "tool_calls", "notes"]), st.lists(reply_items, max_size=3) | json_values, min_size=1))
def test_a_parsed_reply_dict_is_what_model_dump_gives(data) -> None:
    try:
        reply = parse_reply(json.dumps(data))
    except ContractViolation:
        return
    assert reply.to_dict() == {
        "outbox_entries": [e.model_dump(mode="json") for e in reply.entries],
        "memory_updates": [m.model_dump(mode="json") for m in reply.memory_updates],
        "tool_calls": [t.model_dump(mode="json") for t in reply.tool_calls],
        "notes": reply.notes,
    }


_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=70))
_values = st.recursive(_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=8)
_maybe_names = st.one_of(st.lists(st.text(max_size=8), max_size=25), st.lists(_scalars, max_size=3), _scalars)
_entry_items = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.one_of(st.text(max_size=70), _scalars),
        "payload": _values,
        "tags": _maybe_names,
        "recipients": _maybe_names,
        "to": st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5), max_size=2)),
        "content": st.text(max_size=10),
        "extra": _scalars,
    },
)
_memory_items = st.fixed_dictionaries(
    {},
    optional={
        "op": st.one_of(st.sampled_from(["set", "append", "merge", "delete", "pop", "SET"]), _scalars),
        "key": st.one_of(st.text(max_size=10), _scalars),
        "value": _values,
        "extra": _scalars,
    },
)


@settings(max_examples=400, deadline=None)
@given(entries=st.lists(st.one_of(_entry_items, _scalars), max_size=3), updates=st.lists(st.one_of(_memory_items, _scalars), max_size=3))
def test_the_fast_item_path_reads_replies_as_pydantic_does(entries, updates) -> None:
    """Items of the usual shape are read without pydantic: the parsed reply (items, fields
    given, violations) is the one the pydantic models alone give, for any item."""
    from lemming.engine import prompt

    assert prompt._FAST_OK
    text = json.dumps({"outbox_entries": entries, "memory_updates": updates})
    fast = parse_reply(text)
    prompt._FAST_OK = False
    try:
        slow = parse_reply(text)
    finally:
        prompt._FAST_OK = True
    assert fast.violations == slow.violations
    assert fast.to_dict() == slow.to_dict()
    for a, b in zip(fast.entries + fast.memory_updates, slow.entries + slow.memory_updates, strict=True):
        assert type(a) is type(b) and a == b and a.model_fields_set == b.model_fields_set


def test_the_usual_reply_items_take_the_fast_path() -> None:
    from lemming.engine import prompt

    assert prompt._fast_entry({"kind": "message", "payload": {"text": "hi"}, "tags": [], "recipients": ["b"]}) is not None
    assert prompt._fast_memory({"op": "set", "key": "k", "value": 1}) is not None
    # what only pydantic words: the older shape, a missing payload, a kind too long
    assert prompt._fast_entry({"to": "b", "content": "hi"}) is None
    assert prompt._fast_entry({"kind": "message"}) is None
    assert prompt._fast_entry({"kind": "k" * 65, "payload": "x"}) is None


@settings(max_examples=2000)
@given(st.floats() | st.integers(-10**20, 10**20) | st.integers(-10**12, 10**12).map(lambda n: n / 10**7))
def test_credits_are_written_as_json_dumps_of_the_rounded_balance(balance) -> None:
    from lemming.engine.prompt import _rounded_json

    assert _rounded_json(balance) == json.dumps(round(balance, 6))


@settings(max_examples=500)
@given(st.text(alphabet=st.sampled_from(["a", "é", "\x01", '"', "\\", "\ud800", "\U0001f600"]), max_size=40).map(lambda s: s * 100) | text)
def test_a_string_memory_value_is_checked_as_its_json(value) -> None:
    """A string value skips writing its JSON when it surely fits: the outcome is the one
    its JSON's length and Unicode give."""
    from lemming.engine.memory import MAX_VALUE_CHARS, MemoryChange, apply_update

    memory: dict = {}
    change, problem = apply_update(memory, "set", "k", value)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        assert problem == "memory key 'k': value is not valid Unicode (an unpaired surrogate)"
    elif len(json.dumps(value, ensure_ascii=False)) > MAX_VALUE_CHARS:
        assert problem == f"memory key 'k': value over {MAX_VALUE_CHARS} characters"
    else:
        assert problem is None and change == MemoryChange("set", "k", value) and memory == {"k": value}
