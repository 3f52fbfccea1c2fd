"""Clients of a served run: `ControlClient` (requests and the event stream, for scripts
and the `send`/`inbox`/`chat`/`ctl` verbs) and `RemoteEngine`, which presents what the
control room's panes read of an engine — state, org, tick, paused, running, thinking,
`subscribe()` and the command methods — over a ControlClient, so that the attached
control room is the control room.

Commands sent by a RemoteEngine return at once, like the engine's own; a rejection
comes back as a CommandRejected event in the stream (the panes show it). `stop()`
only detaches: an attached window that fails or quits never stops the run;
`stop_run()` asks the run to stop.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path
from typing import Any, AsyncIterator

from lemming.engine.engine import Subscription
from lemming.engine.events import (
    CommandRejected,
    Event,
    RunStopped,
    TickAborted,
    TickCompleted,
    TurnFinished,
    TurnStarted,
    event_from_dict,
)
from lemming.engine.mcp.hub import ServerStatus
from lemming.engine.run_view import RunReadAPI
from lemming.engine.remote import protocol
from lemming.engine.remote.endpoint import EndpointError
from lemming.engine.state import OrgState


class RemoteError(Exception):
    """The served run answered a request with an error (its one line)."""


class Resync:
    """In a RemoteEngine's stream: the client fell behind and was resynchronised; what
    follows (a RunStarted, then the last ticks) rebuilds the view from scratch."""

    persistent = False
    tick = 0

    def __init__(self, dropped: int, message: str) -> None:
        self.dropped = dropped
        self.message = message


class ControlClient:
    """One connection to a served run (see the module docstring and protocol.py)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hello: dict[str, Any]) -> None:
        self.reader = reader
        self.writer = writer
        self.hello = hello
        self.run_id: str = hello["run_id"]
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        #: state, history, events, lagged, notice and bye frames, in order
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed: str | None = None
        #: Said in the hello: this connection reads the run and cannot steer it.
        self.read_only = False
        self._reader_task = asyncio.create_task(self._read_loop(), name="control-client")

    @classmethod
    async def connect(cls, path: str | Path, *, client: str = "client", read_only: bool = False, timeout: float = 5.0) -> "ControlClient":
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path), limit=protocol.MAX_FRAME + 1), timeout)
        except (OSError, asyncio.TimeoutError) as e:
            raise EndpointError(f"cannot reach the run at {path}: {getattr(e, 'strerror', None) or e or 'timed out'}") from None
        writer.write(protocol.encode({"op": "hello", "version": protocol.VERSION, "client": client, "read_only": read_only}))
        try:
            line = await asyncio.wait_for(reader.readline(), timeout)
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            writer.close()
            raise EndpointError(f"the run at {path} did not answer: {e or 'timed out'}") from None
        if not line:
            writer.close()
            raise EndpointError(f"the run at {path} closed the connection")
        hello = protocol.decode(line)
        if hello.get("t") != "hello":
            writer.close()
            raise EndpointError(str(hello.get("error") or f"unexpected answer: {hello}"))
        client = cls(reader, writer, hello)
        client.read_only = read_only
        return client

    async def _read_loop(self) -> None:
        reason = "the run closed the connection"
        try:
            while True:
                line = await self.reader.readline()
                if not line:
                    break
                frame = protocol.decode(line)
                t = frame.get("t")
                if t in ("ok", "error") and frame.get("id") in self._pending:
                    fut = self._pending.pop(frame["id"])
                    if not fut.done():
                        fut.set_result(frame)
                elif t == "error":
                    reason = str(frame.get("error"))
                    self.frames.put_nowait(frame)
                else:
                    if t == "bye":
                        reason = f"the run stopped ({frame.get('reason')}) at tick {frame.get('tick')}"
                    self.frames.put_nowait(frame)
        except (ConnectionError, ValueError, protocol.ProtocolError) as e:
            reason = f"lost the connection to the run: {e}"
        finally:
            self.closed = reason
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(RemoteError(reason))
            self._pending.clear()
            self.frames.put_nowait({"t": "closed", "reason": reason})

    def send(self, op: str, **args: Any) -> asyncio.Future:
        """Send a request; the future resolves to its ok frame, or raises RemoteError."""
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        if self.closed is not None:
            fut.set_exception(RemoteError(self.closed))
            return fut
        rid = next(self._ids)
        self._pending[rid] = fut
        self.writer.write(protocol.encode({"op": op, "id": rid, **args}))
        return fut

    async def request(self, op: str, *, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        """Send a request and wait for its answer (RemoteError with the run's one line)."""
        frame = await asyncio.wait_for(self.send(op, **args), timeout)
        if frame.get("t") == "error":
            raise RemoteError(str(frame.get("error")))
        return frame

    async def subscribe(self, *, tokens: bool = True, since: int | None = None) -> tuple[dict[str, Any], list[Event]]:
        """Start the event stream: (the state frame, the history events)."""
        await self.request("subscribe", tokens=tokens, since=since)
        state: dict[str, Any] | None = None
        history: list[Event] = []
        while state is None or not history:
            frame = self.frames.get_nowait() if not self.frames.empty() else await self.frames.get()
            if frame["t"] == "state":
                state = frame
            elif frame["t"] == "history":
                history = protocol.events_of(frame)
                break
        assert state is not None
        return state, history

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The frames after the subscription, until the connection closes (its last frame: closed)."""
        while True:
            frame = await self.frames.get()
            yield frame
            if frame["t"] == "closed":
                return

    async def close(self) -> None:
        if self.closed is None:
            try:
                self.writer.write(protocol.encode({"op": "bye", "id": 0}))
            except Exception:
                pass
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
        except (OSError, asyncio.TimeoutError, ConnectionError):
            pass
        self._reader_task.cancel()
        await asyncio.gather(self._reader_task, return_exceptions=True)


def state_from(frame: dict[str, Any]) -> OrgState:
    d = frame["state"]
    state = OrgState.from_dict(d)
    state.stopped = d.get("stopped")
    return state


class RemoteEngine(RunReadAPI):
    """What the control room's panes and actions read and call on an engine, over a served run."""

    recorder = None
    parent_run = None
    fork_tick = None

    def __init__(self, client: ControlClient, state_frame: dict[str, Any], history: list[Event]) -> None:
        self.client = client
        self.run_id: str = state_frame["run_id"]
        self.seed: int = state_frame.get("seed", 0)
        self.state: OrgState = state_from(state_frame)
        self.running: bool = bool(state_frame.get("running"))
        self.thinking: set[str] = set(state_frame.get("thinking") or ())
        self.history = history
        self.resyncs = 0
        self.received = 0  # events received live
        self._subs: set[Subscription] = set()
        self._detached = False

    @classmethod
    async def attach(cls, path: str | Path, *, read_only: bool = False, client: str = "attach") -> "RemoteEngine":
        c = await ControlClient.connect(path, client=client, read_only=read_only)
        try:
            state, history = await c.subscribe(tokens=True)
        except Exception:
            await c.close()
            raise
        return cls(c, state, history)

    # --- the read API (org, tick, paused, agent_status: RunReadAPI) ----------------------

    def subscribe(self, *, tokens: bool = True) -> Subscription:
        """A subscription that starts with the history (for the view), then the live events."""
        sub = Subscription(self, tokens)  # type: ignore[arg-type]
        for ev in self.history:
            sub.push(ev)
        self._subs.add(sub)
        return sub

    def _publish(self, events: list[Any], pushed: list[float] | None = None) -> None:
        """Into every subscription; `pushed` (a measured server's) says when each event left
        the engine, for a subscription that keeps such times (`push_at`, the benchmark's)."""
        for s in self._subs:
            push_at = getattr(s, "push_at", None) if pushed is not None and len(pushed) == len(events) else None
            if push_at is not None:
                for ev, t in zip(events, pushed):  # type: ignore[arg-type]
                    push_at(ev, t)
            else:
                for ev in events:
                    s.push(ev)

    # --- the stream ----------------------------------------------------------------------

    async def run(self, *_: Any, **__: Any) -> str:
        """Follow the served run until it stops ("stopped: ...") or this window detaches
        ("detached"); a lost connection raises ConnectionError saying so."""
        async for frame in self.client.events():
            t = frame["t"]
            if t == "events":
                self._live(protocol.events_of(frame), frame.get("pushed"))
                if not self.running and self.state.stopped is not None:
                    await self.client.close()
                    return f"the run stopped: {self.state.stopped} at tick {self.tick}"
            elif t == "lagged":
                self.resyncs += 1
                self._publish([Resync(int(frame.get("dropped", 0)), str(frame.get("message", "")))])
            elif t == "state":
                self.state = state_from(frame)
                self.thinking = set(frame.get("thinking") or ())
                self.running = bool(frame.get("running"))
            elif t == "history":
                self._publish(protocol.events_of(frame))
                if not self.running and self.state.stopped is not None:  # resynchronised after the end
                    await self.client.close()
                    return f"the run stopped: {self.state.stopped} at tick {self.tick}"
            elif t == "notice":
                self._publish([CommandRejected(self.tick, "history", str(frame.get("text")))])
            elif t == "bye":
                self.running = False
                if self.state.stopped is None:  # its RunStopped was not seen (a window that lagged at the end)
                    self.state.stopped = str(frame.get("reason") or "stopped")
                await self.client.close()
                return f"the run stopped: {frame.get('reason')} at tick {frame.get('tick')}"
            elif t == "closed":
                self.running = False
                if self._detached:
                    return "detached"
                if self.state.stopped:
                    return f"the run stopped: {self.state.stopped}"
                raise ConnectionError(str(frame.get("reason")))
        return "detached"

    def _live(self, events: list[Event], pushed: list[float] | None = None) -> None:
        apply = self.state.apply
        thinking = self.thinking
        for ev in events:
            t = type(ev)
            apply(ev)
            if t is TurnStarted:
                thinking.add(ev.agent)  # type: ignore[attr-defined]
            elif t is TurnFinished:
                thinking.discard(ev.agent)  # type: ignore[attr-defined]
            elif t is TickCompleted or t is TickAborted:
                thinking.clear()
            elif t is RunStopped:
                self.running = False
        self.received += len(events)
        self._publish(events, pushed)

    # --- commands (sent at once; the engine applies them at its tick boundary) ----------

    def _command(self, op: str, **args: Any) -> None:
        fut = self.client.send(op, **args)

        def answered(f: asyncio.Future) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            if exc is not None:
                error = str(exc)
            else:
                frame = f.result()
                # An answer with a tick is the engine's own rejection: its CommandRejected is
                # in the stream already (one notice, not two).
                if frame.get("t") != "error" or "tick" in frame:
                    return
                error = str(frame.get("error") or "")
            if error:
                # The server's line starts with the op; CommandRejected names it apart.
                self._publish([CommandRejected(self.tick, op, error.removeprefix(f"{op}: "))])

        fut.add_done_callback(answered)

    async def mcp_status(self) -> tuple[bool, list[ServerStatus] | None]:
        """The served run's MCP servers now: (running, their status; None: no hub)."""
        got = await self.client.request("mcp", timeout=5)
        servers = got.get("servers")
        return bool(got.get("running")), None if servers is None else [ServerStatus.from_dict(d) for d in servers]

    def pause(self) -> None:
        self._command("pause")

    def resume(self) -> None:
        self._command("resume")

    def step(self) -> None:
        self._command("step")

    def inject(self, text: str, recipients: Any = None, kind: str = "message") -> None:
        if isinstance(recipients, str):
            recipients = [recipients]
        self._command("inject", text=text, to=sorted(set(recipients)) if recipients else None, kind=kind)

    def top_up(self, agent: str, amount: float) -> None:
        self._command("top_up", agent=agent, amount=amount)

    def set_enabled(self, agent: str, enabled: bool) -> None:
        self._command("enable" if enabled else "disable", agent=agent)

    def set_interval(self, seconds: float) -> None:
        self._command("interval", seconds=seconds)

    def abort_tick(self) -> None:
        self._command("abort")

    def stop_run(self, *, abort: bool = False) -> None:
        """Ask the served run to stop at its next tick boundary."""
        self._command("stop", abort=abort)

    def stop(self, *, abort: bool = False) -> None:
        """Detach (what the control room calls when it quits or a pane fails): the run goes on."""
        self.detach()

    def detach(self) -> None:
        if not self._detached:
            self._detached = True
            asyncio.ensure_future(self.client.close())

    async def aclose(self) -> None:
        self._detached = True
        await self.client.close()
