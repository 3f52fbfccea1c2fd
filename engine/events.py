"""The typed events the engine emits: the one contract with every UI and the store.

Every event is a small frozen dataclass with a `type` tag. `to_dict` / `event_from_dict`
turn them into JSON-ready dicts and back (the store, `--json` output and exports
use them). Fields named in WALL_CLOCK_FIELDS carry wall-clock time and are left
out of canonical exports, so that two seeded runs compare byte for byte.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from lemming.engine.fastinit import fast_frozen_init
from lemming.engine.messages import OutboxEntry

#: Fields that depend on the wall clock or on the run's identity, not on the run's logic.
WALL_CLOCK_FIELDS = frozenset(
    {"at", "created_at", "latency_ms", "duration_ms", "run_id", "started_at", "org_path"}
)

EVENT_TYPES: dict[str, type["Event"]] = {}


class Event:
    """The base of every event: each kind is a frozen dataclass of its own. (This base is
    no dataclass: it has no fields, and its kinds are built as their mutable twins are,
    engine/fastinit.py, which needs a base whose attribute stores are plain ones.)"""

    __slots__ = ()
    type: ClassVar[str] = "event"
    #: Token deltas are for live UIs only; the store keeps the full text in the turn record.
    persistent: ClassVar[bool] = True

    def __init_subclass__(cls, **kw: Any) -> None:
        # (no super() call: slots=True recreates the class, which breaks zero-arg super)
        if "type" in cls.__dict__:  # a kind of event (fastinit's twins name none)
            EVENT_TYPES[cls.type] = cls

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):
            d[f.name] = plain_value(getattr(self, f.name))
        return d


def plain_value(v: Any) -> Any:
    """`v` with its dataclasses (events, records, entries) as dicts and tuples as lists."""
    if isinstance(v, OutboxEntry):
        return v.to_dict()
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: plain_value(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, (list, tuple)):
        return [plain_value(x) for x in v]
    if isinstance(v, dict):
        return {k: plain_value(x) for k, x in v.items()}
    return v


@dataclass(slots=True)
class TokenUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False


@dataclass(slots=True)
class TurnRecord:
    """Everything one agent turn did: what the inspector shows and what replay reads.

    (`Engine._record` makes it with its first seven fields by position.)"""

    tick: int
    agent: str
    model_key: str
    provider: str
    model_name: str
    prompt: list[dict[str, str]]  # the exact messages the model was given
    prompt_hash: str
    raw_output: str = ""
    parsed: dict[str, Any] | None = None
    error: str | None = None
    #: "ok", "contract" (reply broke the schema), "provider" (the call failed),
    #: "aborted", "config" (e.g. missing key)
    status: str = "ok"
    violations: list[str] = field(default_factory=list)
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost: float = 0.0
    latency_ms: float = 0.0
    attempts: int = 0
    #: Why the earlier attempts failed, one line each, on a turn whose last attempt
    #: succeeded (a failed turn has them in `error`).
    retries: list[str] = field(default_factory=list)
    max_tokens: int | None = None
    #: What the model was shown of its tool calls, over all rounds ({tool, ok, result|error}).
    tool_results: list[dict[str, Any]] = field(default_factory=list)
    started_at: float = 0.0
    #: Every tool call: {round, tool, args, ok, result|error, duration_ms, files?}.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    #: The files (and agent folders) the turn changed, written when its tick commits:
    #: {path, area, rel, op, size, sha256, encoding, content, diff?}.
    files_changed: list[dict[str, Any]] = field(default_factory=list)
    #: The model calls of a turn that used tools, one each: {raw_output, input_tokens,
    #: output_tokens, cost, latency_ms}; `raw_output` above is the last one's.
    rounds: list[dict[str, Any]] = field(default_factory=list)
    #: The reply schema as structured output: "sent", "refused" (the server refused it and
    #: took the call without it; why is in `retries`), "dropped" (not sent: refused earlier
    #: in this run) or "" (not sent: off for this model).
    reply_schema: str = ""
    #: A command-line agent's process: exit code, signal, stderr (capped), duration,
    #: whether output was cut, restarts (engine/providers/cli.py). None for API models.
    process: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON values (what `from_dict` reads back)."""
        return plain_value(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TurnRecord":
        d = dict(d)
        d["usage"] = TokenUsage(**(d.get("usage") or {}))
        return cls(**d)


# --- run lifecycle -------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class RunStarted(Event):
    type: ClassVar[str] = "run_started"
    run_id: str
    org_path: str
    seed: int
    tick: int  # the last committed tick the run starts from (0 for a new run)
    definitions: dict[str, Any]  # resumes, budgets, model specs (no secrets)
    definitions_hash: str
    parent_run: str | None = None
    fork_tick: int | None = None
    at: float = 0.0


@dataclass(slots=True, frozen=True)
class RunPaused(Event):
    type: ClassVar[str] = "run_paused"
    tick: int
    at: float = 0.0


@dataclass(slots=True, frozen=True)
class RunResumed(Event):
    type: ClassVar[str] = "run_resumed"
    tick: int
    at: float = 0.0


@dataclass(slots=True, frozen=True)
class RunStopped(Event):
    type: ClassVar[str] = "run_stopped"
    tick: int
    reason: str  # "completed", "stopped", "error: ..."
    at: float = 0.0


# --- a tick --------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class TickStarted(Event):
    type: ClassVar[str] = "tick_started"
    tick: int
    firing: tuple[str, ...]
    at: float = 0.0


@dataclass(slots=True, frozen=True)
class TurnStarted(Event):
    type: ClassVar[str] = "turn_started"
    tick: int
    agent: str
    model_key: str
    max_tokens: int | None = None
    at: float = 0.0


@dataclass(slots=True, frozen=True)
class TokenDelta(Event):
    type: ClassVar[str] = "token_delta"
    persistent: ClassVar[bool] = False
    tick: int
    agent: str
    text: str
    #: True when a retry starts the reply over: a UI clears what it showed of this turn.
    restart: bool = False


@dataclass(slots=True, frozen=True)
class TurnFinished(Event):
    type: ClassVar[str] = "turn_finished"
    tick: int
    agent: str
    record: TurnRecord


@dataclass(slots=True, frozen=True)
class MessageCommitted(Event):
    type: ClassVar[str] = "message_committed"
    tick: int
    entry: OutboxEntry


@dataclass(slots=True, frozen=True)
class MemoryChanged(Event):
    type: ClassVar[str] = "memory_changed"
    tick: int
    agent: str
    op: str  # set, append, merge, delete
    key: str
    value: Any  # the value after the change (None after delete)


@dataclass(slots=True, frozen=True)
class CreditsCharged(Event):
    type: ClassVar[str] = "credits_charged"
    tick: int
    agent: str
    amount: float
    balance: float
    input_tokens: int = 0
    output_tokens: int = 0
    action_cost: float = 0.0
    overdraft: bool = False


@dataclass(slots=True, frozen=True)
class CreditsToppedUp(Event):
    type: ClassVar[str] = "credits_topped_up"
    tick: int
    agent: str
    amount: float
    balance: float


@dataclass(slots=True, frozen=True)
class SoftCapReached(Event):
    type: ClassVar[str] = "soft_cap_reached"
    tick: int
    agent: str
    balance: float
    soft_cap: float


@dataclass(slots=True, frozen=True)
class AgentSkipped(Event):
    type: ClassVar[str] = "agent_skipped"
    tick: int
    agent: str
    reason: str  # "broke", "disabled", "no_model"
    detail: str = ""


@dataclass(slots=True, frozen=True)
class TickCompleted(Event):
    type: ClassVar[str] = "tick_completed"
    tick: int
    fired: tuple[str, ...]
    failed: tuple[str, ...]
    messages: int
    spend: float
    total_spend: float
    duration_ms: float = 0.0
    at: float = 0.0


@dataclass(slots=True, frozen=True)
class TickAborted(Event):
    type: ClassVar[str] = "tick_aborted"
    tick: int
    reason: str = "operator"
    at: float = 0.0


@dataclass(slots=True, frozen=True)
class ToolCallStarted(Event):
    type: ClassVar[str] = "tool_call_started"
    tick: int
    agent: str
    round: int  # 1 for the tools of the first reply
    index: int  # the call's place in the turn (0-based, over all rounds)
    tool: str
    summary: str  # the arguments in one short line
    at: float = 0.0


@dataclass(slots=True, frozen=True)
class ToolCallFinished(Event):
    type: ClassVar[str] = "tool_call_finished"
    tick: int
    agent: str
    round: int
    index: int
    tool: str
    ok: bool
    summary: str  # the result (or the error) in one short line
    duration_ms: float = 0.0


@dataclass(slots=True, frozen=True)
class FilesNotWritten(Event):
    """A committed turn's file changes that could not be written to disk (a full disk,
    a folder changed under the run): the turn stands; these files are as they were."""

    type: ClassVar[str] = "files_not_written"
    tick: int
    agent: str
    problems: tuple[str, ...]
    at: float = 0.0


@dataclass(slots=True, frozen=True)
class McpServerFailed(Event):
    """An MCP server of org.json failed to start (or stopped on its own): its tools fail
    until it is back; the hub tries it again on the next call after a backoff."""

    type: ClassVar[str] = "mcp_server_failed"
    tick: int  # the last committed tick when it failed
    server: str
    error: str  # what went wrong, as the MCP view shows it ("failed to start: ...")
    log: str = ""  # its stderr log, when it has one
    at: float = 0.0


# --- the operator and the definitions ------------------------------------------------


@dataclass(slots=True, frozen=True)
class CommandApplied(Event):
    type: ClassVar[str] = "command_applied"
    tick: int  # the last committed tick when the command took effect
    command: str  # pause, resume, step, inject, top_up, enable, disable, set_interval, abort
    args: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0


@dataclass(slots=True, frozen=True)
class CommandRejected(Event):
    type: ClassVar[str] = "command_rejected"
    tick: int
    command: str
    error: str
    at: float = 0.0


@dataclass(slots=True, frozen=True)
class DefinitionsReloaded(Event):
    type: ClassVar[str] = "definitions_reloaded"
    tick: int
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: dict[str, list[str]]  # agent -> fields that differ
    definitions: dict[str, Any]
    definitions_hash: str
    at: float = 0.0


@dataclass(slots=True, frozen=True)
class DefinitionRejected(Event):
    type: ClassVar[str] = "definition_rejected"
    tick: int
    file: str
    errors: tuple[str, ...]
    at: float = 0.0


def event_from_dict(d: dict[str, Any]) -> Event:
    """Rebuild an event from `Event.to_dict()` output (the store and replay use this)."""
    d = dict(d)
    cls = EVENT_TYPES[d.pop("type")]
    if cls is TurnFinished:
        d["record"] = TurnRecord.from_dict(d["record"])
    elif cls is MessageCommitted:
        d["entry"] = OutboxEntry.from_dict(d["entry"])
    for f in dataclasses.fields(cls):
        if f.name in d and isinstance(d[f.name], list) and "tuple" in str(f.type):
            d[f.name] = tuple(d[f.name])
    return cls(**d)


for _cls in EVENT_TYPES.values():
    fast_frozen_init(_cls)


#: The parts of an event that are engine records with wall-clock fields of their own
#: (a turn record, an outbox entry). Nothing else is looked into: payloads, memory values,
#: replies and definitions are the organisation's data, whatever their keys are called.
_RECORD_FIELDS = ("record", "entry")
#: Lists of the turn record whose items carry wall-clock fields of their own.
_RECORD_LISTS = ("tool_calls", "rounds")


def record_without_clock(rec: dict[str, Any]) -> dict[str, Any]:
    """A turn record dict without its wall-clock fields (nor its tool calls' and rounds')."""
    out = {k: v for k, v in rec.items() if k not in WALL_CLOCK_FIELDS}
    for k in _RECORD_LISTS:
        items = out.get(k)
        if isinstance(items, list) and items:
            out[k] = [
                {kk: vv for kk, vv in item.items() if kk not in WALL_CLOCK_FIELDS} if isinstance(item, dict) else item
                for item in items
            ]
    return out


def canonical(d: dict[str, Any]) -> dict[str, Any]:
    """A copy of an event dict without its wall-clock fields (and its records').

    Only the engine's own fields are dropped: a message payload or a memory value with a
    key named "at" or "run_id" is kept, so two runs that differ there do not compare equal.
    """
    out = {k: v for k, v in d.items() if k not in WALL_CLOCK_FIELDS}
    for k in _RECORD_FIELDS:
        rec = out.get(k)
        if isinstance(rec, dict):
            out[k] = record_without_clock(rec) if k == "record" else {kk: vv for kk, vv in rec.items() if kk not in WALL_CLOCK_FIELDS}
            proc = out[k].get("process")
            if isinstance(proc, dict):  # a cli turn's duration is wall-clock time too
                out[k]["process"] = {kk: vv for kk, vv in proc.items() if kk not in WALL_CLOCK_FIELDS}
    return out
