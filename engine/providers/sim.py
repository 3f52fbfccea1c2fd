"""`sim`: an offline, deterministic model simulator. No key, no network.

It is a real provider with documented behaviour, not a test double:

* It reads its prompt as a model would: the fenced JSON context block of the
  user message (tick, who reads its outbox, its inbox, memory, credits).
* It answers with a reply that follows the reply schema: it acknowledges what
  arrived in its inbox, writes 0-2 messages addressed to agents that can read
  its outbox (or to all of them), keeps a little memory (`last_tick`,
  `seen`, a bounded `todo` list it appends to and clears), and now and then
  calls the tools it holds (listed in its system message): it writes a note
  file, lists and reads its files, runs a shell command, reads and writes its
  memory. Given the results (a tool round), it replies as usual. Its replies never
  depend on what the tools returned, so a run's messages are the same whatever
  the workspace held before it.
* Everything is a pure function of (seed, model name, prompt): the same
  organisation and seed give a byte-identical run, whatever the concurrency.
* It streams its reply in word-sized tokens at `tokens_per_s` (0 = as fast as
  possible), after `latency_ms` of "thinking", and respects `max_tokens` by
  writing a shorter reply (or, if even that does not fit, by being cut off —
  which the engine records as a contract violation, as it would a real model).
* With `malformed_rate` > 0 it sometimes writes a broken reply (prose, cut-off
  JSON, a wrong shape, a fenced reply with trailing commas that the parser can
  repair), so the error paths are exercised. Like a server that constrains
  decoding, it writes none when the request carries the reply schema (models.json
  `structured_output`, on by default): it is then only cut off at `max_tokens`.

Options (models.json `provider_config`, or LEMMING_SIM_* environment variables,
or the CLI's --sim-* flags): tokens_per_s, latency_ms, malformed_rate; and
messages_per_turn (models.json only), a fixed message count for steady benchmarks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
from typing import Any, AsyncIterator

from lemming.engine.jsontext import dumps_text
from lemming.engine.prompt import extract_context
from lemming.engine.providers.base import CompletionRequest, ProbeResult, ProviderConfig, ProviderError, StreamItem, TextDelta, Usage
from lemming.engine.providers.retry import estimate_tokens

TOKEN_RE = re.compile(r"\s*\S{1,8}|\s+")
#: How many tokens one streamed delta carries at full speed.
CHUNK_TOKENS = 32
#: CHUNK_TOKENS tokens of TOKEN_RE at a time (the last chunk may hold fewer): a repeat with
#: nothing after it never backtracks, so each chunk is exactly the next 32 tokens joined.
CHUNK_RE = re.compile(r"(?:\s*\S{1,8}|\s+){1,%d}" % CHUNK_TOKENS)

VERBS = ["drafted", "reviewed", "checked", "summarised", "prioritised", "estimated", "scoped", "tested", "merged", "flagged"]
OBJECTS = ["the plan", "the backlog", "the spec", "the budget", "the release notes", "the schema", "the test run", "the risks", "the roadmap", "the metrics"]
NEXT = ["next I will", "I propose we", "can you", "please", "I suggest we", "let us"]
#: Commands the sim runs with `shell` (LeMMing's default allow-list has each program).
SHELL_COMMANDS = ["ls", "ls notes | tail -n 3", "echo ready", "cat notes/*.md | head -n 2", "grep -c tick notes/*.md"]
#: A tool's line in the system message ("- file_write {path, content}: ...").
_TOOL_LINE_RE = re.compile(r"^- ([a-z_]+(?:/[a-z_]+)?) \{", re.MULTILINE)
#: Time zones the sim converts between with the demo's MCP time server (time/convert_time).
ZONES = ["Europe/London", "America/New_York", "Asia/Tokyo", "Europe/Berlin", "Australia/Sydney"]
ACTIONS = ["split the work", "confirm the scope", "ship a first cut", "add a test", "cut the cost", "measure it again", "write it up", "ask the operator"]


def _env_float(name: str) -> float | None:
    v = os.environ.get(name)
    if v is None or v == "":
        return None
    try:
        return float(v)
    except ValueError:
        return None


#: option → (environment variable, default, highest allowed value)
_OPTIONS = {
    "tokens_per_s": ("LEMMING_SIM_TOKENS_PER_S", 0.0, 1e9),
    "latency_ms": ("LEMMING_SIM_LATENCY_MS", 0.0, 3_600_000.0),
    "malformed_rate": ("LEMMING_SIM_MALFORMED_RATE", 0.0, 1.0),
}


def _option(opts: dict[str, Any], name: str) -> float:
    env, default, top = _OPTIONS[name]
    value: Any = _env_float(env)
    where = env
    if value is None:
        value, where = opts.get(name, default), f"provider_config.{name}"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ProviderError("config", f"sim {where}: must be a number, not {type(value).__name__}")
    try:
        f = float(value)
    except (ValueError, OverflowError):
        raise ProviderError("config", f"sim {where}: must be a number, not {str(value)[:40]!r}") from None
    if not (0 <= f <= top):  # also refuses NaN
        raise ProviderError("config", f"sim {where}: must be between 0 and {top:g}, not {f:g}")
    return f


class SimProvider:
    """The offline simulator (see the module docstring)."""

    name = "sim"

    def __init__(self, config: ProviderConfig | None = None) -> None:
        opts = dict(config.options if config else {})
        # Bad options are a configuration error (recorded on the turn), never a crash.
        self.tokens_per_s = _option(opts, "tokens_per_s")
        self.latency_ms = _option(opts, "latency_ms")
        self.malformed_rate = _option(opts, "malformed_rate")
        #: A fixed number of messages a turn (benchmarks want a steady load); None = 0-2 at random.
        mpt = opts.get("messages_per_turn")
        if mpt is not None and (isinstance(mpt, bool) or not isinstance(mpt, int) or not 0 <= mpt <= 20):
            raise ProviderError("config", f"sim provider_config.messages_per_turn: must be a whole number 0-20, not {str(mpt)[:40]!r}")
        self.messages_per_turn = mpt

    # -- the reply --------------------------------------------------------------------

    def _rng(self, request: CompletionRequest, upto: int | None = None, salt: str = "") -> random.Random:
        h = hashlib.sha256()
        h.update(str(request.seed or 0).encode())
        h.update(request.model.encode())
        for m in request.messages[:upto]:
            h.update(m.role.encode())
            h.update(m.content.encode())
        if salt:
            h.update(salt.encode())
        return random.Random(int.from_bytes(h.digest()[:8], "big"))

    def compose(self, request: CompletionRequest) -> str:
        """The full reply text for a request (deterministic)."""
        return self._compose(request)[0]

    def _compose(self, request: CompletionRequest) -> tuple[str, list[str] | None]:
        """The reply text, and its chunks (see `chunks`) when they were worked out on the way."""
        users = [m.content for m in request.messages if m.role == "user"]
        if len(users) > 1:
            # A tool round: the reply depends on the turn's first request and the round
            # number, never on what the tools returned.
            first = next(i for i, m in enumerate(request.messages) if m.role == "user")
            rng = self._rng(request, upto=first + 1, salt=f"round {len(users)}")
            ctx = extract_context(users[0]) or {}
            return self._reply(rng, ctx, request.max_tokens, wrote=_written(request))
        rng = self._rng(request)
        ctx = extract_context(users[-1] if users else "") or {}
        # The draw is made either way, so a reply under the schema is the one it would
        # have been without it, broken ones aside: constrained decoding cannot break it.
        if self.malformed_rate > 0 and rng.random() < self.malformed_rate and request.reply_format is None:
            return self._malformed(rng, ctx), None
        system = next((m.content for m in request.messages if m.role == "system"), "")
        held = _TOOL_LINE_RE.findall(system)
        if held:
            calls = self._tool_calls(rng, ctx, held)
            if calls:
                reply = {"outbox_entries": [], "memory_updates": [], "tool_calls": calls,
                         "notes": "using " + ", ".join(c["tool"] for c in calls)}
                text = dumps_text(reply)
                if request.max_tokens is None or self.count_tokens(text) <= request.max_tokens:
                    return text, None
        return self._reply(rng, ctx, request.max_tokens)

    def _tool_calls(self, rng: random.Random, ctx: dict[str, Any], held: list[str]) -> list[dict[str, Any]]:
        """The tool calls of a first reply (maybe none), from the tools the agent holds."""
        tick = ctx.get("tick", 0)
        me = ctx.get("you", "agent")
        memory = ctx.get("memory", {}) if isinstance(ctx.get("memory"), dict) else {}
        calls: list[dict[str, Any]] = []
        if "file_write" in held and rng.random() < 0.5:
            path = rng.choice([f"notes/tick-{tick}.md", f"shared/{me}-status.md"])
            body = f"{rng.choice(VERBS).capitalize()} {rng.choice(OBJECTS)}; {rng.choice(NEXT)} {rng.choice(ACTIONS)}."
            calls.append({"tool": "file_write", "args": {"path": path, "content": f"# {me}, tick {tick}\n\n{body}\n"}})
        if "file_read" in held and isinstance(memory.get("last_note"), str) and rng.random() < 0.4:
            calls.append({"tool": "file_read", "args": {"path": memory["last_note"]}})
        if "file_list" in held and rng.random() < 0.3:
            calls.append({"tool": "file_list", "args": {"path": rng.choice([".", "notes", "shared"])}})
        if "shell" in held and rng.random() < 0.25:
            calls.append({"tool": "shell", "args": {"command": rng.choice(SHELL_COMMANDS)}})
        if "memory_read" in held and rng.random() < 0.2:
            calls.append({"tool": "memory_read", "args": {"key": rng.choice(["todo", "last_tick", "seen"])}})
        if "memory_write" in held and rng.random() < 0.2:
            calls.append({"tool": "memory_write", "args": {"key": "focus", "value": rng.choice(ACTIONS)}})
        if "list_agents" in held and rng.random() < 0.1:
            calls.append({"tool": "list_agents", "args": {}})
        if "clock" in held and rng.random() < 0.1:
            calls.append({"tool": "clock", "args": {}})
        if "time/convert_time" in held and rng.random() < 0.3:  # an MCP tool (docs/mcp.md)
            src, dst = rng.sample(ZONES, 2)
            calls.append({"tool": "time/convert_time",
                          "args": {"source_timezone": src, "time": f"{9 + tick % 9:02d}:00", "target_timezone": dst}})
        return calls

    def _reply(
        self, rng: random.Random, ctx: dict[str, Any], max_tokens: int | None, wrote: str | None = None
    ) -> tuple[str, list[str] | None]:
        tick = ctx.get("tick", 0)
        readers = [r for r in ctx.get("your_outbox_is_read_by", []) if isinstance(r, str)]
        inbox = ctx.get("inbox", {}) if isinstance(ctx.get("inbox"), dict) else {}
        new = [e for e in inbox.get("new", []) if isinstance(e, dict)]
        memory = ctx.get("memory", {}) if isinstance(ctx.get("memory"), dict) else {}
        entries: list[dict[str, Any]] = []
        if not readers:
            n_msgs = 0
        elif self.messages_per_turn is not None:
            n_msgs = self.messages_per_turn
        else:
            n_msgs = rng.choice([0, 1, 1, 1, 2])
        for _ in range(n_msgs):
            about = rng.choice(new) if new and rng.random() < 0.7 else None
            text = f"{rng.choice(VERBS).capitalize()} {rng.choice(OBJECTS)}"
            if about is not None:
                text += f" after {about.get('from', 'someone')}'s {about.get('id', 'note')}"
            text += f"; {rng.choice(NEXT)} {rng.choice(ACTIONS)}."
            if about is not None and about.get("from") in readers and rng.random() < 0.6:
                recipients = [about["from"]]
            elif rng.random() < 0.5:
                recipients = [rng.choice(readers)]
            else:
                recipients = []
            entries.append(
                {
                    "kind": "message",
                    "payload": {"text": text},
                    "tags": [rng.choice(["status", "request", "update", "idea"])],
                    "recipients": recipients,
                }
            )
        updates: list[dict[str, Any]] = [{"op": "set", "key": "last_tick", "value": tick}]
        if wrote is not None:
            updates.append({"op": "set", "key": "last_note", "value": wrote})
        if new:
            updates.append({"op": "merge", "key": "seen", "value": {str(e.get("from")): e.get("tick") for e in new[-3:]}})
        todo = memory.get("todo")
        if isinstance(todo, list) and len(todo) >= 4:
            updates.append({"op": "delete", "key": "todo"})
        elif rng.random() < 0.5:
            updates.append({"op": "append", "key": "todo", "value": rng.choice(ACTIONS)})
        reply = {
            "outbox_entries": entries,
            "memory_updates": updates,
            "tool_calls": [],
            "notes": f"tick {tick}: read {len(new)} new, wrote {len(entries)}",
        }
        text = dumps_text(reply)
        if max_tokens is None:
            return text, None
        # Fit the budget the engine gave us: drop messages first, then memory updates.
        chunks = self.chunks(text)
        while _count(chunks) > max_tokens and (reply["outbox_entries"] or len(reply["memory_updates"]) > 1):
            if reply["outbox_entries"]:
                reply["outbox_entries"].pop()
            else:
                reply["memory_updates"].pop()
            text = dumps_text(reply)
            chunks = self.chunks(text)
        return text, chunks

    def _malformed(self, rng: random.Random, ctx: dict[str, Any]) -> str:
        kind = rng.choice(["prose", "cut", "shape", "fenced"])
        tick = ctx.get("tick", 0)
        if kind == "prose":
            return f"Sure! At tick {tick} I think we should {rng.choice(ACTIONS)}."
        if kind == "cut":
            return '{"outbox_entries": [{"kind": "message", "payload": {"text": "' + rng.choice(VERBS)
        if kind == "shape":
            return json.dumps({"outbox_entries": "not a list", "memory_updates": [{"op": "set", "key": "../etc", "value": 1}]})
        # Repairable: a fenced reply with a trailing comma.
        return '```json\n{"outbox_entries": [], "memory_updates": [{"op": "set", "key": "last_tick", "value": %d},], "notes": "fenced"}\n```' % tick

    # -- streaming --------------------------------------------------------------------

    @staticmethod
    def tokens(text: str) -> list[str]:
        return TOKEN_RE.findall(text)

    @staticmethod
    def chunks(text: str) -> list[str]:
        """`text`'s tokens joined CHUNK_TOKENS at a time (what a full-speed stream yields)."""
        return CHUNK_RE.findall(text)

    def count_tokens(self, text: str) -> int:
        return _count(self.chunks(text))

    def _reply_chunks(self, request: CompletionRequest) -> tuple[list[str], int]:
        """The reply as full-speed deltas, cut at max_tokens, and its token count."""
        text, chunks = self._compose(request)
        if chunks is None:
            chunks = self.chunks(text)
        n = _count(chunks)
        limit = request.max_tokens
        if limit is not None and n > limit:
            # Cut off, as a real model is at max_tokens.
            toks = self.tokens(text)[:limit]
            chunks = ["".join(toks[i : i + CHUNK_TOKENS]) for i in range(0, len(toks), CHUNK_TOKENS)]
            n = limit
        return chunks, n

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamItem]:
        loop = asyncio.get_running_loop()
        # The latency runs from the request, as a model's does: the time spent composing
        # the reply is part of it, not added to it.
        start = loop.time()
        if self.tokens_per_s > 0:
            text, _ = self._compose(request)
            toks = self.tokens(text)
            if request.max_tokens is not None and len(toks) > request.max_tokens:
                toks = toks[: request.max_tokens]  # cut off, as a real model is at max_tokens
            n = len(toks)
        else:
            toks, n = self._reply_chunks(request)
        if self.latency_ms > 0:
            wait = start + self.latency_ms / 1000 - loop.time()
            await asyncio.sleep(wait if wait > 0 else 0)
        if self.tokens_per_s > 0:
            delay = 1.0 / self.tokens_per_s
            start = loop.time()
            for i, tok in enumerate(toks):
                # Pace against the start time so sleeps' overshoot does not accumulate.
                wait = start + (i + 1) * delay - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                yield TextDelta(tok)
        else:
            for chunk in toks:
                yield TextDelta(chunk)
        prompt_tokens = sum(estimate_tokens(m.content) for m in request.messages)
        yield Usage(input_tokens=prompt_tokens, output_tokens=n)

    async def probe(self, model: str, timeout: float = 3.0) -> ProbeResult:
        return ProbeResult(True, "offline simulator (always available)", 0.0)

    async def aclose(self) -> None:
        return None


def _written(request: CompletionRequest) -> str | None:
    """The last path the sim's own earlier replies of this turn wrote with file_write."""
    path = None
    for m in request.messages:
        if m.role != "assistant":
            continue
        try:
            reply = json.loads(m.content)
        except ValueError:
            continue
        for call in reply.get("tool_calls", []) if isinstance(reply, dict) else []:
            if isinstance(call, dict) and call.get("tool") == "file_write":
                p = (call.get("args") or {}).get("path")
                path = p if isinstance(p, str) else path
    return path


def _count(chunks: list[str]) -> int:
    """How many tokens `chunks` (from `SimProvider.chunks`) hold: all but the last are full."""
    if not chunks:
        return 0
    return (len(chunks) - 1) * CHUNK_TOKENS + len(TOKEN_RE.findall(chunks[-1]))
