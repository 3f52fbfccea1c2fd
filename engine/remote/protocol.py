"""The control protocol of a served run: JSON lines over a Unix domain socket.

Every frame is one JSON object on one line (UTF-8, at most MAX_FRAME bytes). A client
speaks first, within HELLO_TIMEOUT seconds:

    → {"op": "hello", "version": 1, "client": "attach", "read_only": false}
    ← {"t": "hello", "version": 1, "run_id": ..., "tick": ..., "paused": ..., "ops": [...]}

then sends requests, each with an `id` it chooses; the server answers each one with
`{"t": "ok", "id": ..., ...}` or `{"t": "error", "id": ..., "error": "one line"}`. The
server names the client `user/client:pid` from the peer's credentials (SO_PEERCRED), and
records that name with every command it sends.

* `subscribe {tokens, since}` — `{"t": "state"}` (the live state the panes read: credits,
  last turns, definitions...; no message board, no memory), `{"t": "history", "events"}`
  (what led to it: the ticks after `since`, or the last HISTORY_TICKS ticks, for the
  view only: the state already holds them), the ok, then `{"t": "events", "events"}`
  frames as the run goes. A client that falls behind gets `{"t": "lagged"}` and, once it
  reads again, a fresh state and history (it is resynchronised, never waited for).
* commands — `pause`, `resume`, `step`, `inject {text, to, kind}`, `top_up {agent,
  amount}`, `enable {agent}`, `disable {agent}`, `interval {seconds}`, `abort`, `stop
  {abort}`: answered when the engine applies them at the tick boundary, with the events
  they produced (`stop` when the run has stopped).
* `inbox {agent, limit}` — what the agent's inbox holds now (or the latest messages).
* `status` — tick, paused, and each agent's state and credits.
* `turn {agent, tick}` — one turn record whole, with its prompt (events carry records
  without their prompts: they are most of a run's bytes).
* `mcp` — the run's MCP servers now (`McpHub.status()`, each `ServerStatus.to_dict()`;
  `servers` is null while the run has no hub).

Events are `Event.to_dict()`; `event_from_dict` reads them back.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from lemming.engine.events import Event, TokenUsage, TurnRecord, event_from_dict
from lemming.engine.messages import OutboxEntry

VERSION = 1
#: The longest frame either side accepts (an inject is limited to 20,000 characters).
MAX_FRAME = 1 << 20
#: Seconds a new connection has to say hello before it is closed.
HELLO_TIMEOUT = 5.0
#: Ticks of events a subscriber is sent to fill its panes (the view's window and more).
HISTORY_TICKS = 32
#: Operator commands (what `ctl` and the attached control room send).
COMMAND_OPS = frozenset({"pause", "resume", "step", "inject", "top_up", "enable", "disable", "interval", "abort", "stop"})
READ_OPS = frozenset({"subscribe", "inbox", "status", "turn", "mcp", "bye"})
#: Events a subscriber's history holds at most (a big organisation's ticks are long).
HISTORY_EVENTS = 5_000
OPS = COMMAND_OPS | READ_OPS


class ProtocolError(Exception):
    """A frame that breaks the protocol (the message says what and what is allowed)."""


def encode(frame: dict[str, Any]) -> bytes:
    """One frame as one line of JSON."""
    return (json.dumps(frame, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode()


def decode(line: bytes) -> dict[str, Any]:
    """One received line as a frame (ProtocolError says what is wrong with it)."""
    if len(line) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(line)} bytes is over the limit of {MAX_FRAME}")
    try:
        frame = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"not a JSON line: {e}") from None
    if not isinstance(frame, dict):
        raise ProtocolError(f"a frame is a JSON object, not {type(frame).__name__}")
    return frame


def events_of(frame: dict[str, Any]) -> list[Event]:
    """The events an `events` or `history` frame carries."""
    return [event_from_dict(d) for d in frame.get("events", [])]


_FIELDS: dict[type, tuple[str, ...]] = {}
_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(TurnRecord))


def wire(ev: Event) -> dict[str, Any]:
    """`ev.to_dict()`, the fast way, and lean: the organisation's own values (replies,
    payloads, memory) are left as they are for json to write, not copied through
    `to_dict`'s generic walk (the fan-out does this for every event of a served run, on
    the engine's event loop), and a turn record goes without its prompt — most of a
    run's bytes; the `turn` request returns a record whole (its `prompt_hash` is kept)."""
    cls = type(ev)
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    d: dict[str, Any] = {"type": cls.type}
    for name in names:
        v = getattr(ev, name)
        if isinstance(v, TurnRecord):
            v = wire_record(v)
        elif isinstance(v, OutboxEntry):
            v = v.to_dict()
        d[name] = v
    return d


def wire_record(rec: TurnRecord) -> dict[str, Any]:
    """A turn record's dict without its prompt (see `wire`)."""
    v = {k: getattr(rec, k) for k in _RECORD_FIELDS}
    v["prompt"] = []
    u: TokenUsage = v["usage"]
    v["usage"] = {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "estimated": u.estimated}
    return v
