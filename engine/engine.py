"""The tick engine: runs an organisation tick by tick and takes the operator's commands.

Within a tick every firing agent runs concurrently against the state as it was
when the tick began (nothing changes the state during a tick). When all turns
have ended their results are committed in the deterministic order — turn
record, messages, memory changes, credit charges — then `TickCompleted`, in
one recorder write (one store transaction). Commands are queued and applied at
the next tick boundary; each becomes an event.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import deque
from dataclasses import dataclass, field
from contextlib import contextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable, Iterator, Protocol, Sequence

from lemming.engine import schedule
from lemming.engine.credits import DEFAULT_MAX_TOKENS, allowance, turn_cost
from lemming.engine.events import (
    AgentSkipped,
    CommandApplied,
    CommandRejected,
    CreditsCharged,
    CreditsToppedUp,
    DefinitionRejected,
    DefinitionsReloaded,
    Event,
    FilesNotWritten,
    McpServerFailed,
    MemoryChanged,
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
    TokenUsage,
    ToolCallFinished,
    ToolCallStarted,
    TurnFinished,
    TurnRecord,
    TurnStarted,
)
from lemming.engine import eager, gcfreeze, plainjson
from lemming.engine.jsontext import copy_plain
from lemming.engine.memory import update_memory
from lemming.engine.messages import OPERATOR, OutboxEntry
from lemming.engine.org import Org, definitions_hash, load_org
from lemming.engine.prompt import (
    MAX_ENTRIES_PER_TURN,
    ContractViolation,
    ParsedReply,
    PromptParts,
    memory_json,
    parse_reply,
    prompt_hash,
    tool_round_messages,
)
from lemming.engine.providers.base import ChatMessage, CompletionRequest, ProviderError
from lemming.engine.providers.registry import ProviderRegistry
from lemming.engine.providers.retry import RetryPolicy, estimate_tokens, stream_with_retries
from lemming.engine.providers.structured import StructuredOutput
from lemming.engine.mcp import McpHub, mcp_grants, split_tool_name
from lemming.engine.providers import cli as cli_provider
from lemming.engine.sim_mode import keep_simulated
from lemming.engine.slots import Slots
from lemming.engine.run_view import RunReadAPI
from lemming.engine.state import OrgState
from lemming.engine.tools.create_agent import AGENTS_AREA, apply_created
from lemming.engine.tools.files import apply_changes
from lemming.engine.tools.runner import ToolRunner


#: Committed events that subscribers already saw live, as they happened.
_LIVE_ONLY = frozenset((ToolCallStarted, ToolCallFinished))


class Recorder(Protocol):
    """Where committed events go (the run store). One `write` call is one transaction."""

    async def write(self, events: Sequence[Event]) -> None: ...


class Subscription:
    """One subscriber's view of the event stream: never blocks the engine.

    Token deltas of one agent that pile up are merged into one, so a slow UI costs
    memory proportional to the number of agents, not to the number of tokens.
    """

    def __init__(self, engine: "Engine", tokens: bool) -> None:
        self._engine = engine
        self.tokens = tokens
        self._queue: deque[Event] = deque()
        self._ready = asyncio.Event()
        self.closed = False

    def push(self, ev: Event) -> None:
        q = self._queue
        if type(ev) is TokenDelta and q:
            last = q[-1]
            if (
                type(last) is TokenDelta
                and last.agent == ev.agent  # type: ignore[attr-defined]
                and last.tick == ev.tick  # type: ignore[attr-defined]
                and not ev.restart  # type: ignore[attr-defined]
            ):
                q[-1] = TokenDelta(ev.tick, ev.agent, last.text + ev.text, last.restart)  # type: ignore[attr-defined]
                return
        q.append(ev)
        self._ready.set()

    def drain(self, limit: int | None = None) -> list[Event]:
        """Everything queued now (up to `limit`), without waiting."""
        q = self._queue
        if limit is None or limit >= len(q):
            out = list(q)
            q.clear()
        else:
            out = [q.popleft() for _ in range(limit)]
        if not q:
            self._ready.clear()
        return out

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until something is queued (or the subscription closes)."""
        if self._queue or self.closed:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    async def batches(self) -> AsyncIterator[list[Event]]:
        while True:
            await self.wait()
            batch = self.drain()
            if batch:
                yield batch
            if self.closed and not self._queue:
                return

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Event]:
        async for batch in self.batches():
            for ev in batch:
                yield ev

    def close(self) -> None:
        self.closed = True
        self._ready.set()
        self._engine._subs.discard(self)

    def __len__(self) -> int:
        return len(self._queue)


@dataclass(slots=True)
class Command:
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    #: Who sent it (an attached operator): recorded in the CommandApplied event's args.
    by: str | None = None
    #: Called with the events the command produced once applied (a remote client's answer).
    done: Callable[[list[Event]], None] | None = None


@dataclass(slots=True)
class _TurnOutcome:
    """A finished turn, with what it will commit worked out already (while other turns
    were still waiting on their models): only the messages' commit order is left."""

    record: TurnRecord
    #: In commit order: each message as (index in the reply, kind, payload, tags,
    #: recipients), then the memory changes, the credit charge and a soft-cap warning.
    commits: list[tuple | Event] = field(default_factory=list)
    #: The turn's tool call events, committed before its TurnFinished.
    tool_events: list[Event] = field(default_factory=list)


class _RetryJitter:
    """The seeded jitter of one call's retries, "seed:agent:tick" (":round" after a turn's
    first call), seeded only if a retry happens (seeding a Random, or even writing its
    seed, for every call costs more than most turns' own work on the sim)."""

    __slots__ = ("_parts", "_rng")

    def __init__(self, seed: int, agent: str, tick: int, round_no: int) -> None:
        self._parts = (seed, agent, tick, round_no)
        self._rng: random.Random | None = None

    @property
    def seed(self) -> str:
        seed, agent, tick, round_no = self._parts
        return f"{seed}:{agent}:{tick}" + (f":{round_no}" if round_no > 1 else "")

    def uniform(self, a: float, b: float) -> float:
        if self._rng is None:
            self._rng = random.Random(self.seed)
        return self._rng.uniform(a, b)


class _AgentPlan:
    """What planning an agent's turn takes from the definitions (its résumé, the org's
    settings and graph, its model's spec, the run's MCP servers): the same turn after
    turn, so worked out once and kept with the agent until one of them is replaced
    (`Engine._plan_turn`)."""

    __slots__ = (
        "org", "models", "mcp", "key", "spec", "config_error", "wanted", "can_read", "new_limit", "context",
        "parts", "system_tokens", "budget", "temperature", "tools", "memory",
    )

    def __init__(self, engine: "Engine", name: str, org: Org) -> None:
        a = org.agents[name]
        resume = a.resume
        self.org = org
        self.models = engine.registry.models
        self.mcp = engine.mcp
        self.key = key = resume.model.key
        self.spec: Any
        try:
            self.spec = spec = engine.registry.spec(key)
        except ProviderError as e:
            self.spec = spec = None
            self.config_error: str | None = str(e)
        else:
            self.config_error = None
        self.wanted: int = resume.model.max_tokens or (spec.max_output_tokens if spec else None) or DEFAULT_MAX_TOKENS
        self.can_read = org.readable_by(name)
        settings = org.settings
        self.new_limit = settings.inbox_new_limit
        self.context = settings.inbox_context
        self.tools = resume.permissions.tools
        self.budget = a.budget
        self.temperature = resume.model.temperature
        #: (the agent's memory dict, its `OrgState.memory_version`, `memory_json` of it): the
        #: memory's JSON, kept while the state's fold has not changed that dict.
        self.memory: tuple[dict[str, Any], int | None, tuple[str, str]] | None = None
        # An agent granted MCP tools while the run's servers are up is described by what
        # they list, which can change as they start: its parts are worked out each turn.
        if engine.mcp is not None and mcp_grants(self.tools):
            self.parts: PromptParts | None = None
            self.system_tokens = -1
        else:
            self.parts = self.prompt_parts(engine, name)
            self.system_tokens = estimate_tokens(self.parts.system)

    def prompt_parts(self, engine: "Engine", name: str) -> PromptParts:
        """The agent's prompt parts as its definitions and the MCP servers' tools give them now."""
        org = self.org
        return PromptParts(org.agents[name].resume, org.readers_of(name), self.can_read, org.settings.shell_allow, engine._mcp_lines(self.tools))


class Engine(RunReadAPI):
    """Runs an organisation. Construct, subscribe, then `await run()`.

    All command methods (`pause`, `inject`, ...) must be called from the engine's
    event loop; they return at once and take effect at the next tick boundary.
    """

    def __init__(
        self,
        org: Org,
        *,
        seed: int = 0,
        concurrency: int | None = None,
        interval: float = 0.0,
        registry: ProviderRegistry | None = None,
        recorder: Recorder | None = None,
        state: OrgState | None = None,
        run_id: str | None = None,
        parent_run: str | None = None,
        fork_tick: int | None = None,
        paused: bool = False,
        retry_policy: RetryPolicy | None = None,
        mcp_wait: bool = True,
        clock=time.time,
    ) -> None:
        self.seed = seed
        self.registry = registry or ProviderRegistry(org.models)
        self.registry.use_settings(org.settings)  # provider workers, connection pools (docs/scaling.md)
        self.recorder = recorder
        self.state = state if state is not None else OrgState.initial(org)
        if state is not None:
            # A resumed or forked run runs the definitions it is given.
            self.state.org = org
            self.state._adopt_agents()
        self.state.interval = interval if interval else self.state.interval
        self.state.bounded = True  # the board keeps what inboxes can show; the store keeps the rest
        self.state.paused = paused
        self.concurrency = concurrency or org.settings.max_concurrency
        self.run_id = run_id or _new_run_id()
        self.parent_run = parent_run
        self.fork_tick = fork_tick
        self.retry_policy = retry_policy or RetryPolicy()
        #: Which models get the reply schema as structured output, and which refused it.
        self.structured = StructuredOutput()
        self.clock = clock
        self.thinking: set[str] = set()  # agents whose turn is in flight
        #: agent -> the tool it is running now (live; the state learns it at the commit)
        self.running_tools: dict[str, str] = {}
        #: The run's MCP servers while it runs (None when the organisation has none).
        self.mcp: McpHub | None = None
        #: servers that failed since the last boundary (McpServerFailed), recorded there
        self._mcp_failed: list[Event] = []
        #: Wait for the MCP servers to list their tools before the first tick (the prompts
        #: are then the same whenever the servers come up: a seeded run's record does not
        #: depend on their start-up); False starts them in the background (the control room).
        self.mcp_wait = mcp_wait
        #: A resumed run writes its last committed tick's files again (idempotent): a kill
        #: may have come between the tick's commit and their writing.
        self._reapply_files = state is not None and parent_run is None
        self.running = False
        #: True from the end of the tick loop until the stop is recorded (MCP servers closing).
        self.stopping = False
        self._subs: set[Subscription] = set()
        self._commands: deque[Command] = deque()
        self._origin: tuple[str | None, Callable[[list[Event]], None] | None] = (None, None)
        self._wake = asyncio.Event()
        self._step = 0
        self._stop: str | None = None
        self._tick_task: asyncio.Task | None = None
        self._abort_requested = False
        self._global_sem = Slots(self.concurrency)
        self._order: tuple[Org | None, list] = (None, [])
        self._plans: dict[str, _AgentPlan] = {}  # what planning a turn takes from the definitions
        #: Freeze what is alive when a run starts out of the garbage collector's full
        #: passes for the run (see engine/gcfreeze.py); False leaves the collector alone.
        self.freeze_gc = True

    # --- public read API (org, tick, paused, agent_status: RunReadAPI) -----------------

    def subscribe(self, *, tokens: bool = True) -> Subscription:
        sub = Subscription(self, tokens)
        self._subs.add(sub)
        return sub

    # --- commands ----------------------------------------------------------------------

    def _queue(self, name: str, **args: Any) -> None:
        self._commands.append(Command(name, args, *self._origin))
        self._wake.set()

    @contextmanager
    def commands_from(self, by: str, done: Callable[[list[Event]], None] | None = None) -> Iterator[None]:
        """Commands queued inside this block are recorded as sent by `by`, and `done` is
        called with the events each one produced when it is applied (a served run's clients)."""
        before = self._origin
        self._origin = (by, done)
        try:
            yield
        finally:
            self._origin = before

    def pause(self) -> None:
        self._queue("pause")

    def resume(self) -> None:
        self._queue("resume")

    def step(self) -> None:
        """Run exactly one tick while paused."""
        self._queue("step")

    def inject(self, text: str, recipients: Iterable[str] | None = None, kind: str = "message") -> None:
        """A message from the operator to some agents (None or [] = all)."""
        if isinstance(recipients, str):
            recipients = [recipients]  # one name, not its letters
        self._queue("inject", text=text, recipients=sorted(set(recipients or [])), kind=kind)

    def top_up(self, agent: str, amount: float) -> None:
        self._queue("top_up", agent=agent, amount=amount)

    def set_enabled(self, agent: str, enabled: bool) -> None:
        self._queue("enable" if enabled else "disable", agents=[agent])

    def set_interval(self, seconds: float) -> None:
        self._queue("set_interval", seconds=seconds)

    def reload(self, org: Org) -> None:
        """New definitions (hot reload): applied at the next tick boundary."""
        self._queue("reload", org=org)

    def reject_definition(self, file: str, errors: Sequence[str]) -> None:
        """Record a definition change that failed validation (the old one keeps running)."""
        self._queue("reject", file=file, errors=list(errors))

    @property
    def tick_in_flight(self) -> int | None:
        """The tick being run now (its turns called, nothing of it committed yet), or None."""
        task = self._tick_task
        return self.state.tick + 1 if task is not None and not task.done() else None

    def abort_tick(self) -> None:
        """Cancel the tick in flight: nothing of it is committed; the engine pauses."""
        if self.tick_in_flight is not None:
            self._abort_requested = True
            self._tick_task.cancel()
        else:
            self._queue("abort")

    def stop(self, *, abort: bool = False) -> None:
        """Stop at the next tick boundary (abort=True: cancel the tick in flight first)."""
        self._stop = self._stop or "stopped"
        if abort:
            self.abort_tick()
        self._wake.set()

    # --- emitting ----------------------------------------------------------------------

    def _publish(self, events: Iterable[Event]) -> None:
        subs = self._subs
        if not subs:
            return
        for ev in events:
            for s in subs:
                s.push(ev)

    def _publish_one(self, ev: Event) -> None:
        for s in self._subs:
            s.push(ev)

    async def _commit(self, events: list[Event], published: int = 0) -> None:
        """Record (one transaction), then apply to the live state, then publish.

        The first `published` events were already shown live (a tick's start) and are
        not published twice; nor are tool call events (shown live as the calls ran).
        """
        kinds = set(map(type, events))
        if self.recorder is not None:
            transient = any(not t.persistent for t in kinds)
            await self.recorder.write([e for e in events if e.persistent] if transient else events)
        self.state.apply_all(events)
        rest = events[published:] if published else events
        if not _LIVE_ONLY.isdisjoint(kinds):
            rest = [ev for ev in rest if type(ev) not in _LIVE_ONLY]
        self._publish(rest)

    # --- the loop ----------------------------------------------------------------------

    async def _start_mcp(self) -> None:
        """Start the MCP servers the agents are granted tools of, in the background: ticks go
        on meanwhile; a call waits for its server (up to the call's timeout) and the prompts
        list a server's tools once known (before that, those it listed in the last run, or
        the grant alone: docs/mcp.md). `mcp_wait` waits for them here instead."""
        servers = self.org.settings.mcp_servers
        if not servers:
            return
        self.mcp = McpHub(servers, root=self.org.root, log_dir=Path(self.org.root) / ".lemming" / "mcp", on_failed=self._on_mcp_failed)
        wanted = sorted({split_tool_name(g)[0] for a in self.org.agents.values() for g in mcp_grants(a.resume.permissions.tools)} & servers.keys())
        for server in wanted:
            self.mcp.start(server)
        if self.mcp_wait:
            await self.mcp.wait_started(wanted)

    def _on_mcp_failed(self, server: str, error: str, log: str) -> None:
        """A server failed (the hub says so, whenever it happens): recorded at the next
        tick boundary, or as the run stops, so the operator hears of it before any call."""
        rel = os.path.relpath(log, self.org.root) if log else ""
        self._mcp_failed.append(McpServerFailed(self.state.tick, server, error, rel, self.clock()))
        self._wake.set()

    async def _commit_mcp_failures(self) -> None:
        if self._mcp_failed:
            failed, self._mcp_failed = self._mcp_failed, []
            await self._commit(failed)

    def _mcp_lines(self, granted: list[str]) -> dict[str, str] | None:
        """The prompt's lines for an agent's MCP grants: each tool with its description and
        argument schema, as its server listed them."""
        if self.mcp is None:
            return None
        out: dict[str, str] = {}
        for grant in mcp_grants(granted):
            server, tool = split_tool_name(grant)
            lines = [
                f"- {t.full_name} {{{', '.join(t.input_schema.get('properties', {}))}}}: {t.description.splitlines()[0] if t.description else 'an MCP tool'}"
                f"; args schema: {json.dumps(t.input_schema, sort_keys=True, separators=(',', ':'))[:600]}"
                for t in self.mcp.known_tools(server)
                if tool in ("*", t.name)
            ]
            if lines:
                out[grant] = "\n".join(lines)
        return out

    async def run(self, ticks: int | None = None, *, until_tick: int | None = None) -> str:
        """Run until `ticks` more ticks are committed (or `until_tick`), or until stopped.

        Returns why it stopped: "completed", "stopped" or "error: ...".
        """
        target = until_tick if until_tick is not None else (self.state.tick + ticks if ticks is not None else None)
        self.running = True
        self.stopping = False
        reason = "stopped"
        frozen = False
        try:
            defs = self.org.definitions()
            await self._commit(
                [
                    RunStarted(
                        run_id=self.run_id,
                        org_path=str(self.org.root),
                        seed=self.seed,
                        tick=self.state.tick,
                        definitions=defs,
                        definitions_hash=self.org.definitions_hash(defs),
                        parent_run=self.parent_run,
                        fork_tick=self.fork_tick,
                        at=self.clock(),
                    )
                ]
            )
            if self.state.paused:
                await self._commit([RunPaused(self.state.tick, self.clock())])
            if self._reapply_files:
                self._reapply_files = False
                last = [r for r in self.state.last_turn.values() if r.tick == self.state.tick and r.files_changed]
                order = {a.name: i for i, a in enumerate(schedule.in_order(self.org.agents.values()))}
                last.sort(key=lambda r: (order.get(r.agent, len(order)), r.agent))
                await self._write_files(self.state.tick, last)
            self._build_adapters(a.resume.model.key for a in self.org.agents.values() if a.resume.calls_model)
            await self.registry.wait_ready()  # worker processes started before the first tick
            await self._start_mcp()
            if self.freeze_gc:
                # What is alive now (the program, the organisation, the state so far) lasts
                # the run: out of the collector's full passes, it costs nothing (gcfreeze).
                gcfreeze.hold()
                frozen = True
            last_start = 0.0
            while True:
                await self._commit_mcp_failures()
                await self._apply_commands()
                if self._stop:
                    reason = self._stop
                    break
                if target is not None and self.state.tick >= target:
                    reason = "completed"
                    break
                if self.state.paused and self._step == 0:
                    await self._wait(None)
                    continue
                interval = self.state.interval
                if interval > 0 and last_start:
                    remaining = last_start + interval - time.monotonic()
                    if remaining > 0:
                        await self._wait(remaining)
                        continue
                last_start = time.monotonic()
                if self._step:
                    self._step -= 1
                await self._run_tick(self.state.tick + 1)
        except Exception as e:  # the engine reports, never dies silently
            reason = f"error: {type(e).__name__}: {e}"
            raise
        finally:
            self.running = False
            self.stopping = True
            try:
                if self.mcp is not None:  # every MCP server stops with the run
                    await self.mcp.aclose()
                    self.mcp = None
                stopped = RunStopped(self.state.tick, reason, self.clock())
                failed, self._mcp_failed = self._mcp_failed, []  # since the last boundary
                try:
                    await self._commit([*failed, stopped])
                except Exception:
                    self.state.apply(stopped)
                    self._publish_one(stopped)
            finally:  # even when cancelled again while stopping (an app shutting down)
                if frozen:
                    gcfreeze.release()
                await self.registry.aclose()
        return reason

    def _build_adapters(self, keys: Iterable[str]) -> None:
        """Build the adapters before any call starts: the first use of a provider imports
        its SDK (a second or more of blocked event loop), which must count neither in a
        tick's time nor against other calls' timeouts. Cached: cheap after the first time."""
        for key in sorted(keys):
            try:
                self.registry.resolve(key)
            except ProviderError:
                pass  # recorded on the turn as a config error

    async def _wait(self, timeout: float | None) -> None:
        self._wake.clear()
        if self._commands or self._stop:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            pass

    # --- commands at the boundary ------------------------------------------------------

    async def _apply_commands(self) -> None:
        while self._commands:
            cmd = self._commands.popleft()
            try:
                events = self._command_events(cmd)
            except ValueError as e:
                events = [CommandRejected(self.state.tick, cmd.name, str(e), self.clock())]
            if cmd.by is not None:
                events = [
                    CommandApplied(e.tick, e.command, {**e.args, "by": cmd.by}, e.at) if type(e) is CommandApplied else e  # type: ignore[attr-defined]
                    for e in events
                ]
            if events:
                await self._commit(events)
            if cmd.done is not None:
                try:
                    cmd.done(events)
                except Exception:  # a client's callback never stops the run
                    pass

    def _command_events(self, cmd: Command) -> list[Event]:
        s = self.state
        t = s.tick
        now = self.clock()
        a = cmd.args
        if cmd.name == "pause":
            if s.paused:
                return []
            return [CommandApplied(t, "pause", {}, now), RunPaused(t, now)]
        if cmd.name == "resume":
            self._step = 0
            if not s.paused:
                return []
            return [CommandApplied(t, "resume", {}, now), RunResumed(t, now)]
        if cmd.name == "step":
            if not s.paused:
                raise ValueError("step works while paused; pause first")
            self._step += 1
            return [CommandApplied(t, "step", {}, now)]
        if cmd.name == "inject":
            text = a["text"]
            if not isinstance(text, str) or not text.strip():
                raise ValueError("an injected message needs some text")
            if len(text) > 20_000:
                raise ValueError("an injected message is limited to 20,000 characters")
            if not plainjson.is_valid_unicode(text):
                raise ValueError("an injected message must be valid Unicode (it holds an unpaired surrogate)")
            kind = a.get("kind") or "message"
            if not isinstance(kind, str) or len(kind) > 64 or not kind.isprintable():
                raise ValueError("the kind of an injected message is 1-64 printable characters")
            unknown = [r for r in a["recipients"] if r not in s.org.agents]
            if unknown:
                shown = ", ".join(r if isinstance(r, str) and r.isprintable() else repr(r) for r in unknown)
                raise ValueError(plainjson.one_line(f"no such agent: {shown[:200]}"))
            entry = OutboxEntry(
                id=f"operator-{t}-{s.seq}",
                tick=t,
                agent=OPERATOR,
                kind=kind,
                payload={"text": text},
                tags=("operator",),
                created_at=now,
                recipients=tuple(a["recipients"]),
                meta={"seq": s.seq},
            )
            return [
                CommandApplied(t, "inject", {"recipients": a["recipients"], "kind": entry.kind, "id": entry.id}, now),
                MessageCommitted(t, entry),
            ]
        if cmd.name == "top_up":
            name, amount = a["agent"], a["amount"]
            if name not in s.org.agents:
                raise ValueError(f"no such agent: {name}")
            try:
                amount = float(amount)
            except (TypeError, ValueError):
                raise ValueError(f"top-up amount must be a number, not {amount!r}") from None
            if not (0 < amount < 1e12):
                raise ValueError("top-up amount must be a positive, finite number")
            balance = round(s.credits.get(name, 0.0) + amount, 12)
            return [
                CommandApplied(t, "top_up", {"agent": name, "amount": amount}, now),
                CreditsToppedUp(t, name, amount, balance),
            ]
        if cmd.name in ("enable", "disable"):
            unknown = [n for n in a["agents"] if n not in s.org.agents]
            if unknown:
                raise ValueError(f"no such agent: {', '.join(unknown)}")
            return [CommandApplied(t, cmd.name, {"agents": a["agents"]}, now)]
        if cmd.name == "set_interval":
            secs = float(a["seconds"])
            if not (0 <= secs <= 3600):
                raise ValueError("the tick interval must be between 0 and 3600 seconds")
            return [CommandApplied(t, "set_interval", {"seconds": secs}, now)]
        if cmd.name == "abort":
            if s.paused:
                return []
            return [CommandApplied(t, "abort", {"in_flight": False}, now), RunPaused(t, now)]
        if cmd.name == "reload":
            return self._reload_events(a["org"], now)
        if cmd.name == "reject":
            return [DefinitionRejected(t, a["file"], tuple(a["errors"]), now)]
        raise ValueError(f"unknown command {cmd.name!r}")

    def _reload_events(self, new: Org, now: float) -> list[Event]:
        old = self.state.org
        new = keep_simulated(old, new)  # a `--sim` run stays on the sim
        old_defs = old.definitions()
        new_defs = new.definitions()
        added = tuple(sorted(set(new.agents) - set(old.agents)))
        removed = tuple(sorted(set(old.agents) - set(new.agents)))
        changed: dict[str, list[str]] = {}
        for name in sorted(set(old.agents) & set(new.agents)):
            diff = _diff_fields(old_defs["agents"][name], new_defs["agents"][name])
            if diff:
                changed[name] = diff
        if old_defs["models"] != new_defs["models"]:
            changed["models.json"] = sorted(
                k for k in set(old_defs["models"]) | set(new_defs["models"])
                if old_defs["models"].get(k) != new_defs["models"].get(k)
            )
        if old_defs["settings"] != new_defs["settings"]:
            changed["org.json"] = _diff_fields(old_defs["settings"], new_defs["settings"])
        if not (added or removed or changed):
            return []
        self.registry.update_models(new.models)
        return [
            DefinitionsReloaded(
                self.state.tick, added, removed, changed, new_defs, definitions_hash(new_defs), now
            )
        ]

    # --- one tick ----------------------------------------------------------------------

    async def _run_tick(self, t: int) -> None:
        self._tick_task = asyncio.ensure_future(self._tick_body(t))
        try:
            events, published = await self._tick_task
        except asyncio.CancelledError:
            self.thinking.clear()
            if not self._abort_requested:
                raise
            self._abort_requested = False
            now = self.clock()
            await self._commit(
                [
                    TickAborted(t, "operator", now),
                    CommandApplied(self.state.tick, "abort", {"in_flight": True, "tick": t}, now),
                    RunPaused(self.state.tick, now),
                ]
            )
            return
        finally:
            self._tick_task = None
        await self._commit(events, published)
        await self._write_files(t, [ev.record for ev in events if type(ev) is TurnFinished and ev.record.files_changed])  # type: ignore[attr-defined]

    async def _write_files(self, t: int, records: list[TurnRecord]) -> None:
        """Write committed turns' file changes (after their tick's transaction: a kill in
        between is repaired by the resume, which writes them again). New agents join through
        a reload at the next tick boundary."""
        if not records:
            return
        root = self.org.root
        failed: list[Event] = []
        created = False
        for rec in records:
            files = [c for c in rec.files_changed if c.get("area") != AGENTS_AREA]
            problems = await asyncio.to_thread(apply_changes, root, rec.agent, files) if files else []
            for c in rec.files_changed:
                if c.get("area") == AGENTS_AREA:
                    problem = apply_created(root, c)
                    if problem:
                        problems.append(problem)
                    else:
                        created = True
            if problems:
                failed.append(FilesNotWritten(t, rec.agent, tuple(problems[:20]), self.clock()))
        if failed:
            await self._commit(failed)
        if created:
            new = load_org(root, strict=False, last_good=self.org)
            self.reload(new)

    async def _tick_body(self, t: int) -> tuple[list[Event], int]:
        """Run tick t's turns; return its events (committed by the caller) and how many
        of them were already published live."""
        s = self.state
        org = s.org
        started = time.monotonic()
        if self._order[0] is not org:  # the commit order only changes with the definitions
            self._order = (org, schedule.in_order(org.agents.values()))
        due = schedule.due(self._order[1], t)
        tick_started = TickStarted(t, tuple(due), self.clock())
        pre: list[Event] = [tick_started]
        runnable: list[str] = []
        for name in due:
            a = org.agents[name]
            if not s.enabled.get(name, True):
                pre.append(AgentSkipped(t, name, "disabled", "disabled by the operator"))
            elif not a.resume.calls_model:
                pre.append(AgentSkipped(t, name, "no_model", "model \"none\": a seat that never calls a model"))
            elif s.credits.get(name, 0.0) <= 0:
                pre.append(AgentSkipped(t, name, "broke", f"{s.credits.get(name, 0.0):.6g} credits left; top up to resume"))
            else:
                runnable.append(name)
        self._publish(pre)
        self._build_adapters({org.agents[name].resume.model.key for name in runnable})
        # Prompts are built from the state as it is at the start of the tick (nothing
        # changes it until the tick commits), and each call starts as soon as its prompt
        # is ready: with slow models the first calls are under way while the later
        # prompts are still being built. A turn whose provider can answer at once is run
        # here and now, without a task of its own.
        plan_skips: list[Event] = []
        turn_starts: list[Event] = []
        slots: list[_TurnOutcome | asyncio.Task[_TurnOutcome]] = []
        tasks: list[asyncio.Task[_TurnOutcome]] = []
        publish_one = self._publish_one if self._subs else None
        loop = asyncio.get_running_loop()
        last_yield = time.monotonic()
        new_calls = False  # tasks created since the event loop last ran
        try:
            for name in runnable:
                plan = self._plan_turn(name, t)
                if isinstance(plan, AgentSkipped):
                    plan_skips.append(plan)
                    if publish_one is not None:
                        publish_one(plan)
                    continue
                ev = TurnStarted(t, plan["name"], plan["key"], plan["max_tokens"], self.clock())
                turn_starts.append(ev)
                if publish_one is not None:
                    publish_one(ev)
                # The turn runs here until it first has to wait (a provider with the reply
                # ready never does): only then does it go on in a task of its own.
                turn = self._turn(plan)
                outcome, waiting = eager.start(turn)
                if outcome is eager.PENDING:
                    task = loop.create_task(eager.as_task(turn, waiting))
                    tasks.append(task)
                    slots.append(task)
                    new_calls = True
                else:
                    slots.append(outcome)
                # Every couple of milliseconds, let the new calls start and the calls that
                # finished hand over their slots (not after every new task: each trip round
                # the event loop would delay the calls still to be planned); and without
                # new calls, every 10 ms, so that a tick of instant turns does not hold up
                # the rest of the program (a UI) for all of its length.
                if time.monotonic() - last_yield > (0.002 if new_calls else 0.01):
                    await asyncio.sleep(0)
                    last_yield = time.monotonic()
                    new_calls = False
            if tasks:
                await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
            raise
        # The committed order is the one of a tick that plans every prompt first: the
        # tick, the skips, then each turn's start (subscribers saw the same events live,
        # each as soon as it happened).
        pre.extend(plan_skips)
        pre.extend(turn_starts)
        events: list[Event] = list(pre)
        fired: list[str] = []
        failed: list[str] = []
        spend = 0.0
        n_msgs = 0
        seq = s.seq  # entries of earlier agents this tick come first
        clock = self.clock
        for slot in slots:  # in commit order
            out = slot if type(slot) is _TurnOutcome else slot.result()  # type: ignore[union-attr]
            rec = out.record
            name = rec.agent
            fired.append(name)
            if rec.status != "ok":
                failed.append(name)
            if out.tool_events:
                events.extend(out.tool_events)
            events.append(TurnFinished(t, name, rec))
            for item in out.commits:
                if type(item) is not tuple:
                    events.append(item)  # type: ignore[arg-type]
                    continue
                i, kind, payload, tags, recipients = item
                # (By position, in the order of OutboxEntry's fields: see _record.)
                entry = OutboxEntry(
                    f"{name}-{t}-{i}",  # id
                    t,  # tick
                    name,  # agent: the engine writes the author, a reply cannot claim another's name
                    kind,
                    payload,
                    tags,
                    clock(),  # created_at
                    recipients,
                    {"seq": seq},  # meta
                )
                seq += 1
                n_msgs += 1
                events.append(MessageCommitted(t, entry))
            if rec.cost > 0:  # (what a CreditsCharged event says it charged)
                spend += rec.cost
        events.append(
            TickCompleted(
                t,
                tuple(fired),
                tuple(failed),
                n_msgs,
                spend,
                s.total_spend + spend,
                (time.monotonic() - started) * 1000,
                self.clock(),
            )
        )
        return events, len(pre)

    def _plan_turn(self, name: str, t: int) -> dict[str, Any] | AgentSkipped:
        s = self.state
        org = s.org
        p = self._plans.get(name)
        if p is None or p.org is not org or p.models is not self.registry.models or p.mcp is not self.mcp:
            if p is not None:  # replaced definitions: every plan is stale (and a removed agent's goes)
                self._plans.clear()
            p = self._plans[name] = _AgentPlan(self, name, org)
        inbox = s.board.inbox(name, p.can_read, t, s.cursors.get(name, 0), new_limit=p.new_limit, context=p.context)
        parts = p.parts
        if parts is None:
            parts = p.prompt_parts(self, name)
        memory = s.memory.get(name)
        if memory is None:
            memory = {}
        version = s.memory_version.get(name)
        kept = p.memory
        if kept is None or kept[0] is not memory or kept[1] != version:
            kept = p.memory = (memory, version, memory_json(memory))
        mem_pair = kept[2]
        balance = s.credits.get(name, 0.0)
        tool_results: list[dict[str, Any]] = []  # results come back within the turn
        wanted = max_tokens = p.wanted
        # First the prompt without the token cap, then cap with what remains.
        user, escaped = parts.user(t, inbox, memory, tool_results, balance, wanted, mem_pair)
        spec = p.spec
        if spec is not None:
            system_tokens = p.system_tokens
            est = (system_tokens if system_tokens >= 0 else estimate_tokens(parts.system)) + estimate_tokens(user)
            allow = allowance(balance, p.budget, spec.prices, est, wanted)
            if allow.max_tokens is None:
                return AgentSkipped(t, name, "broke", allow.reason)
            if allow.max_tokens != wanted:
                max_tokens = allow.max_tokens
                user, escaped = parts.user(t, inbox, memory, tool_results, balance, max_tokens, mem_pair)
        return {
            "name": name,
            "tick": t,
            "key": p.key,
            "spec": spec,
            "config_error": p.config_error,
            "messages": [{"role": "system", "content": parts.system}, {"role": "user", "content": user}],
            "prompt_hash": parts.hash(escaped),
            "max_tokens": max_tokens,
            "wanted": wanted,
            "balance": balance,
            "temperature": p.temperature,
            "memory": memory,
            "tools": p.tools,
        }

    def _record(self, plan: dict[str, Any]) -> TurnRecord:
        spec = plan["spec"]
        # (The leading fields by position, the two others set after: keyword arguments to
        # a class cost a dict built and taken apart again, a third of making the record.)
        rec = TurnRecord(
            plan["tick"],  # tick
            plan["name"],  # agent
            plan["key"],  # model_key
            spec.provider if spec else "?",  # provider
            spec.model_name if spec else "?",  # model_name
            plan["messages"],  # prompt
            plan["prompt_hash"],  # prompt_hash
        )
        rec.max_tokens = plan["max_tokens"]
        rec.started_at = self.clock()
        return rec

    def _request(self, plan: dict[str, Any], spec: Any, messages: list[dict[str, str]] | None = None,
                 max_tokens: int | None = None) -> CompletionRequest:
        # (By position, in the order of CompletionRequest's fields: see _record.)
        return CompletionRequest(
            spec.model_name,  # model
            [ChatMessage(m["role"], m["content"]) for m in (messages or plan["messages"])],  # type: ignore[arg-type]
            plan["temperature"],  # temperature
            max_tokens or plan["max_tokens"],  # max_tokens
            spec.timeout,  # timeout
            self.seed,  # seed
            self.structured.format_for(plan["key"], spec, plan["tools"]),  # reply_format
            plan["name"],  # agent
            str(self.state.org.root),  # org_root
        )

    async def _call(self, plan: dict[str, Any], provider: Any, spec: Any, request: CompletionRequest, round_no: int) -> Any:
        """One model call of a turn, streamed, with retries, in the concurrency limits."""
        name, t = plan["name"], plan["tick"]
        on_delta = _no_delta
        if self._subs:
            publish = self._publish_one

            def on_delta(text: str, restart: bool) -> None:
                publish(TokenDelta(t, name, plainjson.fix_unicode(text), restart))

        policy = self.retry_policy
        if spec.max_attempts != policy.max_attempts:
            policy = RetryPolicy(spec.max_attempts, policy.base_delay, policy.max_delay, policy.max_retry_after)
        global_sem = self._global_sem
        provider_sem = self.registry.semaphore(plan["key"])
        # (a free slot is taken without a coroutine: engine/slots.py)
        if not global_sem.try_take():
            await global_sem.take()
        try:
            if not provider_sem.try_take():
                await provider_sem.take()
            try:
                result = await stream_with_retries(
                    provider, request, on_delta, policy=policy, rng=_RetryJitter(self.seed, name, t, round_no)  # type: ignore[arg-type]
                )
                if hasattr(provider, "take_report"):  # a cli agent's process: the record shows the last round's
                    plan["process"] = provider.take_report(request)
            finally:
                handover = provider_sem.give()
        finally:
            if global_sem.give():
                handover = True
        # Calls were waiting for these slots: let them start before this turn reads its
        # reply (twice: the first wakes them, the second lets them run).
        if handover:
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        # A provider's JSON can carry "\ud800" escapes: keep what is recorded valid UTF-8.
        result.text = plainjson.fix_unicode(result.text)
        return result

    async def _turn(self, plan: dict[str, Any]) -> _TurnOutcome:
        name, t = plan["name"], plan["tick"]
        rec = self._record(plan)
        t0 = time.monotonic()
        self.thinking.add(name)
        try:
            if plan["config_error"]:
                rec.status, rec.error = "config", plan["config_error"]
                return self._outcome(plan, rec, None)
            try:
                provider, spec = self.registry.resolve(plan["key"])
            except ProviderError as e:
                rec.status, rec.error = "config", str(e)
                return self._outcome(plan, rec, None)
            request = self._request(plan, spec)
            r0 = time.monotonic()
            result = await self._call(plan, provider, spec, request, 1)
            rec.process = plan.get("process")
            rec.raw_output = result.text
            rec.attempts = result.attempts
            rec.reply_schema = self.structured.record_value(plan["key"], result.reply_format_sent)
            if result.reply_format_refused is not None:
                rec.reply_schema = "refused"
                self.structured.refuse(plan["key"], result.reply_format_refused)
            # Charge what the provider billed over every attempt (a cut stream that was
            # retried still cost its tokens), not only the attempt that succeeded.
            billed = result.billed
            usage = rec.usage  # (the record's own, fresh: filled in rather than made again)
            usage.input_tokens, usage.output_tokens, usage.estimated = billed.input_tokens, billed.output_tokens, billed.estimated
            if result.error is not None:
                rec.status = "provider"
                rec.error = "; ".join(result.errors)
                return self._outcome(plan, rec, None)
            rec.retries = result.errors
            try:
                parsed = parse_reply(rec.raw_output)
            except ContractViolation:
                parsed = None
            if parsed is not None and parsed.tool_calls:
                return await self._tool_rounds(plan, rec, provider, spec, parsed, (time.monotonic() - r0) * 1000)
            return self._finish_turn(plan, rec, parsed)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug in one turn never stops the tick
            rec.status, rec.error = "internal", f"internal error: {type(e).__name__}: {e}"
            return self._outcome(plan, rec, None)
        finally:
            rec.latency_ms = (time.monotonic() - t0) * 1000
            self.thinking.discard(name)
            self.running_tools.pop(name, None)

    def _finish_turn(self, plan: dict[str, Any], rec: TurnRecord, reply: ParsedReply | None = None) -> _TurnOutcome:
        """Read the reply of a call that succeeded (rec.raw_output), one without tool calls."""
        if reply is None:
            text = rec.raw_output
            if rec.provider == "cli":  # plain text output becomes a `cli_output` message
                text = cli_provider.reply_text(text)
            try:
                reply = parse_reply(text)
            except ContractViolation as e:
                rec.status, rec.error = "contract", f"contract violation: {e}"
                return self._outcome(plan, rec, None)
        rec.parsed = parsed = reply.to_dict()
        rec.violations = reply.violations  # (the reply is this turn's alone and not kept)
        if rec.process is not None:
            rec.violations.extend(cli_provider.process_problems(rec.process))
        if reply.repaired:
            rec.violations.append(f"repaired: {reply.repaired}")
        return self._outcome(plan, rec, parsed)

    def _round(self, plan: dict[str, Any], raw: str, usage: TokenUsage, called: bool, latency_ms: float) -> dict[str, Any]:
        """One model call of a turn with tools, as its record keeps it, with its charge (the
        action's flat cost only when the call succeeded, as for a turn without tools)."""
        spec = self.registry.models.get(plan["key"])
        action = self.state.org.agents[plan["name"]].budget.cost_per_action if called else 0.0
        cost = turn_cost(spec.prices, usage.input_tokens, usage.output_tokens, action) if spec else 0.0
        return {"raw_output": raw, "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                "estimated": usage.estimated, "action_cost": action, "cost": cost, "latency_ms": latency_ms}

    async def _tool_rounds(
        self, plan: dict[str, Any], rec: TurnRecord, provider: Any, spec: Any, reply: ParsedReply, latency_ms: float
    ) -> _TurnOutcome:
        """A reply that calls tools: run them, ask the model again with the results, until a
        reply calls none or `max_tool_rounds` is reached. Each round is paid for, and only
        started if the agent can still pay for it. The messages and memory updates of every
        reply are kept (repeats dropped); the files are staged until the tick commits."""
        name, t = plan["name"], plan["tick"]
        org = self.state.org
        max_rounds = org.settings.max_tool_rounds
        runner = ToolRunner(org, name, t, plan["memory"], list(plan["tools"]), mcp=self.mcp)
        out_events: list[Event] = []
        replies: list[ParsedReply] = [reply]
        messages = list(plan["messages"])
        rounds = [self._round(plan, rec.raw_output, rec.usage, True, latency_ms)]
        total = TokenUsage(rec.usage.input_tokens, rec.usage.output_tokens, rec.usage.estimated)
        violations: list[str] = []
        index = 0
        round_no = 1
        publish = self._publish_one if self._subs else None
        a = org.agents[name]
        while reply.tool_calls:
            if round_no > max_rounds:
                violations.append(
                    f"tool_calls: the {len(reply.tool_calls)} call(s) of reply {round_no} were not run: "
                    f"max_tool_rounds ({max_rounds}, org.json) reached"
                )
                break
            results: list[dict[str, Any]] = []
            for call in reply.tool_calls:
                started = ToolCallStarted(t, name, round_no, index, call.tool, _summary(call.args), self.clock())
                out_events.append(started)
                self.running_tools[name] = call.tool
                if publish is not None:
                    publish(started)
                shown, kept = await runner.run(call.tool, call.args)
                self.running_tools.pop(name, None)
                kept["round"] = round_no
                rec.tool_calls.append(kept)
                results.append(shown)
                finished = ToolCallFinished(
                    t, name, round_no, index, call.tool, bool(shown["ok"]),
                    _summary(shown.get("result") if shown["ok"] else shown.get("error")), kept["duration_ms"],
                )
                out_events.append(finished)
                if publish is not None:
                    publish(finished)
                index += 1
            rec.tool_results.extend(results)
            # The next round is paid for before it starts: cap it by what is left.
            spent = sum(r["cost"] for r in rounds)
            left = plan["balance"] - spent
            added = tool_round_messages(
                rounds[-1]["raw_output"], tick=t, agent=name, round=round_no,
                rounds_left=max_rounds - round_no, results=results, max_tokens=plan["wanted"],
            )
            est = sum(estimate_tokens(m["content"]) for m in messages) + sum(estimate_tokens(m["content"]) for m in added)
            allow = allowance(left, a.budget, spec.prices, est, plan["wanted"])
            if allow.max_tokens is None:
                violations.append(f"not asked again after tool round {round_no}: {allow.reason}")
                break
            added = tool_round_messages(
                rounds[-1]["raw_output"], tick=t, agent=name, round=round_no,
                rounds_left=max_rounds - round_no, results=results, max_tokens=allow.max_tokens,
            )
            messages.extend(added)
            round_no += 1
            r0 = time.monotonic()
            result = await self._call(plan, provider, spec, self._request(plan, spec, messages, allow.max_tokens), round_no)
            billed = result.billed
            usage = TokenUsage(billed.input_tokens, billed.output_tokens, billed.estimated)
            total = TokenUsage(total.input_tokens + usage.input_tokens, total.output_tokens + usage.output_tokens,
                               total.estimated or usage.estimated)
            rounds.append(self._round(plan, result.text, usage, result.error is None, (time.monotonic() - r0) * 1000))
            rec.attempts += result.attempts
            rec.retries.extend(result.errors if result.error is None else [])
            if result.error is not None:
                rec.status = "provider"
                rec.error = f"reply {round_no}: " + "; ".join(result.errors)
                break
            try:
                reply = parse_reply(result.text)
            except ContractViolation as e:
                rec.status, rec.error = "contract", f"contract violation in reply {round_no}: {e}"
                break
            replies.append(reply)
        rec.process = plan.get("process", rec.process)
        rec.raw_output = rounds[-1]["raw_output"]
        rec.usage = total
        rec.rounds = rounds
        if len(messages) > len(plan["messages"]):
            rec.prompt = messages  # every round's messages: what the inspector shows
            rec.prompt_hash = prompt_hash(messages)
        rec.files_changed = runner.file_records()
        merged = _merge_replies(replies)
        rec.parsed = merged.to_dict()
        rec.violations = [*merged.violations, *violations]
        if merged.repaired:
            rec.violations.append(f"repaired: {merged.repaired}")
        out = self._outcome(plan, rec, rec.parsed, runner.memory_writes)
        out.tool_events = out_events
        return out

    def _outcome(
        self, plan: dict[str, Any], rec: TurnRecord, parsed: dict[str, Any] | None,
        memory_writes: Sequence[tuple[str, Any]] = (),
    ) -> _TurnOutcome:
        """What the turn will commit, from its reply's record form (`parsed`, what
        `ParsedReply.to_dict` gave for rec.parsed; None when no reply was read). It
        depends only on the agent's own state at the start of the tick, so it is worked
        out as soon as the turn ends; the tick's commit only numbers the messages in
        commit order. The messages' payloads are copies: the record keeps its own."""
        t = rec.tick
        name = rec.agent
        s = self.state
        out = _TurnOutcome(rec, [], [])  # (not the parsed reply: the tick need not keep it alive)
        after = out.commits
        if parsed is not None:
            entries = parsed["outbox_entries"]
            if entries:
                agents = s.org.agents
                for i, entry in enumerate(entries):
                    recipients = entry["recipients"]
                    if recipients:
                        known = [r for r in recipients if r in agents or r == OPERATOR]
                        if len(known) != len(recipients):
                            dropped = [r for r in recipients if r not in known]
                            shown = ", ".join(r if r.isprintable() else repr(r) for r in dropped)[:200]
                            rec.violations.append(plainjson.one_line(f"outbox_entries[{i}].recipients: no such agent: {shown}"))
                            if not known:
                                continue
                        to: tuple[str, ...] = tuple(known)
                    else:
                        to = ()
                    payload = entry["payload"]
                    after.append((i, entry["kind"], payload if type(payload) is str else copy_plain(payload), tuple(entry["tags"]), to))
        if memory_writes:  # memory_write calls, in the order they ran
            for key, value in memory_writes:
                after.append(MemoryChanged(t, name, "set", key, value))
        if parsed is not None:
            updates = parsed["memory_updates"]
            if updates:
                memory = dict(s.memory.get(name, {}))
                for key, value in memory_writes:
                    memory[key] = value
                for j, up in enumerate(updates):
                    key = up["key"]
                    problem = update_memory(memory, up["op"], key, up["value"])
                    if problem is None:
                        after.append(MemoryChanged(t, name, up["op"], key, memory.get(key)))
                    else:
                        rec.violations.append(f"memory_updates[{j}]: {problem}")
        # Charge for what was used (a failed call is charged for what the provider billed);
        # a turn that used tools is charged round by round.
        spec = self.registry.models.get(rec.model_key)
        a = s.org.agents[name]
        if rec.rounds:
            charges = [(r["cost"], r["input_tokens"], r["output_tokens"], r["action_cost"]) for r in rec.rounds]
        else:
            action = a.budget.cost_per_action if rec.status in ("ok", "contract") else 0.0
            amount = turn_cost(spec.prices, rec.usage.input_tokens, rec.usage.output_tokens, action) if spec else 0.0
            charges = [(amount, rec.usage.input_tokens, rec.usage.output_tokens, action)]
        before = s.credits.get(name, 0.0)
        balance = before
        rec.cost = 0.0
        for amount, inp, outp, action in charges:
            if amount <= 0:
                continue
            rec.cost += amount
            # Balances are kept to 1e-12 so that float drift never decides a threshold.
            balance = round12(balance - amount)
            after.append(CreditsCharged(t, name, amount, balance, inp, outp, action, balance < 0))
        cap = a.budget.soft_cap
        if rec.cost > 0 and cap is not None and before > cap >= balance and name not in s.soft_warned:
            after.append(SoftCapReached(t, name, balance, cap))
        return out


def _no_delta(text: str, restart: bool) -> None:
    """A call's token deltas when nobody subscribed to the run's events."""


def round12(x: float) -> float:
    """`round(x, 12)`, the same float, mostly without the two decimal conversions round
    makes (~9,000 instructions): from 2**14 on, neighbouring floats are more than 1e-12
    apart, so x is the float nearest to itself rounded to 12 places; below it, x * 1e12
    rounded to an integer n is the exact product's rounding when the float product is
    not within its own error of a half (which the bound on the error, |y| * 2.3e-16,
    keeps clear of), and n / 1e12 (two exact floats, one correctly rounded division) is
    the float nearest to n * 10**-12, which is what round gives. Anything else (a near
    tie, zero and its sign, NaN) is left to round."""
    if -16384.0 < x < 16384.0:
        y = x * 1e12
        n = round(y)
        if n and 0.5 - abs(y - n) > abs(y) * 2.3e-16:
            return n / 1e12
        return round(x, 12)
    return x if x == x else round(x, 12)


def _summary(value: Any, limit: int = 120) -> str:
    """A value in one short line (tool events' arguments and results)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, dict) and any(k in value for k in _FIRST_KEYS):
        # What names the call's object first (a path, a command), then the rest.
        first = {k: value[k] for k in _FIRST_KEYS if k in value}
        rest = {k: value[k] for k in sorted(value) if k not in first}
        text = _json_line(first | rest) if not rest else _json_line(first)[:-1] + ", " + _json_line(rest)[1:]
    else:
        try:
            text = _json_line(value)
        except (TypeError, ValueError):
            text = repr(value)
    text = plainjson.one_line(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_FIRST_KEYS = ("path", "command", "key", "name", "exit_code")


def _json_line(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _merge_replies(replies: list[ParsedReply]) -> ParsedReply:
    """The replies of a turn's rounds as one: every message and memory update once (a
    repeat, word for word, is dropped), every tool call, the last reply's notes."""
    if len(replies) == 1:
        return replies[0]
    merged = ParsedReply(notes=replies[-1].notes)
    seen_entries: set[str] = set()
    seen_updates: set[str] = set()
    repaired: list[str] = []
    for k, r in enumerate(replies, 1):
        for e in r.entries:
            key = _json_line([e.kind, e.payload, e.tags, e.recipients])
            if key in seen_entries:
                continue
            seen_entries.add(key)
            if len(merged.entries) >= MAX_ENTRIES_PER_TURN:
                merged.violations.append(f"reply {k}: outbox_entries past {MAX_ENTRIES_PER_TURN} in the turn are dropped")
                break
            merged.entries.append(e)
        for m in r.memory_updates:
            key = _json_line([m.op, m.key, m.value])
            if key not in seen_updates:
                seen_updates.add(key)
                merged.memory_updates.append(m)
        merged.tool_calls.extend(r.tool_calls)
        merged.violations.extend(f"reply {k}: {v}" for v in r.violations)
        if r.repaired:
            repaired.append(f"reply {k}: {r.repaired}")
    merged.repaired = "; ".join(repaired) or None
    return merged


def _diff_fields(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        path = f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_diff_fields(a, b, path + "."))
        else:
            out.append(path.removeprefix("resume."))
    return out


def _new_run_id() -> str:
    import uuid

    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
