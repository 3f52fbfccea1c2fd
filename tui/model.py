"""What the control room knows about the run: the engine's events folded for display.

`RunView.apply(events)` takes one drained batch of events and returns `Changes`:
which agents, ticks and panes need repainting, the token text to append per
agent, and the notices to show. Panes read the view (and the engine's public
read API) and never see the events themselves. No Textual in here: the view is
plain data, tested and benchmarked on its own.

Everything kept is bounded: tick rows, turn history per agent, stream text per
agent and the message-volume window, so memory stays flat on a long run.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Self, Sequence

from lemming.engine.events import (
    AgentSkipped,
    CommandApplied,
    CommandRejected,
    CreditsCharged,
    CreditsToppedUp,
    DefinitionRejected,
    McpServerFailed,
    EVENT_TYPES,
    DefinitionsReloaded,
    Event,
    MessageCommitted,
    RunPaused,
    RunResumed,
    RunStarted,
    RunStopped,
    SoftCapReached,
    TickAborted,
    TickCompleted,
    TickStarted,
    TokenDelta,
    ToolCallFinished,
    ToolCallStarted,
    TurnFinished,
    TurnRecord,
    TurnStarted,
)
from lemming.engine.messages import OPERATOR

#: How many tick rows the timeline keeps (older ticks live in the run store).
MAX_TICK_ROWS = 10_000
#: Turn records kept per agent for the inspector ([ and ] page through them).
TURNS_PER_AGENT = 8
#: Characters of the current reply kept per agent (the stream pane's backlog).
STREAM_CHARS = 12_000
#: Ticks over which "recent" message volumes and spend rates are counted.
RECENT_TICKS = 10

BROADCAST = "*"
#: How the timeline notes a command sent from another process (with who sent it).
SENT_NOTES = {"pause": "⏸", "resume": "▶", "step": "step", "set_interval": "interval", "abort": "abort"}


@dataclass(slots=True)
class Notice:
    """Something the operator should see as a notification."""

    text: str
    severity: str = "information"  # information, warning, error
    title: str = ""


def tool_line(ev: Event) -> str:
    """A tool call (or its result) as one line of the stream."""
    if type(ev) is ToolCallStarted:
        return f"⚙ {ev.tool} {ev.summary}"  # type: ignore[attr-defined]
    mark = "✓" if ev.ok else "✗"  # type: ignore[attr-defined]
    return f"  {mark} {ev.tool}: {ev.summary}"  # type: ignore[attr-defined]


@dataclass(slots=True)
class StreamPiece:
    """One step of an agent's live reply: a turn starting, text, a retry, the end."""

    kind: str  # "start", "text", "restart", "tool" (a tool call or its result), "end"
    tick: int
    text: str = ""
    record: TurnRecord | None = None


def turn_pieces(rec: TurnRecord) -> list[StreamPiece]:
    """A finished turn as the pieces it streamed as (start, its reply, end): what a pane
    that was not watching when it ran shows of it."""
    pieces = [StreamPiece("start", rec.tick)]
    if rec.raw_output:
        pieces.append(StreamPiece("text", rec.tick, rec.raw_output))
    pieces.append(StreamPiece("end", rec.tick, record=rec))
    return pieces


@dataclass(slots=True)
class TickRow:
    """One line of the timeline."""

    tick: int
    status: str = "next"  # next (not started), running, done, aborted
    firing: tuple[str, ...] = ()
    fired: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)
    finished: int = 0  # turns of this tick that ended so far
    messages: int = 0
    spend: float = 0.0
    total_spend: float = 0.0
    duration_ms: float = 0.0
    #: Operator actions that took effect at the boundary before this tick.
    operator: list[str] = field(default_factory=list)


@dataclass(slots=True)
class AgentView:
    """The display-side facts about one agent that the engine's state does not keep."""

    name: str
    thinking_tick: int | None = None
    turns: int = 0
    failures: int = 0
    last_tick: int | None = None
    last_status: str | None = None
    last_error: str | None = None
    history: deque[TurnRecord] = field(default_factory=lambda: deque(maxlen=TURNS_PER_AGENT))
    stream_tick: int | None = None
    stream_text: str = ""
    #: (tick, amount) of recent charges, for the spend rate.
    charges: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=64))
    soft_capped: bool = False

    def append_stream(self, text: str) -> None:
        s = self.stream_text + text
        if len(s) > STREAM_CHARS:
            s = s[-STREAM_CHARS:]
        self.stream_text = s

    def spend_rate(self, now_tick: int, ticks: int = RECENT_TICKS) -> float:
        """Average spend per tick over the last `ticks` ticks."""
        lo = now_tick - ticks
        return sum(a for t, a in self.charges if t > lo) / max(1, ticks)

    def copy(self) -> "AgentView":
        """A copy whose deques are its own (`dataclasses.replace` in half the time: a
        replay view copy makes one per agent, on every cursor step)."""
        c = object.__new__(AgentView)
        for name in _AGENT_FIELDS:
            object.__setattr__(c, name, getattr(self, name))
        c.history = deque(self.history, maxlen=self.history.maxlen)
        c.charges = deque(self.charges, maxlen=self.charges.maxlen)
        return c


_AGENT_FIELDS = tuple(f.name for f in dataclasses.fields(AgentView))


@dataclass(slots=True)
class Changes:
    """What one batch of events changed, for the panes to repaint."""

    events: int = 0
    agents: set[str] = field(default_factory=set)
    ticks: set[int] = field(default_factory=set)
    structure: bool = False  # agents were added or removed
    header: bool = False
    graph: bool = False
    credits: bool = False
    stream: dict[str, list[StreamPiece]] = field(default_factory=dict)
    notices: list[Notice] = field(default_factory=list)

    def piece(self, agent: str, piece: StreamPiece) -> None:
        pieces = self.stream.setdefault(agent, [])
        if piece.kind == "text" and pieces and pieces[-1].kind == "text" and pieces[-1].tick == piece.tick:
            pieces[-1].text += piece.text
        else:
            pieces.append(piece)

    @property
    def empty(self) -> bool:
        return not (
            self.agents or self.ticks or self.structure or self.header or self.graph or self.credits
            or self.stream or self.notices
        )


class RunView:
    """The control room's fold of the event stream (see the module docstring).

    It keeps what the organisation's state does not (timeline rows, the replies being
    streamed, who is thinking, recent turns, charges and message volumes); what the state
    keeps (tick, credits, spend, interval, paused, stopped) the panes read from the run
    source's state, never from here.
    """

    #: Event type -> the method that folds it; built per class from `FOLDS` (a subclass
    #: that overrides one of the methods gets its own in its table).
    _fold: dict[type[Event], Callable[["RunView", Any, Changes], None]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls._fold = _fold_table(cls)

    def __init__(self, agent_names: Iterable[str] = ()) -> None:
        self.run_id: str = ""
        self.agents: dict[str, AgentView] = {}
        self.order: list[str] = []  # display order: by name, retired agents kept
        self.positions: dict[str, int] = {}  # name -> index in `order`
        self._rows: deque[TickRow] = deque(maxlen=MAX_TICK_ROWS)
        #: The timeline's rows, oldest first (replay's view shows the whole run's index).
        self.rows: Sequence[TickRow] = self._rows
        self._row_index: dict[int, TickRow] = {}
        self.committed_tick = 0
        self.running_tick: int | None = None
        #: Per tick: (sender, recipient or "*") -> messages; the graph sums the window.
        self.volumes: deque[tuple[int, Counter[tuple[str, str]]]] = deque(maxlen=RECENT_TICKS)
        self.tick_spend: deque[tuple[int, float]] = deque(maxlen=RECENT_TICKS)
        self.operator_sent = 0
        #: Who sent the command whose effect is noted next (an attached operator, `ctl`...).
        self._sender: str | None = None
        self.events_seen = 0
        for name in agent_names:
            self._adopt(name)

    # --- queries -------------------------------------------------------------------------

    def agent(self, name: str) -> AgentView:
        return self.agents.get(name) or self._adopt(name)

    def row(self, tick: int) -> TickRow | None:
        return self._row_index.get(tick)

    def next_row(self) -> TickRow:
        """The row of the tick that runs next (or is running): the timeline's marked row."""
        t = self.running_tick if self.running_tick is not None else self.committed_tick + 1
        return self._ensure_row(t)

    def recent_volumes(self) -> Counter[tuple[str, str]]:
        total: Counter[tuple[str, str]] = Counter()
        for _, c in self.volumes:
            total.update(c)
        return total

    def spend_rate(self) -> float:
        """Average organisation spend per tick over the recent ticks."""
        if not self.tick_spend:
            return 0.0
        return sum(s for _, s in self.tick_spend) / len(self.tick_spend)

    def turn(self, agent: str, tick: int | None = None) -> TurnRecord | None:
        """A kept turn record of `agent` (its last one when `tick` is None)."""
        a = self.agents.get(agent)
        if a is None or not a.history:
            return None
        if tick is None:
            return a.history[-1]
        for rec in reversed(a.history):
            if rec.tick == tick:
                return rec
        return None

    # --- copies --------------------------------------------------------------------------

    def copy(self) -> Self:
        """A copy of the view such that later folds into either leave the other alone.

        Containers are copied one level down, and so are the agents' views and the
        timeline rows still being folded; turn records are shared (never changed once
        folded).
        """
        c = copy.copy(self)
        c.agents = {n: a.copy() for n, a in self.agents.items()}
        c.order = list(self.order)
        c.positions = dict(self.positions)
        c.volumes = deque(((t, Counter(cnt)) for t, cnt in self.volumes), maxlen=self.volumes.maxlen)
        c.tick_spend = deque(self.tick_spend, maxlen=self.tick_spend.maxlen)
        self._copy_rows(c)
        return c

    def restore(self, other: "RunView") -> None:
        """Make this view (the object the panes hold) a copy of `other`."""
        vars(self).update(vars(other.copy()))

    def _copy_rows(self, c: Self) -> None:
        """Give the copy `c` timeline rows of its own where they may still change."""
        c._rows = c.rows = deque((unfinished_copy(r) for r in self._rows), maxlen=self._rows.maxlen)
        c._row_index = {r.tick: r for r in c._rows}

    # --- folding -------------------------------------------------------------------------

    def _adopt(self, name: str) -> AgentView:
        a = self.agents.get(name)
        if a is None:
            a = self.agents[name] = AgentView(name)
            self.order = sorted(self.agents)
            self.positions = {n: i for i, n in enumerate(self.order)}
        return a

    def _ensure_row(self, tick: int) -> TickRow:
        row = self._row_index.get(tick)
        if row is None:
            rows = self._rows
            if len(rows) == rows.maxlen:
                old = rows[0]
                self._row_index.pop(old.tick, None)
            row = TickRow(tick)
            rows.append(row)
            self._row_index[tick] = row
        return row

    def _volume(self, tick: int) -> Counter[tuple[str, str]]:
        if not self.volumes or self.volumes[-1][0] != tick:
            self.volumes.append((tick, Counter()))
        return self.volumes[-1][1]

    def _operator_note(self, ch: Changes, note: str) -> None:
        if self._sender:
            note, self._sender = f"{note} ({self._sender})", None
        row = self.next_row()
        row.operator.append(note)
        ch.ticks.add(row.tick)

    def apply(self, events: Iterable[Event]) -> Changes:
        """Fold one batch of events (see the module docstring); events without a case in
        `_FOLD` change nothing (VIEW_SKIPS lists the recorded ones)."""
        ch = Changes()
        fold = self._fold
        n = 0
        for ev in events:
            n += 1
            f = fold.get(type(ev))
            if f is not None:
                f(self, ev, ch)
        self.events_seen += n
        ch.events = n
        return ch

    def _token(self, ev: TokenDelta, ch: Changes) -> None:
        a = self.agent(ev.agent)
        if ev.restart:
            a.stream_text = ""
            ch.piece(a.name, StreamPiece("restart", ev.tick))
        a.append_stream(ev.text)
        ch.piece(a.name, StreamPiece("text", ev.tick, ev.text))

    def _turn_started(self, ev: TurnStarted, ch: Changes) -> None:
        a = self.agent(ev.agent)
        a.thinking_tick = ev.tick
        a.stream_tick = ev.tick
        a.stream_text = ""
        ch.agents.add(a.name)
        ch.piece(a.name, StreamPiece("start", ev.tick))

    def _tool(self, ev: ToolCallStarted | ToolCallFinished, ch: Changes) -> None:
        ch.agents.add(ev.agent)  # the roster shows a running tool
        ch.piece(ev.agent, StreamPiece("tool", ev.tick, tool_line(ev)))

    def _tick_started(self, ev: TickStarted, ch: Changes) -> None:
        row = self._ensure_row(ev.tick)
        row.status = "running"
        row.firing = ev.firing
        self.running_tick = ev.tick
        ch.ticks.add(row.tick)
        ch.header = True

    def _charged(self, ev: CreditsCharged, ch: Changes) -> None:
        a = self.agent(ev.agent)
        a.charges.append((ev.tick, ev.amount))
        ch.agents.add(a.name)
        ch.credits = True

    def _skipped(self, ev: AgentSkipped, ch: Changes) -> None:
        row = self._ensure_row(ev.tick)
        row.skipped[ev.agent] = ev.reason
        ch.ticks.add(row.tick)
        ch.agents.add(ev.agent)

    def _soft_cap(self, ev: SoftCapReached, ch: Changes) -> None:
        a = self.agent(ev.agent)
        a.soft_capped = True
        ch.agents.add(a.name)
        ch.credits = True
        ch.notices.append(
            Notice(f"{ev.agent} is down to {ev.balance:.4g} credits (soft cap {ev.soft_cap:g}); t tops up", "warning", "Soft cap reached")
        )

    def _topped_up(self, ev: CreditsToppedUp, ch: Changes) -> None:
        a = self.agent(ev.agent)
        a.soft_capped = False
        ch.agents.add(a.name)
        ch.credits = True
        self._operator_note(ch, f"+{ev.amount:g}→{ev.agent}")

    def _rejected(self, ev: CommandRejected, ch: Changes) -> None:
        ch.notices.append(Notice(f"{ev.command}: {ev.error}", "error", "Command rejected"))

    def _mcp_failed(self, ev: McpServerFailed, ch: Changes) -> None:
        log = f" Its log: {ev.log}." if ev.log else ""
        ch.notices.append(Notice(f"{ev.server}: {ev.error}. Its tools fail until it is up; M shows it.{log}", "error", "MCP server failed"))

    def _paused_or_resumed(self, ev: RunPaused | RunResumed, ch: Changes) -> None:
        # The state holds whether the run is paused; the next tick's row shows it.
        ch.header = True
        ch.ticks.add(self.next_row().tick)

    def _aborted(self, ev: TickAborted, ch: Changes) -> None:
        row = self._ensure_row(ev.tick)
        row.status = "aborted"
        self.running_tick = None
        for a in self.agents.values():
            if a.thinking_tick == ev.tick:
                a.thinking_tick = None
                ch.agents.add(a.name)
                ch.piece(a.name, StreamPiece("end", ev.tick, "aborted"))
        ch.ticks.add(row.tick)
        ch.header = True

    def _run_started(self, ev: RunStarted, ch: Changes) -> None:
        self.run_id = ev.run_id
        self.committed_tick = ev.tick
        for name in ev.definitions.get("agents", {}):
            self._adopt(name)
        ch.structure = True
        ch.header = True
        ch.ticks.add(self.next_row().tick)

    def _run_stopped(self, ev: RunStopped, ch: Changes) -> None:
        self.running_tick = None
        ch.header = True
        ch.ticks.add(self.next_row().tick)
        if ev.reason.startswith("error"):
            ch.notices.append(Notice(ev.reason, "error", "The run stopped"))

    def _reloaded(self, ev: DefinitionsReloaded, ch: Changes) -> None:
        for name in ev.added:
            self._adopt(name)
        parts = []
        if ev.added:
            parts.append("added " + ", ".join(ev.added))
        if ev.removed:
            parts.append("retired " + ", ".join(ev.removed))
        if ev.changed:
            parts.append("changed " + ", ".join(f"{k} ({', '.join(v)})" for k, v in ev.changed.items()))
        ch.notices.append(Notice("; ".join(parts) or "no change", "information", "Definitions reloaded"))
        ch.structure = True
        ch.graph = True
        self._operator_note(ch, "reload")

    def _definition_rejected(self, ev: DefinitionRejected, ch: Changes) -> None:
        errors = "\n".join(ev.errors[:6])
        more = f"\n(+{len(ev.errors) - 6} more)" if len(ev.errors) > 6 else ""
        ch.notices.append(Notice(f"{ev.file}\n{errors}{more}\nThe last good definition keeps running.", "error", "Definition rejected"))

    def _turn_finished(self, ev: TurnFinished, ch: Changes) -> None:
        rec = ev.record
        a = self.agent(ev.agent)
        a.thinking_tick = None
        a.turns += 1
        a.last_tick = rec.tick
        a.last_status = rec.status
        a.last_error = rec.error
        if rec.status != "ok":
            a.failures += 1
        a.history.append(rec)
        if not a.stream_text and rec.raw_output:
            a.stream_text = rec.raw_output[-STREAM_CHARS:]
        row = self._ensure_row(ev.tick)
        row.finished += 1
        if rec.status != "ok" and rec.agent not in row.failed:
            row.failed = row.failed + (rec.agent,)
        ch.agents.add(a.name)
        ch.ticks.add(row.tick)
        ch.piece(a.name, StreamPiece("end", ev.tick, record=rec))

    def _tick_completed(self, ev: TickCompleted, ch: Changes) -> None:
        row = self._ensure_row(ev.tick)
        row.status = "done"
        row.fired = ev.fired
        row.failed = ev.failed
        row.messages = ev.messages
        row.spend = ev.spend
        row.total_spend = ev.total_spend
        row.duration_ms = ev.duration_ms
        self.committed_tick = ev.tick
        self.running_tick = None
        self.tick_spend.append((ev.tick, ev.spend))
        ch.ticks.add(row.tick)
        ch.ticks.add(self.next_row().tick)
        ch.header = True
        ch.graph = True
        ch.credits = True

    def _message(self, ev: MessageCommitted, ch: Changes) -> None:
        e = ev.entry
        vol = self._volume(ev.tick)
        for r in e.recipients or (BROADCAST,):
            vol[(e.agent, r)] += 1
        if e.agent == OPERATOR:
            self.operator_sent += 1
            to = ",".join(e.recipients) if e.recipients else "all"
            kind = "" if e.kind == "message" else f" {e.kind}"
            self._operator_note(ch, f"✉{kind}→{to}")
        else:
            ch.agents.add(e.agent)
        ch.graph = True

    def _command(self, ev: CommandApplied, ch: Changes) -> None:
        c = ev.command
        by = ev.args.get("by")
        if by:  # sent from another process (a served run): the timeline says who
            self._sender = str(by).rsplit(":", 1)[0]  # user/client, without the pid
            if c not in ("inject", "top_up", "enable", "disable"):  # those are noted with their effect
                self._operator_note(ch, SENT_NOTES.get(c, c))
        if c in ("enable", "disable"):
            for name in ev.args.get("agents", []):
                ch.agents.add(name)
                self._operator_note(ch, f"{c} {name}")
        ch.header = ch.header or c in ("set_interval", "abort", "pause", "resume", "step")


def unfinished_copy(row: TickRow) -> TickRow:
    """`row` itself once its tick is done (it never changes again), else a copy."""
    if row.status == "done":
        return row
    return dataclasses.replace(row, operator=list(row.operator), skipped=dict(row.skipped))


#: What each kind of event changes in the view: event type -> RunView method name.
FOLDS: dict[type[Event], str] = {
    TokenDelta: "_token",
    TurnStarted: "_turn_started",
    TurnFinished: "_turn_finished",
    ToolCallStarted: "_tool",
    ToolCallFinished: "_tool",
    TickStarted: "_tick_started",
    TickCompleted: "_tick_completed",
    MessageCommitted: "_message",
    CreditsCharged: "_charged",
    AgentSkipped: "_skipped",
    SoftCapReached: "_soft_cap",
    CreditsToppedUp: "_topped_up",
    CommandApplied: "_command",
    CommandRejected: "_rejected",
    RunPaused: "_paused_or_resumed",
    RunResumed: "_paused_or_resumed",
    TickAborted: "_aborted",
    RunStarted: "_run_started",
    RunStopped: "_run_stopped",
    DefinitionsReloaded: "_reloaded",
    DefinitionRejected: "_definition_rejected",
    McpServerFailed: "_mcp_failed",
}


def _fold_table(cls: type[RunView]) -> dict[type[Event], Callable[[RunView, Any, Changes], None]]:
    return {t: getattr(cls, name) for t, name in FOLDS.items()}


RunView._fold = _fold_table(RunView)

#: Recorded events the view has no case for (it ignores them): replay leaves them out
#: when it reads a tick, since no pane needs them.
VIEW_SKIPS: frozenset[type[Event]] = frozenset(t for t in EVENT_TYPES.values() if t.persistent) - FOLDS.keys()
