"""The organisation's state, and the one function that changes it: `OrgState.apply_all(events)`
(`apply(event)` for one).

The live engine advances its state by applying the very events it records, and
replay folds the same events with the same code, so the state at tick T is the
same whether it was lived or rebuilt.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from lemming.engine.events import (
    AgentSkipped,
    CommandApplied,
    CreditsCharged,
    CreditsToppedUp,
    EVENT_TYPES,
    DefinitionsReloaded,
    Event,
    MemoryChanged,
    MessageCommitted,
    RunPaused,
    RunResumed,
    RunStarted,
    RunStopped,
    SoftCapReached,
    TickCompleted,
    ToolCallFinished,
    ToolCallStarted,
    TurnFinished,
    TurnRecord,
)
from lemming.engine.events import record_without_clock
from lemming.engine.jsontext import copy_plain
from lemming.engine.messages import MessageBoard, OutboxEntry
from lemming.engine.org import Org


#: The versions of `OrgState.memory_version`: one counter for every state, so that a number
#: names one memory's content (a replaced state's numbers are never given again).
_MEMORY_VERSIONS = itertools.count(1)


@dataclass
class OrgState:
    """Everything the organisation is at the end of `tick`."""

    org: Org
    tick: int = 0
    board: MessageBoard = field(default_factory=MessageBoard)
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)
    credits: dict[str, float] = field(default_factory=dict)
    spent: dict[str, float] = field(default_factory=dict)
    enabled: dict[str, bool] = field(default_factory=dict)
    #: An agent is shown entries with tick >= cursor as new (the tick of its last turn).
    cursors: dict[str, int] = field(default_factory=dict)
    last_turn: dict[str, TurnRecord] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    soft_warned: set[str] = field(default_factory=set)
    retired: set[str] = field(default_factory=set)
    #: Agents skipped as broke at their last fire point (credits above zero but short of
    #: what the prompt costs), until a top-up, a turn of theirs or new definitions.
    broke: set[str] = field(default_factory=set)
    total_spend: float = 0.0
    seq: int = 0  # how many outbox entries were ever committed (orders entries of one tick)
    interval: float = 0.0
    paused: bool = False
    stopped: str | None = None  # why the run last stopped, if it did
    #: agent -> the tool it is running now (only ever set within a tick: every call
    #: finishes before its tick commits, so snapshots never hold any)
    running_tool: dict[str, str] = field(default_factory=dict)
    #: agent -> a number that changes whenever `apply_all` changes its memory, never the
    #: same twice in the process (for what is worked out from a memory and kept: the
    #: engine's JSON of it, `Engine._plan_turn`). An agent missing here has had no change
    #: applied to this state's memory of it.
    memory_version: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    #: Keep the board bounded to what inboxes can still show (the live engine's state and
    #: the recorder's own copy; a fold that rebuilds past states keeps every entry).
    bounded: bool = False

    @classmethod
    def initial(cls, org: Org) -> "OrgState":
        s = cls(org=org)
        s._adopt_agents()
        return s

    def _adopt_agents(self) -> None:
        for name, a in self.org.agents.items():
            if name not in self.credits:
                self.credits[name] = a.budget.initial
                self.spent[name] = 0.0
                self.enabled[name] = True
                self.memory[name] = {}
                self.cursors[name] = 0
                self.sent[name] = 0
            self.retired.discard(name)

    # --- folding -----------------------------------------------------------------------

    def apply(self, ev: Event) -> None:
        """Apply one event (`apply_all` of it alone)."""
        self.apply_all((ev,))

    def apply_all(self, events: Iterable[Event]) -> None:
        """Apply `events` in order: the one place the state changes, for the live engine
        (a tick's batch at once) and for every fold that rebuilds a state (replay, the
        store, the recorder's own copy). The kinds a tick is made of are applied here in
        place, without a call per event; the others through `_APPLY`."""
        get = _APPLY.get
        noop = _NO_CHANGE
        add = self.board.add
        sent = self.sent
        memory = self.memory
        memory_version = self.memory_version
        credits = self.credits
        spent = self.spent
        last_turn = self.last_turn
        cursors = self.cursors
        broke = self.broke
        for ev in events:
            t = type(ev)
            if t in noop:
                continue
            if t is TurnFinished:
                rec = ev.record  # type: ignore[attr-defined]
                agent = rec.agent
                last_turn[agent] = rec
                cursors[agent] = rec.tick
                if broke:
                    broke.discard(agent)
            elif t is MessageCommitted:
                e = ev.entry  # type: ignore[attr-defined]
                add(e)
                self.seq += 1
                agent = e.agent
                sent[agent] = sent.get(agent, 0) + 1
            elif t is CreditsCharged:
                agent = ev.agent  # type: ignore[attr-defined]
                amount = ev.amount  # type: ignore[attr-defined]
                credits[agent] = ev.balance  # type: ignore[attr-defined]
                spent[agent] = spent.get(agent, 0.0) + amount
                self.total_spend += amount
            elif t is MemoryChanged:
                mem = memory.get(ev.agent)  # type: ignore[attr-defined]
                if mem is None:
                    mem = memory[ev.agent] = {}  # type: ignore[attr-defined]
                if ev.op == "delete":  # type: ignore[attr-defined]
                    mem.pop(ev.key, None)  # type: ignore[attr-defined]
                    memory_version[ev.agent] = next(_MEMORY_VERSIONS)  # type: ignore[attr-defined]
                else:
                    value = ev.value  # type: ignore[attr-defined]
                    # A string set again to what it was changes nothing (a status written
                    # turn after turn): the memory keeps its version.
                    if type(value) is not str or type(old := mem.get(ev.key)) is not str or old != value:  # type: ignore[attr-defined]
                        mem[ev.key] = value if type(value) is str else copy_plain(value)  # type: ignore[attr-defined]
                        memory_version[ev.agent] = next(_MEMORY_VERSIONS)  # type: ignore[attr-defined]
            else:
                f = get(t)
                if f is not None:
                    f(self, ev)

    def _apply_tick(self, ev: TickCompleted) -> None:
        self.tick = ev.tick
        self.running_tool.clear()
        if self.bounded and self.board.bound_due():
            self.bound_board()

    def bound_board(self) -> None:
        """Let the board drop what no inbox can show any more (`MessageBoard.bound`)."""
        org = self.org
        settings = org.settings
        self.board.bound(
            self.cursors,
            {name: org.readable_by(name) for name in org.agents},
            new_limit=settings.inbox_new_limit,
            context=settings.inbox_context,
        )

    def _apply_tool_started(self, ev: ToolCallStarted) -> None:
        self.running_tool[ev.agent] = ev.tool

    def _apply_tool_finished(self, ev: ToolCallFinished) -> None:
        self.running_tool.pop(ev.agent, None)

    def _apply_skipped(self, ev: AgentSkipped) -> None:
        if ev.reason == "broke":
            self.broke.add(ev.agent)

    def _apply_top_up(self, ev: CreditsToppedUp) -> None:
        self.credits[ev.agent] = ev.balance
        self.broke.discard(ev.agent)
        a = self.org.agents.get(ev.agent)
        if a is not None and (a.budget.soft_cap is None or ev.balance > a.budget.soft_cap):
            self.soft_warned.discard(ev.agent)

    def _apply_soft_cap(self, ev: SoftCapReached) -> None:
        self.soft_warned.add(ev.agent)

    def _apply_paused(self, ev: RunPaused) -> None:
        self.paused = True

    def _apply_resumed(self, ev: RunResumed) -> None:
        self.paused = False

    def _apply_started(self, ev: RunStarted) -> None:
        self.stopped = None
        # A resumed or forked run may start with other definitions than its state
        # holds; the live engine runs the ones in the event, so the fold must too.
        if not self.org.agents or self.org.definitions_hash() != ev.definitions_hash:
            self.org = Org.from_definitions(Path(ev.org_path), ev.definitions)
        self.broke.clear()  # (prices and budgets may have changed: the next fire point tells)
        self._adopt_agents()

    def _apply_reload(self, ev: DefinitionsReloaded) -> None:
        self.org = Org.from_definitions(self.org.root, ev.definitions)
        self.broke.clear()  # (prices and budgets may have changed: the next fire point tells)
        self._adopt_agents()
        self.retired.update(ev.removed)

    def _apply_stopped(self, ev: RunStopped) -> None:
        self.stopped = ev.reason

    def _apply_command(self, ev: CommandApplied) -> None:
        if ev.command in ("enable", "disable"):
            for name in ev.args.get("agents", []):
                self.enabled[name] = ev.command == "enable"
        elif ev.command == "set_interval":
            self.interval = float(ev.args["seconds"])

    # --- views -------------------------------------------------------------------------

    def agent_status(self, name: str) -> str:
        """idle, broke, error, disabled or retired (the engine adds `thinking` live)."""
        if name in self.retired or name not in self.org.agents:
            return "retired"
        if not self.enabled.get(name, True):
            return "disabled"
        if name in self.broke or (self.credits.get(name, 0.0) <= 0 and self.org.agents[name].resume.calls_model):
            return "broke"
        last = self.last_turn.get(name)
        if last is not None and last.status not in ("ok",):
            return "error"
        return "idle"

    # --- snapshots ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot (the store writes these every K ticks)."""
        return {
            "definitions": self.org.definitions(),
            "org_root": str(self.org.root),
            "tick": self.tick,
            "messages": [e.to_dict() for e in self.board.all()],
            "memory": self.memory,
            "credits": self.credits,
            "spent": self.spent,
            "enabled": self.enabled,
            "cursors": self.cursors,
            "last_turn": {k: _record_dict(v) for k, v in self.last_turn.items()},
            "sent": self.sent,
            "soft_warned": sorted(self.soft_warned),
            "retired": sorted(self.retired),
            "broke": sorted(self.broke),
            "total_spend": self.total_spend,
            "seq": self.seq,
            "interval": self.interval,
            "paused": self.paused,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OrgState":
        org = Org.from_definitions(Path(d.get("org_root", ".")), d["definitions"])
        s = cls(org=org)
        s.tick = d["tick"]
        for e in d["messages"]:
            s.board.add(OutboxEntry.from_dict(e))
        s.memory = copy.deepcopy(d["memory"])
        s.credits = dict(d["credits"])
        s.spent = dict(d["spent"])
        s.enabled = dict(d["enabled"])
        s.cursors = dict(d["cursors"])
        s.last_turn = {k: TurnRecord.from_dict(v) for k, v in d["last_turn"].items()}
        s.sent = dict(d["sent"])
        s.soft_warned = set(d["soft_warned"])
        s.retired = set(d["retired"])
        s.broke = set(d.get("broke", ()))  # (snapshots from before it was kept have none)
        s.total_spend = d["total_spend"]
        s.seq = d["seq"]
        s.interval = d.get("interval", 0.0)
        s.paused = d.get("paused", False)
        return s

    def fingerprint(self) -> dict[str, Any]:
        """What must match between a lived and a folded state (no wall-clock fields)."""
        d = self.to_dict()
        d.pop("org_root")
        d["last_turn"] = {k: record_without_clock(rec) for k, rec in d["last_turn"].items()}
        for m in d["messages"]:
            m.pop("created_at", None)
        d.pop("paused")
        return d


#: What each other kind of event changes (the kinds of a tick's turns, applied in place by
#: `apply_all`, are `_IN_PLACE`).
_APPLY: dict[type, Any] = {
    TickCompleted: OrgState._apply_tick,
    AgentSkipped: OrgState._apply_skipped,
    ToolCallStarted: OrgState._apply_tool_started,
    ToolCallFinished: OrgState._apply_tool_finished,
    CreditsToppedUp: OrgState._apply_top_up,
    SoftCapReached: OrgState._apply_soft_cap,
    CommandApplied: OrgState._apply_command,
    RunPaused: OrgState._apply_paused,
    RunResumed: OrgState._apply_resumed,
    RunStarted: OrgState._apply_started,
    DefinitionsReloaded: OrgState._apply_reload,
    RunStopped: OrgState._apply_stopped,
}

_IN_PLACE: frozenset[type] = frozenset((TurnFinished, MessageCommitted, CreditsCharged, MemoryChanged))

#: Events that change nothing (a tick or turn started, token deltas...).
_NO_CHANGE: frozenset[type] = frozenset(t for t in EVENT_TYPES.values() if t not in _APPLY and t not in _IN_PLACE)

#: Recorded events `OrgState.apply_all` leaves the state alone for: the store's fold need
#: not even build them.
FOLD_SKIPS: frozenset[type[Event]] = frozenset(t for t in _NO_CHANGE if t.persistent)


def _record_dict(r: TurnRecord) -> dict[str, Any]:
    from lemming.engine.events import plain_value

    return plain_value(r)
