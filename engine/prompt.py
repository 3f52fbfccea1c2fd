"""An agent's prompt, and the parsing of its reply.

The prompt is two messages: a system message (who the agent is and the reply
contract) and a user message holding this turn's context as one fenced JSON
block. The reply must be one JSON object (`AgentReply`); fenced or slightly
malformed JSON is repaired where that is safe, otherwise the turn is a recorded
contract violation.
"""

from __future__ import annotations

import hashlib
import json
import re
from json.encoder import encode_basestring as _encode_str
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lemming.engine import plainjson
from lemming.engine.jsontext import copy_plain, dumps_plain, dumps_sorted
from lemming.engine.messages import Inbox, OutboxEntry
from lemming.engine.resume import Resume
from lemming.engine.tools.specs import describe as describe_tools

MAX_ENTRIES_PER_TURN = 20
MAX_PAYLOAD_CHARS = 20_000
MAX_TOOL_CALLS = 10
MAX_MEMORY_UPDATES = 100
MAX_NOTES_CHARS = 2000

REPLY_SCHEMA_TEXT = """\
Reply with ONE JSON object and nothing else:
{
  "outbox_entries": [            // messages you publish in YOUR outbox (0-20)
    {"kind": "message", "payload": {"text": "..."}, "tags": [], "recipients": []}
  ],                             // recipients: agent names; [] = whoever may read your outbox
  "memory_updates": [            // your private memory
    {"op": "set" | "append" | "merge" | "delete", "key": "name", "value": ...}
  ],
  "tool_calls": [{"tool": "name", "args": {}}],   // you get the results in this turn
  "notes": "a short note for the operator"
}"""
#: How a turn with tool calls goes on (shown to agents that hold tools).
TOOL_ROUNDS_TEXT = """\
When your reply has tool_calls, they are run and you are asked again, in this same turn,
with their results; reply again (with more tool_calls, or with none when you are done).
The messages and memory updates of all your replies of the turn are kept (a message
repeated word for word is sent once)."""


class ReplyEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kind: str = Field(default="message", min_length=1, max_length=64)
    payload: Any = None
    tags: list[str] = Field(default_factory=list, max_length=20)
    recipients: list[str] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, v: Any) -> Any:
        # LeMMing's older agents reply {"to": "x", "content": "..."}.
        if isinstance(v, dict) and "payload" not in v and ("content" in v or "text" in v):
            v = dict(v)
            v["payload"] = {"text": v.pop("content", None) or v.pop("text", None)}
            to = v.pop("to", None)
            if isinstance(to, str):
                v.setdefault("recipients", [] if to in ("*", "all", "") else [to])
            elif isinstance(to, list):
                v.setdefault("recipients", to)
        return v

    @model_validator(mode="after")
    def _payload_size(self) -> "ReplyEntry":
        if self.payload is None:
            raise ValueError("payload is required")
        try:
            size = len(dumps_plain(self.payload))
        except (TypeError, ValueError) as e:
            raise ValueError(f"payload is not plain JSON ({e})") from None
        if size > MAX_PAYLOAD_CHARS:
            raise ValueError(f"payload is {size} characters; the limit is {MAX_PAYLOAD_CHARS}")
        return self


class MemoryUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    op: Literal["set", "append", "merge", "delete"] = "set"
    key: str
    value: Any = None


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    tool: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)


class AgentReply(BaseModel):
    """The whole reply, as the parser reads it: the schema sent as structured output
    (`lemming.engine.reply_schema`) is generated from this model. The parser validates
    item by item (a bad entry is a violation, not a lost turn) against the same parts."""

    model_config = ConfigDict(extra="ignore")

    outbox_entries: list[ReplyEntry] = Field(default_factory=list, max_length=MAX_ENTRIES_PER_TURN)
    memory_updates: list[MemoryUpdate] = Field(default_factory=list, max_length=MAX_MEMORY_UPDATES)
    tool_calls: list[ToolCall] = Field(default_factory=list, max_length=MAX_TOOL_CALLS)
    notes: str = Field(default="", max_length=MAX_NOTES_CHARS)


class _Models:
    """A ParsedReply's items as models: what its slot `held` holds, or, when that is None,
    the models made (by `make`) from the record form in its slot `records` on first use."""

    def __init__(self, held: str, records: str, make: Any) -> None:
        self.held, self.records, self.make = held, records, make

    def __get__(self, reply: Any, owner: type | None = None) -> Any:
        if reply is None:
            return self
        models = getattr(reply, self.held)
        if models is None:
            records, items = getattr(reply, self.records)
            models = [self.make(r, item) for r, item in zip(records, items)]
            setattr(reply, self.held, models)
        return models

    def __set__(self, reply: Any, models: list) -> None:
        setattr(reply, self.held, models)


class ParsedReply:
    """A reply that parsed, with whatever parts of it were rejected.

    Its outbox entries and memory updates are held in one of two forms, list by list:
    as the record keeps them (`to_dict`'s dicts, which the parse builds in the pass that
    checks the items, for a list whose items are all of the usual shape), or as the
    pydantic models (for any other list). `entries` and `memory_updates` give the models,
    made from the record form on first use; once they are given, `to_dict` writes them."""

    __slots__ = ("_entries", "_entry_records", "_updates", "_update_records", "tool_calls", "notes", "violations", "repaired")

    def __init__(
        self,
        entries: list[ReplyEntry] | None = None,
        memory_updates: list[MemoryUpdate] | None = None,
        tool_calls: list[ToolCall] | None = None,
        notes: str = "",
        violations: list[str] | None = None,
        repaired: str | None = None,  # what was repaired, if anything
        *,
        entry_records: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None,
        update_records: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None,
    ) -> None:
        # (a list given in its record form, with the items it was read from, has no models yet)
        self._entries = None if entry_records is not None else [] if entries is None else entries
        self._entry_records = entry_records
        self._updates = None if update_records is not None else [] if memory_updates is None else memory_updates
        self._update_records = update_records
        self.tool_calls = [] if tool_calls is None else tool_calls
        self.notes = notes
        self.violations = [] if violations is None else violations
        self.repaired = repaired

    #: The items as models (a list the caller may change), made from the record form on first use.
    entries = _Models("_entries", "_entry_records", lambda record, item: _entry_model(record, item))
    memory_updates = _Models("_updates", "_update_records", lambda record, item: _update_model(record, item))

    def to_dict(self) -> dict[str, Any]:
        """What model_dump(mode="json") gives for each item. The record form is handed out
        as it is, not copied (its values came out of this reply's JSON parse, and nothing
        outside the reply holds them: the engine's record takes them over); the models are
        written out with copies of their values."""
        entries = self._entries
        updates = self._updates
        return {
            "outbox_entries": self._entry_records[0] if entries is None else [  # type: ignore[index]
                {"kind": e.kind, "payload": copy_plain(e.payload), "tags": list(e.tags), "recipients": list(e.recipients)}
                for e in entries
            ],
            "memory_updates": self._update_records[0] if updates is None else [  # type: ignore[index]
                {"op": m.op, "key": m.key, "value": copy_plain(m.value)} for m in updates
            ],
            "tool_calls": [{"tool": t.tool, "args": copy_plain(t.args)} for t in self.tool_calls] if self.tool_calls else [],
            "notes": self.notes,
        }

    def __repr__(self) -> str:
        return f"ParsedReply({self.to_dict()!r}, violations={self.violations!r}, repaired={self.repaired!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not ParsedReply:
            return NotImplemented
        return (self.to_dict(), self.violations, self.repaired) == (other.to_dict(), other.violations, other.repaired)

    __hash__ = None  # type: ignore[assignment]


class ContractViolation(Exception):
    """The reply cannot be read as an AgentReply at all."""


def _entry_view(e: OutboxEntry) -> dict[str, Any]:
    d: dict[str, Any] = {"id": e.id, "tick": e.tick, "from": e.agent, "kind": e.kind, "payload": e.payload}
    if e.recipients:
        d["to"] = list(e.recipients)
    if e.tags:
        d["tags"] = list(e.tags)
    return d


#: The system message only depends on the résumé: (its fields) -> the message.
_SYSTEM_CACHE: dict[tuple, str] = {}
_SYSTEM_CACHE_MAX = 10_000


def _escaped(text: str) -> str:
    """`text` as it appears inside a JSON string (json.dumps(text)[1:-1], ensure_ascii=False).
    Escaping is character by character: the escaped parts of a text, joined, are the
    escaped text."""
    return _encode_str(text)[1:-1]


def _view_pair(e: OutboxEntry) -> tuple[str, str]:
    """(dumps_sorted(_entry_view(e)), that JSON escaped), written key by key for the usual
    entry (str names, an int tick, no tags or recipients) and the usual payload
    ({"text": str}). Escaping is character by character: when none of the entry's strings
    has a character JSON escapes, the escaped JSON is the JSON's pattern escaped around
    the same strings (and escaping the whole JSON costs more than writing it again)."""
    agent, id_, kind, tick, payload = e.agent, e.id, e.kind, e.tick, e.payload
    if (
        e.tags or e.recipients or type(agent) is not str or type(id_) is not str or type(kind) is not str
        or type(tick) is not int or type(payload) is not dict or len(payload) != 1 or type(text := payload.get("text")) is not str
    ):
        view = dumps_sorted(_entry_view(e))
        return view, _escaped(view)
    a, i, k, x = _encode_str(agent), _encode_str(id_), _encode_str(kind), _encode_str(text)
    view = f'{{"from": {a}, "id": {i}, "kind": {k}, "payload": {{"text": {x}}}, "tick": {tick!r}}}'
    if len(a) + len(i) + len(k) + len(x) == len(agent) + len(id_) + len(kind) + len(text) + 8:  # (nothing escaped)
        return view, (
            f'{{\\"from\\": \\"{agent}\\", \\"id\\": \\"{id_}\\", \\"kind\\": \\"{kind}\\", '
            f'\\"payload\\": {{\\"text\\": \\"{text}\\"}}, \\"tick\\": {tick!r}}}'
        )
    return view, _escaped(view)


def _view_json(e: OutboxEntry, cache: dict[str, tuple[str, str]] | None) -> tuple[str, str]:
    """The entry's view as sorted JSON, and that JSON escaped (for `prompt_hash`). An entry is
    shown to every agent that reads its outbox, as new and then as context: the board's
    cache keeps the texts."""
    if cache is None:
        return _view_pair(e)
    got = cache.get(e.id)
    if got is None:
        got = cache[e.id] = _view_pair(e)
    return got


def _views_joined(entries: list[OutboxEntry], cache: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """The entries' views joined as a JSON list's items, and the same escaped (`_view_json`).
    (A plain loop: a comprehension and zip(*) cost more than the rest for a few entries.)"""
    texts: list[str] = []
    escaped: list[str] = []
    get = cache.get
    for e in entries:
        view = get(e.id) or _view_json(e, cache)
        texts.append(view[0])
        escaped.append(view[1])
    return ", ".join(texts), ", ".join(escaped)


def _system_message(resume: Resume, shell_allow: list[str] | None = None, mcp_tools: dict[str, str] | None = None) -> str:
    tools = resume.permissions.tools
    allow = tuple(shell_allow) if shell_allow and "shell" in tools else ()
    mcp = tuple(sorted(mcp_tools.items())) if mcp_tools else ()
    key = (resume.name, resume.title, resume.short_description, resume.instructions, resume.workflow_description, tuple(tools), allow, mcp)
    text = _SYSTEM_CACHE.get(key)
    if text is not None:
        return text
    system = [f"You are {resume.name}" + (f", {resume.title}." if resume.title else ".")]
    if resume.short_description:
        system.append(resume.short_description)
    if resume.instructions:
        system.append("## Instructions\n" + resume.instructions)
    if resume.workflow_description:
        system.append("## Workflow\n" + resume.workflow_description)
    if tools:
        system.append(
            "## Tools you may call\n" + describe_tools(list(tools), shell_allow=list(allow) or None, mcp=mcp_tools)
            + "\nFile paths are relative to your workspace; shared/... is the organisation's shared folder."
        )
    system.append(
        "## How this organisation works\n"
        "The organisation runs in ticks. Agents talk only by writing entries into their own "
        "outbox; an agent sees the outboxes it is allowed to read. What you write this tick is "
        "read by others from the next tick on. Every turn costs credits (every reply of it).\n\n" + REPLY_SCHEMA_TEXT
        + ("\n\n" + TOOL_ROUNDS_TEXT if tools else "")
    )
    text = "\n\n".join(system)
    if len(_SYSTEM_CACHE) >= _SYSTEM_CACHE_MAX:
        _SYSTEM_CACHE.clear()
    _SYSTEM_CACHE[key] = text
    return text


def _scalar_json(v: Any) -> str:
    """json.dumps(v) for the small values of the context, without an encoder for each."""
    t = type(v)
    if t is int:
        return repr(v)  # (exactly an int or a float: its own repr, what json writes)
    if t is str:
        return _encode_str(v)
    if v is None:
        return "null"
    if t is float and -_INF < v < _INF:
        return repr(v)
    if (t is list or t is dict) and not v:
        return "[]" if t is list else "{}"
    return dumps_sorted(v)


def _rounded_json(v: Any) -> str:
    """_scalar_json(round(v, 6)), for the credits left: a float is written with one
    correctly rounded formatting ("%.6f" rounds as round(v, 6) does) instead of rounding it
    and then finding its shortest repr. The formatted digits, trailing zeros dropped, are
    that repr when there are at most 15 of them (a double tells every such decimal apart,
    so none shorter gives it back) and the value is not under 1e-4 (written with an
    exponent); otherwise it is worked out as before."""
    if type(v) is float and -_INF < v < _INF:
        short = ("%.6f" % v).rstrip("0")
        if len(short) <= 16 and not short.startswith(("0.0000", "-0.0000")):
            return short + "0" if short[-1] == "." else short
    return _scalar_json(round(v, 6))


def _names_json(names: list[str]) -> str:
    """json.dumps of a list of agent names."""
    try:
        return "[" + ", ".join(map(_encode_str, names)) + "]"
    except TypeError:  # not all strings
        return dumps_sorted(names)


#: Agent names and lists of them (the same each turn of an agent) -> (JSON, escaped JSON).
_NAMES_JSON: dict[Any, tuple[str, str]] = {}
_NAMES_JSON_MAX = 20_000


def _names_pair(names: Any) -> tuple[str, str]:
    """(_names_json(names), escaped) of a list of names, or (_scalar_json, escaped) of one name."""
    key = names if type(names) is str else tuple(names)
    got = _NAMES_JSON.get(key)
    if got is None:
        text = _scalar_json(names) if type(names) is str else _names_json(names)
        got = (text, _escaped(text))
        if len(_NAMES_JSON) >= _NAMES_JSON_MAX:
            _NAMES_JSON.clear()
        try:
            _NAMES_JSON[key] = got
        except TypeError:  # (a name that is not a string)
            pass
    return got


_INF = float("inf")


def memory_json(memory: dict[str, Any]) -> tuple[str, str]:
    """The prompt's JSON of an agent's memory, and that JSON escaped."""
    text = dumps_sorted(memory) if memory else _scalar_json(memory)
    return text, _escaped(text)


def _number_escaped(text: str, v: Any) -> str:
    """`text` (the JSON of `v`) escaped: as it is for a number or null."""
    t = type(v)
    return text if t is int or t is float or v is None else _escaped(text)


_P_INBOX = ', "inbox": {"earlier": ['
_P_NEW = '], "new": ['
_P_NOT_SHOWN = '], "not_shown": '
_P_MAX = '}, "max_reply_tokens": '
_P_MEMORY = ', "memory": '
_P_TICK = ', "tick": '
_P_TOOLS = ', "tool_results": '
_P_YOU = ', "you": '
_P_READS = ', "you_read_outboxes_of": '
_P_READERS = ', "your_outbox_is_read_by": '
_P_HEAD = "Everything you know this turn:\n```json\n{\"credits_left\": "
_P_TAIL = "}\n```\nReply with the JSON object only."
_E_INBOX, _E_NEW, _E_NOT_SHOWN, _E_MAX, _E_MEMORY, _E_TICK, _E_TOOLS, _E_YOU, _E_READS, _E_READERS, _E_HEAD, _E_TAIL = map(
    _escaped, (_P_INBOX, _P_NEW, _P_NOT_SHOWN, _P_MAX, _P_MEMORY, _P_TICK, _P_TOOLS, _P_YOU, _P_READS, _P_READERS, _P_HEAD, _P_TAIL)
)


class PromptParts:
    """What an agent's prompt takes from its definitions — the system message, its name and
    who it reads and is read by, as JSON and as escaped JSON (`hash` takes the prompt's
    hash from the system message's part, hashed once). They are the same turn after turn until the
    definitions change: the engine keeps them with each agent (`Engine._plan_turn`) and
    writes each turn's user message from them (`user`); `build_prompt` works them out for
    every call."""

    __slots__ = ("system", "tail", "tail_e", "no_tools_tail", "hashed")

    def __init__(
        self,
        resume: Resume,
        readers: list[str],
        can_read: list[str],
        shell_allow: list[str] | None = None,
        mcp_tools: dict[str, str] | None = None,
    ) -> None:
        self.system = _system_message(resume, shell_allow, mcp_tools)
        #: sha256 of `prompt_hash`'s JSON up to the user message's text (`_hash_prefix`)
        self.hashed = _hash_prefix(self.system)
        you, you_e = _names_pair(resume.name)
        reads, reads_e = _names_pair(can_read)
        readers_json, readers_e = _names_pair(readers)
        #: The context block from after "tool_results" to the end of the message (the keys
        #: are in sorted order: these come last), and it escaped.
        self.tail = "".join((_P_YOU, you, _P_READS, reads, _P_READERS, readers_json, _P_TAIL))
        self.tail_e = "".join((_E_YOU, you_e, _E_READS, reads_e, _E_READERS, readers_e, _E_TAIL, '"'))
        #: The same from "tool_results" on, for no results.
        self.no_tools_tail = (_P_TOOLS + "[]" + self.tail, _E_TOOLS + "[]" + self.tail_e)

    def user(
        self, tick: int, inbox: Inbox, memory: dict[str, Any], tool_results: list[dict[str, Any]], balance: float,
        max_tokens: int | None, memory_pair: tuple[str, str] | None = None,
    ) -> tuple[str, str]:
        """This turn's user message, and the message escaped as a JSON string (quotes
        included: what `prompt_hash` hashes of it). `memory_pair`: `memory_json(memory)`,
        when the caller keeps it."""
        # The context block is json.dumps(context, ensure_ascii=False, sort_keys=True) of
        #   {"tick", "you", "your_outbox_is_read_by", "you_read_outboxes_of", "credits_left",
        #    "max_reply_tokens", "memory", "inbox": {"new", "earlier", "not_shown"}, "tool_results"}
        # written key by key in sorted order, so that each inbox entry is encoded once, not once
        # per reader and turn (tests/test_prompt.py holds it to json.dumps). The user message is
        # written twice over, as itself and escaped as a JSON string, from parts kept escaped:
        # escaping the whole message costs more than writing it.
        cache = inbox.view_cache
        if cache is None:
            cache = {}
        earlier, earlier_e = _views_joined(inbox.context, cache)
        new, new_e = _views_joined(inbox.new, cache)
        credits = _rounded_json(balance)
        dropped = inbox.dropped
        # (numbers and null need no escaping)
        if type(dropped) is int:
            dropped_json = dropped_e = repr(dropped)
        else:
            dropped_json = _scalar_json(dropped)
            dropped_e = _number_escaped(dropped_json, dropped)
        if type(max_tokens) is int:
            max_json = max_e = repr(max_tokens)
        else:
            max_json = _scalar_json(max_tokens)
            max_e = _number_escaped(max_json, max_tokens)
        if type(tick) is int:
            tick_json = tick_e = repr(tick)
            head = head_e = f"Tick {tick_json}. "
        else:
            tick_json = _scalar_json(tick)
            tick_e = _number_escaped(tick_json, tick)
            head = f"Tick {tick}. "
            head_e = _escaped(head)
        mem, mem_e = memory_pair if memory_pair is not None else memory_json(memory)
        if tool_results or type(tool_results) is not list:
            tools = dumps_sorted(tool_results) if tool_results else _scalar_json(tool_results)
            tail = "".join((_P_TOOLS, tools, self.tail))
            tail_e = "".join((_E_TOOLS, _escaped(tools) if tool_results else tools, self.tail_e))
        else:  # (the first reply's: the results come back within the turn)
            tail, tail_e = self.no_tools_tail
        user = "".join(
            (
                head, _P_HEAD, credits, _P_INBOX, earlier, _P_NEW, new, _P_NOT_SHOWN, dropped_json,
                _P_MAX, max_json, _P_MEMORY, mem, _P_TICK, tick_json, tail,
            )
        )
        escaped = "".join(
            (
                '"', head_e, _E_HEAD, credits if type(balance) is float else _number_escaped(credits, balance),
                _E_INBOX, earlier_e, _E_NEW, new_e, _E_NOT_SHOWN, dropped_e,
                _E_MAX, max_e, _E_MEMORY, mem_e, _E_TICK, tick_e, tail_e,
            )
        )
        return user, escaped

    def hash(self, escaped: str) -> str:
        """prompt_hash of [the system message, the user message escaped as `escaped`]."""
        return _user_hash(self.hashed, escaped)


def build_prompt(
    resume: Resume,
    *,
    tick: int,
    inbox: Inbox,
    memory: dict[str, Any],
    readers: list[str],
    can_read: list[str],
    tool_results: list[dict[str, Any]],
    balance: float,
    max_tokens: int | None,
    shell_allow: list[str] | None = None,
    mcp_tools: dict[str, str] | None = None,
) -> list[dict[str, str]]:
    """The exact messages the model is given for one turn (its first reply)."""
    parts = PromptParts(resume, readers, can_read, shell_allow, mcp_tools)
    user, _ = parts.user(tick, inbox, memory, tool_results, balance, max_tokens)
    return [{"role": "system", "content": parts.system}, {"role": "user", "content": user}]


def tool_round_messages(
    reply: str, *, tick: int, agent: str, round: int, rounds_left: int, results: list[dict[str, Any]], max_tokens: int | None
) -> list[dict[str, str]]:
    """What is added to a turn's messages after a round of tool calls: the model's reply,
    then the results, as a fenced JSON block like the turn's context."""
    block = dumps_sorted(
        {"tick": tick, "you": agent, "tool_round": round, "tool_rounds_left": rounds_left,
         "tool_results": results, "max_reply_tokens": max_tokens}
    )
    user = (
        f"Tick {tick}, tool round {round}. The results of your tool calls:\n```json\n{block}\n```\n"
        "Reply with the JSON object only (with tool_calls to go on, or none when you are done)."
    )
    return [{"role": "assistant", "content": reply}, {"role": "user", "content": user}]


#: prompt_hash's JSON of [system, user] up to the user message's text, by system message.
_HASH_PREFIX: dict[str, Any] = {}


def _hash_prefix(system: str) -> Any:
    """sha256 of prompt_hash's JSON of [system, user] up to the user message's text."""
    h = _HASH_PREFIX.get(system)
    if h is None:
        h = hashlib.sha256(('[{"content":' + _encode_str(system) + ',"role":"system"},{"content":').encode())
        if len(_HASH_PREFIX) >= _SYSTEM_CACHE_MAX:
            _HASH_PREFIX.clear()
        _HASH_PREFIX[system] = h
    return h


def _user_hash(prefix: Any, escaped: str) -> str:
    """prompt_hash of [a system message, a user message whose text escaped as a JSON string
    is `escaped`], from `prefix` (`_hash_prefix` of the system message)."""
    h = prefix.copy()
    h.update((escaped + ',"role":"user"}]').encode())
    return h.hexdigest()


def prompt_hash(messages: list[dict[str, str]]) -> str:
    """sha256 of json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))."""
    if (
        len(messages) == 2
        and messages[0].keys() == _ROLE_CONTENT
        and messages[1].keys() == _ROLE_CONTENT
        and messages[0]["role"] == "system"
        and messages[1]["role"] == "user"
        and type(messages[0]["content"]) is str
        and type(messages[1]["content"]) is str
    ):
        # What build_prompt gives: the system message's part of the blob is hashed once.
        return _user_hash(_hash_prefix(messages[0]["content"]), _encode_str(messages[1]["content"]))
    blob = json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


_ROLE_CONTENT = {"role": "", "content": ""}.keys()


FENCE_RE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)```", re.DOTALL)
TRAILING_COMMA_RE = re.compile(r",(\s*[}\]])")


def _fenced(text: str) -> str | None:
    """What FENCE_RE's first match captures, found without the regex when the first fence
    is "```json" and a newline (as `build_prompt` writes it): a lazy DOTALL scan costs
    more than the rest of reading the prompt."""
    i = text.find("```")
    if i != -1 and text.startswith("json\n", i + 3):
        start = i + 8
        if start < len(text) and not text[start].isspace():
            end = text.find("```", start)
            if end != -1:
                return text[start:end]
    m = FENCE_RE.search(text)
    return m.group(1) if m else None


def extract_context(user_message: str) -> dict[str, Any] | None:
    """The JSON context block of a prompt's user message (what the sim reads)."""
    block = _fenced(user_message)
    if block is None:
        return None
    try:
        data = json.loads(block)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _loads_object(text: str) -> dict[str, Any]:
    # No NaN, no 1e999, no nesting past plainjson.MAX_DEPTH: what is accepted is recorded.
    data = plainjson.loads(text)
    if not isinstance(data, dict):
        raise ContractViolation(f"the reply is a JSON {type(data).__name__}, not an object")
    return data


def _decode(raw: str) -> tuple[dict[str, Any], str | None]:
    """Find the reply object in `raw`, repairing only what is safe to repair."""
    text = raw.strip()
    if not text:
        raise ContractViolation("the reply is empty")
    try:
        return _loads_object(text), None
    except json.JSONDecodeError:
        first_error: ValueError | None = None
    except (ValueError, RecursionError) as e:
        first_error = e if isinstance(e, plainjson.JSONRejected) else None
    candidates: list[tuple[str, str]] = []
    m = FENCE_RE.search(text)
    if m:
        candidates.append((m.group(1).strip(), "removed a code fence"))
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        candidates.append((text[start : end + 1], "removed text around the JSON object"))
    for cand, what in list(candidates):
        fixed = TRAILING_COMMA_RE.sub(r"\1", cand)
        if fixed != cand:
            candidates.append((fixed, what + " and trailing commas"))
    for cand, what in candidates:
        try:
            return _loads_object(cand), what
        except ContractViolation:
            raise
        except (json.JSONDecodeError, ValueError, RecursionError):
            continue
    if first_error is not None:
        raise ContractViolation(f"the reply is not usable JSON: {first_error}") from None
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        raise ContractViolation(
            f"the reply is not JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except (ValueError, RecursionError) as e:
        raise ContractViolation(plainjson.one_line(f"the reply is not JSON: {e}")) from None
    raise ContractViolation("the reply is not a JSON object")


def _listed(data: dict[str, Any], key: str, limit: int, violations: list[str]) -> list:
    """data[key] as a list of at most `limit` items, what is wrong with it a violation."""
    raw = data.get(key)
    if raw is None:
        return []
    if type(raw) is not list:  # (a JSON parse makes no subclass)
        violations.append(f"{key}: must be a list, got {type(raw).__name__}")
        return []
    if len(raw) > limit:
        violations.append(f"{key}: {len(raw)} items; only the first {limit} are kept")
        return raw[:limit]
    return raw


def _records(raw: list, record: Any) -> list[dict[str, Any]] | None:
    """The record form of every item of `raw`, if all are of the usual shape."""
    out = []
    for item in raw:
        r = record(item)
        if r is None:
            return None
        out.append(r)
    return out


def _read_list(
    data: dict[str, Any], key: str, limit: int, model: type[BaseModel], violations: list[str]
) -> tuple[list | None, tuple[list[dict[str, Any]], list] | None]:
    """data[key]'s items: (None, (their record forms, the items)) when all are of the usual
    shape, else (the models, None)."""
    items = _listed(data, key, limit, violations)
    records = _records(items, _RECORD[model]) if _FAST_OK else None
    if records is not None:
        return None, (records, items)
    return _models(items, key, model, violations), None


def _items(data: dict[str, Any], key: str, model: type[BaseModel], limit: int, violations: list[str]) -> list:
    return _models(_listed(data, key, limit, violations), key, model, violations)


def _models(raw: list, key: str, model: type[BaseModel], violations: list[str]) -> list:
    """The items of `raw` as `model`s; each that is not valid is a violation."""
    out: list = []
    fast = _FAST.get(model) if _FAST_OK else None
    for i, item in enumerate(raw):
        if fast is not None:
            made = fast(item)
            if made is not None:
                out.append(made)
                continue
        try:
            out.append(model.model_validate(item))
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            violations.append(plainjson.one_line(f"{key}[{i}]{'.' + loc if loc else ''}: {msg}"))
        except RecursionError:
            violations.append(f"{key}[{i}]: nested too deeply")
    return out


# --- the usual shapes of reply items, read without pydantic ---------------------------------
#
# A reply's items are validated one by one. An item of the usual shape (the fields of the
# schema, of their plain JSON types, within their limits) is checked here by hand and
# written in its record form (what model_dump(mode="json") of its model gives) in the same
# pass; its model is made from that only if it is asked for, as pydantic builds it.
# Anything else (a missing payload, LeMMing's older {"to", "content"} shape, a wrong type,
# a value past a limit) goes to the pydantic model, which accepts or rejects it with its
# message. `_fast_checked` holds the two to the same results on a sample at import time;
# if they ever differ (another pydantic), every item goes to pydantic.

_new_object = object.__new__


def _slot_setter(name: str) -> Any:
    """The setter of BaseModel's slot `name`, through its descriptor (object.__setattr__
    looks the slot up by name on every call)."""
    setter = getattr(BaseModel.__dict__.get(name), "__set__", None)
    if setter is None:  # another pydantic's layout (`_fast_checked` then tells)
        return lambda m, v: object.__setattr__(m, name, v)
    return setter


_set_dict = _slot_setter("__dict__")
_set_fields_set = _slot_setter("__pydantic_fields_set__")
_set_extra = _slot_setter("__pydantic_extra__")
_set_private = _slot_setter("__pydantic_private__")


def _built(cls: type[BaseModel], values: dict[str, Any], given: set[str]) -> BaseModel:
    """An instance of `cls` holding `values` (already valid), as validation would build it."""
    m = _new_object(cls)
    _set_dict(m, values)
    _set_fields_set(m, given)
    _set_extra(m, None)
    _set_private(m, None)
    return m


_ENTRY_FIELDS = frozenset(("kind", "payload", "tags", "recipients"))
_ABSENT: Any = object()


def _names(v: Any, limit: int) -> list[str] | None:
    """`v` if it is a list of at most `limit` strings, [] for a field not given; None for
    what only pydantic words (null, not a list of strings, too long)."""
    if v is _ABSENT:
        return []
    if type(v) is not list or len(v) > limit:
        return None
    for x in v:
        if type(x) is not str:
            return None
    return v


def _entry_record(item: Any) -> dict[str, Any] | None:
    """An outbox entry of the usual shape in its record form (holding the item's own
    values, not copies), or None for what pydantic must read."""
    if type(item) is not dict:
        return None
    payload = item.get("payload")
    t = type(payload)
    # Whether the payload's JSON is surely within MAX_PAYLOAD_CHARS without writing it:
    # a string, or an object of strings, whose characters escaped as JSON's longest escape
    # ("\\u001f", 6) fit. Otherwise its JSON is written and measured below.
    if t is str:
        fits = len(payload) * 6 + 2 <= MAX_PAYLOAD_CHARS
    elif t is dict:
        fits = False
        if len(payload) <= 16:
            n = 2
            for k, v in payload.items():
                if type(v) is not str:  # (keys of parsed JSON are strings)
                    break
                n += 6 * (len(k) + len(v)) + 8  # "k": "v", and the separator
            else:
                fits = n <= MAX_PAYLOAD_CHARS
    elif t is list:
        fits = False
    else:
        return None  # (no payload, the older shape, or what pydantic words)
    kind = item.get("kind", "message")
    if type(kind) is not str or not 0 < len(kind) <= 64:
        return None
    tags = _names(item.get("tags", _ABSENT), 20)  # (ReplyEntry's max_length of each)
    if tags is None:
        return None
    recipients = _names(item.get("recipients", _ABSENT), 1000)
    if recipients is None:
        return None
    if not fits:
        try:
            if len(dumps_plain(payload)) > MAX_PAYLOAD_CHARS:
                return None
        except (TypeError, ValueError, RecursionError):
            return None
    return {"kind": kind, "payload": payload, "tags": tags, "recipients": recipients}


def _entry_model(record: dict[str, Any], item: dict[str, Any]) -> ReplyEntry:
    """The ReplyEntry of `item`'s record form, holding copies of its values."""
    values = {"kind": record["kind"], "payload": copy_plain(record["payload"]),
              "tags": list(record["tags"]), "recipients": list(record["recipients"])}
    return _built(ReplyEntry, values, item.keys() & _ENTRY_FIELDS)  # type: ignore[return-value]


def _fast_entry(item: Any) -> ReplyEntry | None:
    record = _entry_record(item)
    return None if record is None else _entry_model(record, item)


_OPS = frozenset(("set", "append", "merge", "delete"))
_MEMORY_FIELDS = frozenset(("op", "key", "value"))


def _update_record(item: Any) -> dict[str, Any] | None:
    """A memory update of the usual shape in its record form, or None for what pydantic
    must read."""
    if type(item) is not dict:
        return None
    key = item.get("key")
    if type(key) is not str:
        return None
    op = item.get("op", "set")
    if type(op) is not str or op not in _OPS:
        return None
    return {"op": op, "key": key, "value": item.get("value")}


def _update_model(record: dict[str, Any], item: dict[str, Any]) -> MemoryUpdate:
    """The MemoryUpdate of `item`'s record form, holding a copy of its value."""
    values = {"op": record["op"], "key": record["key"], "value": copy_plain(record["value"])}
    return _built(MemoryUpdate, values, item.keys() & _MEMORY_FIELDS)  # type: ignore[return-value]


def _fast_memory(item: Any) -> MemoryUpdate | None:
    record = _update_record(item)
    return None if record is None else _update_model(record, item)


_FAST: dict[type, Any] = {ReplyEntry: _fast_entry, MemoryUpdate: _fast_memory}
_RECORD: dict[type, Any] = {ReplyEntry: _entry_record, MemoryUpdate: _update_record}


def _fast_checked() -> bool:
    samples: list[tuple[type[BaseModel], Any]] = [
        (ReplyEntry, {"kind": "message", "payload": {"text": "hi"}, "tags": ["a"], "recipients": ["b"]}),
        (ReplyEntry, {"payload": "plain", "extra": 1}),
        (ReplyEntry, {"kind": "note", "payload": [1, 2.5, None, True]}),
        (MemoryUpdate, {"op": "append", "key": "k", "value": [1]}),
        (MemoryUpdate, {"key": "k"}),
    ]
    try:
        for model, item in samples:
            fast, slow = _FAST[model](item), model.model_validate(item)
            if fast is None or fast != slow or fast.model_fields_set != slow.model_fields_set or fast.model_dump() != slow.model_dump():
                return False
            if _RECORD[model](item) != slow.model_dump(mode="json"):
                return False
    except Exception:
        return False
    return True


_FAST_OK = _fast_checked()


_REPLY_KEYS = frozenset(("outbox_entries", "memory_updates", "tool_calls", "notes"))


def parse_reply(raw: str) -> ParsedReply:
    """Parse a model's reply. Raises ContractViolation if no reply object can be read."""
    if not raw.isascii():
        raw = plainjson.fix_unicode(raw)
    # The usual reply is one JSON object and nothing else: it is read as it is. Anything
    # else is looked for (and repaired where safe) by _decode, from the start.
    try:
        data = plainjson.loads(raw)
    except (ValueError, RecursionError):
        data = None
    if type(data) is dict:
        repaired = None
    else:
        data, repaired = _decode(raw)
    if "\\u" in raw and plainjson.first_surrogate(data) is not None:
        # "\ud800" escapes decode to unpaired surrogates, which cannot be recorded.
        data = plainjson.fix_surrogates(data)
        repaired = (repaired + "; " if repaired else "") + "replaced unpaired surrogates with U+FFFD"
    if "messages" in data and "outbox_entries" not in data:  # LeMMing's older reply shape
        data = {**data, "outbox_entries": data["messages"]}
    if data.keys().isdisjoint(_REPLY_KEYS):
        raise ContractViolation(
            "the reply object has none of outbox_entries, memory_updates, tool_calls, notes"
        )
    violations: list[str] = []
    entries, entry_records = _read_list(data, "outbox_entries", MAX_ENTRIES_PER_TURN, ReplyEntry, violations)
    updates, update_records = _read_list(data, "memory_updates", MAX_MEMORY_UPDATES, MemoryUpdate, violations)
    calls = data.get("tool_calls")
    if calls is None or calls == []:
        calls = []
    else:
        calls = _items(data, "tool_calls", ToolCall, MAX_TOOL_CALLS, violations)
    notes = data.get("notes", "")
    if type(notes) is str:
        notes = notes[:MAX_NOTES_CHARS]
    elif notes is not None:
        notes = json.dumps(notes, ensure_ascii=False, default=str)[:MAX_NOTES_CHARS]
    else:
        notes = ""
    return ParsedReply(entries, updates, calls, notes, violations, repaired, entry_records=entry_records,
                       update_records=update_records)
