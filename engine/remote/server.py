"""ControlServer: a run served on a Unix socket to attached control rooms and scripts.

The engine publishes to one subscription of the server's; a fan-out task drains it a
few dozen times a second (token deltas coalesce meanwhile), encodes each batch once and
hands the bytes to every subscribed client's queue. Each client has its own writer task
and a queue bounded in bytes: a client that reads too slowly (or not at all) has its
queue dropped and is told it lagged, then resynchronised from the live state and the
last ticks once it reads again. Nothing a client does — connect and say nothing, send
garbage, stall, die — can make the tick loop wait: the engine only ever appends to the
server's subscription.

The protocol is in protocol.py, the socket and the peer check in endpoint.py.
"""

from __future__ import annotations

import asyncio
import copy
import os

from collections import deque
from pathlib import Path
from typing import Any, Callable

from lemming.engine.engine import Engine
from lemming.engine.events import CommandRejected, Event, RunStarted, RunStopped, TokenDelta
from lemming.engine.messages import MessageBoard
from lemming.engine.remote import endpoint, protocol
from lemming.engine.remote.protocol import ProtocolError

#: Bytes a client may have waiting before it is dropped to "lagged" (then resynchronised).
QUEUE_BYTES = 8 << 20
#: Seconds the fan-out lets events gather before it sends a batch (token deltas coalesce).
FLUSH_SECONDS = 0.02
#: Messages `inbox` returns at most.
INBOX_LIMIT = 200


class _Client:
    """One connection: its queue of encoded frames and its writer task."""

    def __init__(self, server: "ControlServer", reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pid: int, uid: int) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.pid = pid
        self.uid = uid
        self.name = f"pid {pid}"
        self.read_only = False
        self.subscribed = False
        self.tokens = True
        self.lagged = False
        self.dropped = 0
        self.holding: list[bytes] | None = None  # live frames kept while a catch-up is read
        self.queue: deque[bytes] = deque()  # live events, bounded by queue_bytes
        self.control: deque[bytes] = deque()  # answers, state, history: never dropped
        self.queued = 0
        self.wake = asyncio.Event()
        self.closing = False
        self.write_task: asyncio.Task | None = None

    def offer(self, frame: bytes, *, force: bool = False) -> None:
        """Queue a frame. A live frame that would pass the bound drops the live queue and
        marks the client lagged; forced frames (answers, state, history) are never dropped
        and go out first."""
        if force:
            self.control.append(frame)
            self.wake.set()
            return
        if self.closing:
            return
        if self.lagged:
            self.dropped += 1
            return
        if self.queued + len(frame) > self.server.queue_bytes:
            self.lagged = True
            self.dropped = len(self.queue) + 1
            self.queue.clear()
            if self.holding is not None:
                self.holding.clear()
            self.queued = 0
            self.wake.set()
            return
        self.queued += len(frame)
        if self.holding is not None:
            self.holding.append(frame)
            return
        self.queue.append(frame)
        self.wake.set()

    def send(self, frame: dict[str, Any]) -> None:
        self.offer(protocol.encode(frame), force=True)

    def send_last(self, frame: dict[str, Any]) -> None:
        """Queue the connection's last frame (the bye) after every frame queued, live
        events included: forced frames go out first, and the bye must not overtake the
        run's last events (its RunStopped among them)."""
        self.control.extend(self.queue)
        self.queue.clear()
        self.queued = 0
        self.send(frame)

    def respond(self, rid: Any, ok: bool = True, **fields: Any) -> None:
        self.send({"t": "ok" if ok else "error", "id": rid, **fields})

    async def write_loop(self) -> None:
        """Write what is queued (until closed: what was queued before is still sent)."""
        w = self.writer
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.lagged and not self.closing:
                self.server.note(f"{self.name} fell behind ({self.dropped} batches dropped): resynchronising it")
                w.write(protocol.encode({"t": "lagged", "dropped": self.dropped,
                                         "message": f"this window fell behind the run ({self.dropped} batches not sent); resynchronised from the live state"}))
                await w.drain()
                self.lagged = False
                self.dropped = 0
                await self.server.start_feed(self, None, None)
            while self.control or self.queue:
                if self.control:
                    frame = self.control.popleft()
                else:
                    frame = self.queue.popleft()
                    self.queued -= len(frame)
                w.write(frame)
                if w.transport.get_write_buffer_size() > 1 << 16:
                    await w.drain()
            await w.drain()
            if self.closing:
                return

    def close(self) -> None:
        self.closing = True
        self.wake.set()


class ControlServer:
    """Serves `engine` on a Unix socket under `<org_root>/.lemming/control/` (see the module docstring).

    `store_path` is the run database (catch-up from a tick older than the kept history);
    `note` gets one line for each thing an operator of the run should know (a client
    connected, was refused, fell behind). `allowed_uid` is for tests of the refusal.
    """

    def __init__(
        self,
        engine: Engine,
        org_root: Path | str,
        *,
        store_path: Path | str | None = None,
        note: Callable[[str], None] | None = None,
        allowed_uid: int | None = None,
        queue_bytes: int = QUEUE_BYTES,
        flush: float = FLUSH_SECONDS,
        history_ticks: int = protocol.HISTORY_TICKS,
        history_events: int = protocol.HISTORY_EVENTS,
        socket_path: Path | None = None,
    ) -> None:
        self.engine = engine
        self.org_root = Path(org_root)
        self.store_path = Path(store_path) if store_path is not None else None
        self._note = note
        self.allowed_uid = allowed_uid
        self.queue_bytes = queue_bytes
        self.flush = flush
        self.history_ticks = history_ticks
        self.path = socket_path or endpoint.socket_path(self.org_root, engine.run_id)
        self.pointer: Path | None = None
        self.clients: set[_Client] = set()
        #: The last ticks' persistent events as (tick, wire dict): a new subscriber's history.
        self._ring: deque[tuple[int, Event, dict[str, Any] | None]] = deque(maxlen=history_events)
        self._sub = engine.subscribe(tokens=True)
        self._server: asyncio.base_events.Server | None = None
        self._fanout: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._stop_waiters: list[tuple[_Client, Any]] = []
        self._store: Any = None
        self.frames_sent = 0

    def note(self, text: str) -> None:
        if self._note is not None:
            self._note(text)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> "ControlServer":
        sock = endpoint.listen(self.path)
        self._server = await asyncio.start_unix_server(self._connected, sock=sock, limit=protocol.MAX_FRAME + 1)
        self.pointer = endpoint.write_pointer(self.org_root, self.engine.run_id, self.path)
        self._fanout = asyncio.create_task(self._fan_out(), name="control-fanout")
        return self

    async def close(self) -> None:
        """Stop serving: the last events go out, every client is told the run ended."""
        self._dispatch(self._sub.drain())
        self._sub.close()
        if self._fanout is not None:
            self._fanout.cancel()
        reason = self.engine.state.stopped or "stopped"
        self._answer_stops(reason)
        for client in list(self.clients):
            client.send_last({"t": "bye", "reason": reason, "tick": self.engine.tick})
        if self._server is not None:
            self._server.close()
        for path in (self.pointer, self.path):
            try:
                if path is not None:
                    path.unlink()
            except OSError:
                pass
        for client in list(self.clients):
            client.close()  # its writer sends what is queued (the bye), then ends
        writers = [c.write_task for c in self.clients if c.write_task is not None]
        if writers:
            await asyncio.wait(writers, timeout=1.0)
        for client in list(self.clients):
            client.writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)
        if self._store is not None:
            await self._store.close()

    async def __aenter__(self) -> "ControlServer":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # --- the fan-out ---------------------------------------------------------------------

    async def _fan_out(self) -> None:
        sub = self._sub
        while True:
            await sub.wait()
            if self.flush:
                await asyncio.sleep(self.flush)
            batch = sub.drain()
            if batch:
                self._dispatch(batch)
            if sub.closed and not len(sub):
                return

    def _dispatch(self, batch: list[Event]) -> None:
        """Keep the batch's history and send it, encoded once, to every subscriber."""
        if not batch:
            return
        subscribers = [c for c in self.clients if c.subscribed]
        wire = protocol.wire
        # With nobody subscribed the history keeps the events, turned into dicts only if
        # someone subscribes: an unwatched run pays an append per event.
        dicts: list[dict[str, Any] | None] = [wire(ev) for ev in batch] if subscribers else [None] * len(batch)
        ring = self._ring
        for ev, d in zip(batch, dicts):
            if ev.persistent:
                ring.append((ev.tick, ev, d))  # type: ignore[attr-defined]
                if type(ev) is RunStopped:
                    self._answer_stops(ev.reason)  # type: ignore[attr-defined]
        lo = self.engine.tick - self.history_ticks
        while ring and ring[0][0] <= lo:
            ring.popleft()
        if not subscribers:
            return
        # A measured run (the attach benchmark) subscribes with a timed subscription: the
        # time each event left the engine goes along, for the lag to the client's screen.
        times = getattr(self._sub, "last_times", None)
        if times is not None and len(times) == len(batch):
            full = protocol.encode({"t": "events", "events": dicts, "pushed": times})
        else:
            full = protocol.encode({"t": "events", "events": dicts})
        lean: bytes | None = None
        for c in subscribers:
            if c.tokens:
                c.offer(full)
            else:
                if lean is None:
                    lean = protocol.encode({"t": "events", "events": [d for d in dicts if d["type"] != TokenDelta.type]})  # type: ignore[index]
                c.offer(lean)
            self.frames_sent += 1

    def _answer_stops(self, reason: str) -> None:
        waiters, self._stop_waiters = self._stop_waiters, []
        for client, rid in waiters:
            client.respond(rid, reason=reason, tick=self.engine.tick)

    def _state_frame(self) -> dict[str, Any]:
        """What the panes read of the live state (no message board, no memory)."""
        s = copy.copy(self.engine.state)
        s.board, s.memory = MessageBoard(), {}
        s.last_turn = {}
        d = s.to_dict()
        d["last_turn"] = {a: protocol.wire_record(r) for a, r in self.engine.state.last_turn.items()}
        d["stopped"] = s.stopped
        return {
            "t": "state",
            "state": d,
            "run_id": self.engine.run_id,
            "seed": self.engine.seed,
            "running": self.engine.running,
            "thinking": sorted(self.engine.thinking),
        }

    async def start_feed(self, client: _Client, rid: Any, since: int | None) -> None:
        """Send `client` the live state and the history that led to it, then the live
        stream. Everything up to the split is taken in one go (no await), so that no
        event is both in the state and in the stream, or in neither."""
        self._dispatch(self._sub.drain())
        state = self._state_frame()
        tick = self.engine.tick
        ring = list(self._ring)
        ring_lo = ring[0][0] if ring else tick + 1
        lo = tick - self.history_ticks + 1 if since is None else since + 1
        client.subscribed = True
        client.holding = [] if lo < ring_lo and self.store_path is not None else None
        history: list[dict[str, Any]] = []
        if client.holding is not None:
            try:
                history = await self._stored_events(max(lo, 1), ring_lo - 1)
            except Exception as e:  # the history is for display: say so and go on
                client.send({"t": "notice", "text": f"the history before tick {ring_lo} could not be read: {e}"})
        head = RunStarted(self.engine.run_id, str(self.engine.org.root), self.engine.seed, max(lo - 1, 0),
                          self.engine.org.definitions(), self.engine.org.definitions_hash(),
                          self.engine.parent_run, self.engine.fork_tick, 0.0)
        history.insert(0, head.to_dict())
        wire = protocol.wire
        history.extend(d if d is not None else wire(ev) for t, ev, d in ring if t >= lo)
        held, client.holding = client.holding or [], None
        client.send(state)
        client.send({"t": "history", "events": history})
        if rid is not None:
            client.respond(rid, tick=tick)
        for frame in held:
            client.queued -= len(frame)
            client.offer(frame)  # after the state and history (answers go out first)

    async def _stored_events(self, lo: int, hi: int) -> list[dict[str, Any]]:
        if hi < lo or self.store_path is None:
            return []
        store = await self._reader()
        out: list[dict[str, Any]] = []
        for t in range(lo, hi + 1):
            out.extend(protocol.wire(ev) for ev in await store.tick_events(self.engine.run_id, t))
        return out

    async def _reader(self) -> Any:
        """The run database, opened read-only on its own thread (not the recorder's)."""
        if self._store is None:
            from lemming.engine.store import RunStore

            self._store = await RunStore.open(self.store_path, readonly=True)  # type: ignore[arg-type]
        return self._store

    async def _turn(self, frame: dict[str, Any]) -> dict[str, Any]:
        agent = _text(frame, "agent")
        tick = frame.get("tick")
        if tick is not None and (not isinstance(tick, int) or isinstance(tick, bool)):
            raise ProtocolError("turn: tick must be an integer or null")
        rec = self.engine.state.last_turn.get(agent)
        if rec is not None and (tick is None or rec.tick == tick):
            return {"record": rec.to_dict()}
        if tick is None or self.store_path is None:
            return {"record": None}
        got = await (await self._reader()).turn(self.engine.run_id, tick, agent)
        return {"record": got.to_dict() if got is not None else None}

    # --- a connection --------------------------------------------------------------------

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        sock = writer.get_extra_info("socket")
        try:
            pid, uid, _gid = endpoint.peer_credentials(sock)
        except OSError as e:
            pid, uid = 0, -1
            self.note(f"a connection without credentials was refused: {e}")
        refusal = endpoint.check_peer(uid, self.allowed_uid)
        if refusal is not None:
            self.note(f"refused a connection from uid {uid} (pid {pid})")
            writer.write(protocol.encode({"t": "error", "id": None, "error": refusal}))
            await self._close_writer(writer)
            self._tasks.discard(task)  # type: ignore[arg-type]
            return
        client = _Client(self, reader, writer, pid, uid)
        self.clients.add(client)
        write_task = client.write_task = asyncio.create_task(client.write_loop())
        try:
            await self._serve(client)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.clients.discard(client)
            client.close()
            await asyncio.wait([write_task], timeout=1.0)
            write_task.cancel()
            await self._close_writer(writer)
            if client.subscribed:
                self.note(f"{client.name} detached")
            self._tasks.discard(task)  # type: ignore[arg-type]

    @staticmethod
    async def _close_writer(writer: asyncio.StreamWriter) -> None:
        try:
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (OSError, asyncio.TimeoutError, ConnectionError):
            pass

    async def _read(self, client: _Client, timeout: float | None = None) -> dict[str, Any] | None:
        """The next frame (None at the end of the stream); ProtocolError for a bad one."""
        try:
            async with asyncio.timeout(timeout):
                line = await client.reader.readline()
        except ValueError:  # over the limit: the rest of the line cannot be framed
            raise ConnectionError(f"frame over the limit of {protocol.MAX_FRAME} bytes") from None
        if not line:
            return None
        return protocol.decode(line)

    async def _serve(self, client: _Client) -> None:
        try:
            hello = await self._read(client, protocol.HELLO_TIMEOUT)
        except TimeoutError:
            client.respond(None, False, error=f"said nothing for {protocol.HELLO_TIMEOUT:g} s; start with a hello")
            return
        except ProtocolError as e:
            client.respond(None, False, error=str(e))
            return
        if hello is None:
            return
        if hello.get("op") != "hello" or hello.get("version") != protocol.VERSION:
            client.respond(hello.get("id"), False,
                           error=f"start with {{\"op\": \"hello\", \"version\": {protocol.VERSION}}} (this run speaks version {protocol.VERSION})")
            return
        who = str(hello.get("client") or "client")[:40]
        user = uid_name(client.uid)[:40]  # from the peer's credentials, not from what it says
        client.name = "".join(ch for ch in f"{user}/{who}:{client.pid}" if ch.isprintable())
        client.read_only = bool(hello.get("read_only"))
        client.send({
            "t": "hello", "version": protocol.VERSION, "run_id": self.engine.run_id, "pid": os.getpid(),
            "tick": self.engine.tick, "paused": self.engine.paused, "running": self.engine.running,
            "org": str(self.engine.org.root), "db": str(self.store_path) if self.store_path else None,
            "ops": sorted(protocol.OPS), "you": client.name,
        })
        while True:
            try:
                frame = await self._read(client)
            except ProtocolError as e:
                client.respond(None, False, error=str(e))
                continue
            except ConnectionError as e:
                client.respond(None, False, error=str(e))
                return
            if frame is None:
                return
            rid = frame.get("id")
            try:
                if await self._request(client, frame, rid) is False:
                    return
            except ProtocolError as e:
                client.respond(rid, False, error=str(e))
            except Exception as e:  # a bug in one request never takes the server down
                client.respond(rid, False, error=f"internal error: {type(e).__name__}: {e}")

    async def _request(self, client: _Client, frame: dict[str, Any], rid: Any) -> bool | None:
        op = frame.get("op")
        if not isinstance(op, str) or op not in protocol.OPS:
            raise ProtocolError(f"unknown op {str(op)[:40]!r}; known: {', '.join(sorted(protocol.OPS))}")
        if op == "bye":
            client.respond(rid)
            return False
        if op == "subscribe":
            if client.subscribed:
                raise ProtocolError("subscribe: already subscribed")
            since = frame.get("since")
            if since is not None and (not isinstance(since, int) or isinstance(since, bool) or since < 0):
                raise ProtocolError("subscribe: since must be a tick (an integer >= 0) or null")
            client.tokens = frame.get("tokens", True) is not False
            self.note(f"{client.name} attached")
            await self.start_feed(client, rid, since)
            return None
        if op == "status":
            client.respond(rid, **self._status())
            return None
        if op == "inbox":
            client.respond(rid, **self._inbox(frame))
            return None
        if op == "turn":
            client.respond(rid, **await self._turn(frame))
            return None
        if op == "mcp":
            hub = self.engine.mcp
            client.respond(rid, running=self.engine.running,
                           servers=None if hub is None else [s.to_dict() for s in hub.status()])
            return None
        if client.read_only:
            raise ProtocolError(f"{op}: this connection is read-only")
        self._command(client, op, frame, rid)
        return None

    def _command(self, client: _Client, op: str, frame: dict[str, Any], rid: Any) -> None:
        engine = self.engine
        if not engine.running:
            if engine.state.stopped:
                raise ProtocolError(f"{op}: the run has stopped at tick {engine.tick} ({engine.state.stopped})")
            if engine.stopping:
                raise ProtocolError(f"{op}: the run is stopping at tick {engine.tick} (its MCP servers closing, its stop "
                                    "being recorded); it is gone in a moment")
            raise ProtocolError(f"{op}: the run has not started yet; try again in a moment")
        if op == "stop":
            self.note(f"{client.name} asked the run to stop")
            self._stop_waiters.append((client, rid))
            engine.stop(abort=frame.get("abort") is True)
            return
        if op == "abort":
            in_flight = engine.tick_in_flight
            engine.abort_tick()
            if in_flight is None:
                client.respond(rid, tick=engine.tick, note="no tick was in flight; the run pauses")
            else:
                client.respond(rid, tick=in_flight, note=f"tick {in_flight} is aborted: nothing of it is committed; the run pauses at tick {engine.tick}")
            return

        def done(events: list[Event]) -> None:
            rejected = [e for e in events if type(e) is CommandRejected]
            if rejected:
                client.respond(rid, False, error=f"{op}: {rejected[0].error}", tick=engine.tick)  # type: ignore[attr-defined]
            else:
                client.respond(rid, tick=engine.tick, events=[e.to_dict() for e in events],
                               note="" if events else "nothing to do (already so)")

        with engine.commands_from(client.name, done):
            if op == "pause":
                engine.pause()
            elif op == "resume":
                engine.resume()
            elif op == "step":
                engine.step()
            elif op == "inject":
                text = _text(frame, "text", limit=20_000)
                to = frame.get("to")
                if to is not None and (not isinstance(to, list) or not all(isinstance(x, str) for x in to)):
                    raise ProtocolError("inject: to must be a list of agent names, or null for all")
                kind = frame.get("kind") or "message"
                if not isinstance(kind, str):
                    raise ProtocolError("inject: kind must be a string")
                engine.inject(text, to or None, kind=kind)
            elif op == "top_up":
                amount = frame.get("amount")
                if not isinstance(amount, (int, float)) or isinstance(amount, bool):
                    raise ProtocolError("top_up: amount must be a number")
                engine.top_up(_text(frame, "agent"), amount)
            elif op in ("enable", "disable"):
                engine.set_enabled(_text(frame, "agent"), op == "enable")
            elif op == "interval":
                secs = frame.get("seconds")
                if not isinstance(secs, (int, float)) or isinstance(secs, bool):
                    raise ProtocolError("interval: seconds must be a number")
                engine.set_interval(float(secs))

    def _status(self) -> dict[str, Any]:
        e = self.engine
        s = e.state
        return {
            "run_id": e.run_id, "tick": e.tick, "paused": e.paused, "running": e.running, "stopping": e.stopping,
            "interval": s.interval, "total_spend": s.total_spend, "clients": len(self.clients),
            "agents": [
                {"name": n, "status": e.agent_status(n), "credits": s.credits.get(n, 0.0), "sent": s.sent.get(n, 0),
                 "model": a.resume.model.key}
                for n, a in sorted(s.org.agents.items())
            ],
        }

    def _inbox(self, frame: dict[str, Any]) -> dict[str, Any]:
        s = self.engine.state
        limit = frame.get("limit", 20)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= INBOX_LIMIT:
            raise ProtocolError(f"inbox: limit must be an integer from 1 to {INBOX_LIMIT}")
        agent = frame.get("agent")
        if agent is None:
            return {"agent": None, "tick": s.tick, "messages": [e.to_dict() for e in s.board.all()[-limit:]]}
        agent = _text(frame, "agent")
        if agent not in s.org.agents:
            raise ProtocolError(f"inbox: no such agent: {agent} (agents: {', '.join(sorted(s.org.agents))})")
        org = s.org
        box = s.board.inbox(agent, org.readable_by(agent), s.tick + 1, s.cursors.get(agent, 0),
                            new_limit=limit, context=0)
        return {"agent": agent, "tick": s.tick, "messages": [e.to_dict() for e in box.new[-limit:]], "dropped": box.dropped}


def _text(frame: dict[str, Any], key: str, *, limit: int = 200) -> str:
    v = frame.get(key)
    if not isinstance(v, str) or not v:
        raise ProtocolError(f"{frame.get('op')}: {key} must be a non-empty string")
    if len(v) > limit:
        raise ProtocolError(f"{frame.get('op')}: {key} is limited to {limit:,} characters")
    return v


def uid_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return f"uid{uid}"


def served_at(server: ControlServer) -> str:
    """One line saying where the run is served (for a headless run's first lines)."""
    return f"served on {server.path} (lemming attach {server.engine.run_id})"


