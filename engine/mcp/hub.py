"""The run's MCP servers: started in the background at run start (or when first needed),
called with a timeout, restarted with backoff.

One `McpHub` per run, on the run's event loop. Each server has an owner task that holds
the SDK's `Client` open (anyio wants a client entered and left in one task); calls go
through that client from the agents' tasks. Nothing here raises for a server's
misbehaviour: `call` returns an `McpCallResult` whose `error` says what went wrong,
where, and what to do, so the turn records it and the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Any

from lemming.engine.mcp.config import McpServerSpec, split_tool_name
from lemming.engine.process_group import EnvReferenceError, expand_env_refs

#: Seconds before the n-th restart of a crashed server (then the last, for every later one).
RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: Characters of a server's stderr kept to explain why it stopped.
_STDERR_TAIL = 400
#: The tools each server listed when it last started (under the hub's log_dir), so that a
#: later run's prompts can list them before its servers are up (docs/mcp.md).
TOOLS_CACHE = "tools.json"


class ServerState(str, Enum):
    STOPPED = "stopped"  # not started yet (servers start when first needed)
    STARTING = "starting"
    READY = "ready"
    CRASHED = "crashed"  # stopped on its own; restarts after a backoff
    CLOSED = "closed"  # the run ended


@dataclass(frozen=True)
class McpTool:
    server: str
    name: str
    description: str
    input_schema: dict[str, Any]

    @property
    def full_name(self) -> str:
        return f"{self.server}/{self.name}"


@dataclass(frozen=True)
class McpCallResult:
    """What a call gave: `text` for the model when `ok`, else `error` (one line, actionable)."""

    ok: bool
    text: str = ""
    error: str | None = None
    duration_s: float = 0.0
    truncated: bool = False


@dataclass(frozen=True)
class ServerStatus:
    """One server as the control room and `lemming validate --probe` show it.

    `tools` are those it listed in this run, else (`tools_cached`) those it listed when it
    last started in an earlier run of the organisation. Times are seconds; `up_since` and
    `retry_in` are relative to when the status was taken.
    """

    name: str
    transport: str
    target: str
    state: ServerState
    tools: tuple[McpTool, ...]
    error: str | None
    restarts: int
    calls: int
    errors: int = 0
    last_latency_s: float | None = None
    pid: int | None = None
    uptime_s: float | None = None
    retry_in_s: float | None = None
    was_up: bool = False
    tools_cached: bool = False
    log_path: str | None = None
    timeout_s: float = 0.0
    #: tool -> (calls, failed calls) in this run, refused ones included
    tool_calls: tuple[tuple[str, int, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """As plain JSON (the remote protocol's `mcp` answer)."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d["state"] = self.state.value
        d["tools"] = [{"server": t.server, "name": t.name, "description": t.description, "input_schema": t.input_schema}
                      for t in self.tools]
        d["tool_calls"] = [list(c) for c in self.tool_calls]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ServerStatus:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["state"] = ServerState(known["state"])
        known["tools"] = tuple(McpTool(**t) for t in known.get("tools", ()))
        known["tool_calls"] = tuple((str(n), int(c), int(e)) for n, c, e in known.get("tool_calls", ()))
        return cls(**known)

    @property
    def phase(self) -> str:
        """What a person reads: starting / up / restarting / failed / not started / stopped."""
        if self.state is ServerState.READY:
            return "up"
        if self.state is ServerState.STARTING:
            return "restarting" if self.restarts else "starting"
        if self.state is ServerState.CRASHED:
            return "restarting" if self.was_up else "failed"
        return "stopped" if self.state is ServerState.CLOSED else "not started"


class McpUnavailable(Exception):
    """The server cannot take calls now; the message says why and when it retries."""


@dataclass
class _Server:
    name: str
    spec: McpServerSpec
    state: ServerState = ServerState.STOPPED
    tools: dict[str, McpTool] = field(default_factory=dict)
    error: str | None = None
    restarts: int = 0
    calls: int = 0
    errors: int = 0
    last_latency_s: float | None = None
    per_tool: dict[str, list[int]] = field(default_factory=dict)
    pid: int | None = None
    up_at: float | None = None
    was_up: bool = False
    retry_at: float = 0.0
    start_deadline: float = 0.0
    client: Any = None
    task: asyncio.Task[None] | None = None
    watch: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    log_path: Path | None = None


class McpHub:
    """The MCP servers of one run (org.json `mcp_servers`)."""

    def __init__(
        self,
        servers: Mapping[str, McpServerSpec],
        *,
        root: str | Path,
        environ: Mapping[str, str] | None = None,
        log_dir: str | Path | None = None,
        on_failed: Callable[[str, str, str], None] | None = None,
    ) -> None:
        """`on_failed(server, error, log)` is called each time a server fails to start or
        stops on its own (the engine records it as an event)."""
        self._root = Path(root)
        self._on_failed = on_failed
        self._environ = dict(os.environ if environ is None else environ)
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._servers = {name: _Server(name, spec) for name, spec in servers.items()}
        self._closed = False
        self._cache = _read_cache(self._log_dir)
        _quiet_sdk_logging(self._log_dir)

    # -- reading -------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self._servers)

    def status(self) -> list[ServerStatus]:
        """Every server now: state, pid, uptime, restarts, tools, calls, errors, last latency.
        Cheap and synchronous: the control room polls it."""
        now = time.monotonic()
        out = []
        for s in self._servers.values():
            listed = bool(s.tools)
            out.append(ServerStatus(
                name=s.name,
                transport=s.spec.transport,
                target=s.spec.describe(),
                state=s.state,
                tools=tuple(s.tools.values()) if listed else tuple(self._cached(s)),
                error=s.error,
                restarts=s.restarts,
                calls=s.calls,
                errors=s.errors,
                last_latency_s=s.last_latency_s,
                pid=s.pid if s.state is ServerState.READY else None,
                uptime_s=now - s.up_at if s.up_at is not None and s.state is ServerState.READY else None,
                retry_in_s=max(0.0, s.retry_at - now) if s.state is ServerState.CRASHED else None,
                was_up=s.was_up,
                tools_cached=not listed and bool(self._cached(s)),
                log_path=str(s.log_path) if s.log_path else (str(self._log_dir / f"{s.name}.log") if self._log_dir else None),
                timeout_s=s.spec.timeout,
                tool_calls=tuple((name, n, bad) for name, (n, bad) in sorted(s.per_tool.items())),
            ))
        return out

    def start(self, server: str | None = None) -> None:
        """Start `server` (default: every server) in the background: returns at once; a call
        meanwhile waits for it (up to the call's timeout)."""
        if self._closed:
            return
        for srv in ([self._server(server)] if server is not None else self._servers.values()):
            if srv.state in (ServerState.STOPPED, ServerState.CRASHED) and (srv.task is None or srv.task.done()):
                if srv.state is ServerState.CRASHED and srv.retry_at > time.monotonic():
                    continue
                self._launch(srv)

    async def wait_started(self, servers: list[str] | None = None) -> None:
        """Wait until each of `servers` (default: all) is up or has failed to start."""
        for name in servers if servers is not None else list(self._servers):
            srv = self._server(name)
            if srv.state is ServerState.STARTING:
                await srv.ready.wait()

    async def tools(self, server: str) -> list[McpTool]:
        """The server's tools (starting it if it is not running). Raises McpUnavailable."""
        srv = self._server(server)
        await self._ensure(srv)
        return list(srv.tools.values())

    def known_tools(self, server: str) -> list[McpTool]:
        """The tools a server listed when it started in this run, else those it listed when it
        last started in an earlier run of the organisation (same entry), without starting it."""
        srv = self._servers.get(server)
        if srv is None:
            return []
        return list(srv.tools.values()) if srv.tools else self._cached(srv)

    def _cached(self, srv: _Server) -> list[McpTool]:
        entry = self._cache.get(srv.name)
        if not isinstance(entry, dict) or entry.get("spec") != _spec_key(srv.spec):
            return []
        return [McpTool(srv.name, t["name"], t.get("description", ""), t.get("input_schema") or {})
                for t in entry.get("tools", []) if isinstance(t, dict) and isinstance(t.get("name"), str)]

    # -- calling ---------------------------------------------------------------------

    async def call(self, full_name: str, args: Any) -> McpCallResult:
        """Call `<server>/<tool>` with `args`; never raises for the server's or the caller's faults."""
        server, tool_name = split_tool_name(full_name)
        result = await self._call(server, tool_name, full_name, args)
        srv = self._servers.get(server)
        if srv is not None:
            srv.last_latency_s = result.duration_s
            srv.errors += not result.ok
            counts = srv.per_tool.setdefault(tool_name, [0, 0])
            counts[0] += 1
            counts[1] += not result.ok
        return result

    async def _call(self, server: str, tool_name: str, full_name: str, args: Any) -> McpCallResult:
        started = time.perf_counter()

        def failed(message: str) -> McpCallResult:
            return McpCallResult(ok=False, error=message, duration_s=time.perf_counter() - started)

        try:
            srv = self._server(server)
            # A server still starting is waited for as long as a call may take.
            await self._ensure(srv, wait=srv.spec.timeout)
        except McpUnavailable as exc:
            return failed(str(exc))
        tool = srv.tools.get(tool_name)
        if tool is None:
            have = ", ".join(sorted(srv.tools)) or "no tools"
            return failed(f"MCP server {server!r} has no tool {tool_name!r} (it has: {have})")
        if not isinstance(args, dict):
            return failed(f"{full_name}: args must be a JSON object, not {type(args).__name__}")
        problem = schema_problem(tool.input_schema, args)
        if problem is not None:
            return failed(f"{full_name}: arguments refused before the call: {problem}")
        srv.calls += 1
        timeout = srv.spec.timeout
        try:
            result = await asyncio.wait_for(
                srv.client.call_tool(tool_name, args, read_timeout_seconds=timeout), timeout + 1.0
            )
        except (TimeoutError, asyncio.TimeoutError):
            return failed(_timed_out(full_name, server, timeout))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the SDK's errors, and a connection that broke
            if _error_code(exc) == _codes().REQUEST_TIMEOUT:
                return failed(_timed_out(full_name, server, timeout))
            if self._lost(srv) or _error_code(exc) == _codes().CONNECTION_CLOSED or _broken(exc):
                self._crashed(srv, f"stopped during a call to {tool_name!r}{self._stderr_tail(srv)}")
                return failed(f"{full_name}: {srv.error}")
            return failed(f"{full_name}: the server answered with an error: {_one_line(exc)}")
        text, truncated = render_result(result, srv.spec.max_result_chars)
        elapsed = time.perf_counter() - started
        if getattr(result, "is_error", False):
            return McpCallResult(ok=False, text=text, error=f"{full_name}: {text or 'the tool reported an error'}",
                                 duration_s=elapsed, truncated=truncated)
        return McpCallResult(ok=True, text=text, duration_s=elapsed, truncated=truncated)

    # -- lifecycle -------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop every server (the run ends); waits for each owner task to leave its client."""
        self._closed = True
        tasks = []
        for srv in self._servers.values():
            srv.stop.set()
            if srv.watch is not None:
                srv.watch.cancel()
            if srv.task is not None:
                if srv.state is ServerState.STARTING:
                    srv.task.cancel()  # still starting (in the background): no need to wait for it
                tasks.append(srv.task)
            srv.state = ServerState.CLOSED
        for task in tasks:
            try:
                await asyncio.wait_for(asyncio.shield(task), 5.0)
            except (TimeoutError, asyncio.TimeoutError):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            except BaseException:
                pass

    def _server(self, name: str) -> _Server:
        srv = self._servers.get(name)
        if srv is None:
            have = ", ".join(sorted(self._servers)) or "none are configured"
            raise McpUnavailable(f"no MCP server {name!r} in org.json mcp_servers ({have})")
        return srv

    async def _ensure(self, srv: _Server, wait: float | None = None) -> None:
        """Have `srv` up: start it if it is not running, then wait for it (up to `wait`
        seconds, default its start timeout). Raises McpUnavailable saying why not."""
        if self._closed:
            raise McpUnavailable(f"MCP server {srv.name!r}: the run is ending")
        if srv.state is ServerState.READY and not self._lost(srv):
            return
        if srv.state is ServerState.READY:
            self._crashed(srv, "stopped")
        if srv.state is ServerState.CRASHED:
            later = srv.retry_at - time.monotonic()
            if later > 0:
                raise McpUnavailable(f"MCP server {srv.name!r} {srv.error}; restarting in {later:.1f} s")
        if srv.task is None or srv.task.done():
            self._launch(srv)
        left = srv.start_deadline - time.monotonic()
        patience = left if wait is None else min(wait, left)
        try:
            await asyncio.wait_for(asyncio.shield(srv.ready.wait()), max(patience, 0.0))
        except (TimeoutError, asyncio.TimeoutError):
            if srv.state is ServerState.STARTING and time.monotonic() < srv.start_deadline:
                raise McpUnavailable(
                    f"MCP server {srv.name!r} is still starting (waited {patience:.3g} s); call it again later"
                ) from None
            self._start_timed_out(srv)
        if srv.state is not ServerState.READY:
            raise McpUnavailable(f"MCP server {srv.name!r} {srv.error}")

    def _launch(self, srv: _Server) -> None:
        """Start the server's owner task and a watch that fails it after its start timeout."""
        srv.ready = asyncio.Event()
        srv.stop = asyncio.Event()
        srv.state = ServerState.STARTING
        srv.start_deadline = time.monotonic() + srv.spec.start_timeout
        loop = asyncio.get_running_loop()
        srv.task = loop.create_task(self._own(srv), name=f"mcp:{srv.name}")
        srv.watch = loop.create_task(self._watch_start(srv), name=f"mcp-start:{srv.name}")

    async def _watch_start(self, srv: _Server) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(srv.ready.wait()), srv.spec.start_timeout)
        except (TimeoutError, asyncio.TimeoutError):
            self._start_timed_out(srv)

    def _start_timed_out(self, srv: _Server) -> None:
        if srv.state is not ServerState.STARTING:
            return
        srv.stop.set()
        where = f" its log: {srv.log_path}" if srv.log_path else ""
        self._crashed(srv, f"did not start within {srv.spec.start_timeout:g} s (is it an MCP server?{where})")
        if srv.task is not None and srv.task is not asyncio.current_task():
            srv.task.cancel()  # its process goes with it; the next call starts it again after the backoff
        srv.ready.set()

    async def _own(self, srv: _Server) -> None:
        """Hold the server's client open until the run stops it, or it stops on its own."""
        errlog = self._open_log(srv)
        try:
            from mcp import Client  # the SDK loads only when a run needs a server

            pidfile = self._pidfile(srv)
            transport = self._transport(srv, errlog, pidfile)
            async with Client(transport, read_timeout_seconds=srv.spec.timeout) as client:
                srv.tools = {t.name: t for t in await _list_tools(srv.name, client)}
                if srv.state is not ServerState.STARTING:  # it gave up waiting meanwhile
                    return
                srv.client = client
                srv.state = ServerState.READY
                srv.error = None
                srv.up_at = time.monotonic()
                srv.was_up = True
                srv.pid = _read_pid(pidfile)
                self._remember(srv)
                srv.ready.set()
                await srv.stop.wait()
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001 - a server that fails to start is a recorded state
            if srv.state not in (ServerState.CLOSED, ServerState.CRASHED):  # not already told why
                self._crashed(srv, f"failed to start: {_one_line(exc)}{self._stderr_tail(srv)}")
        finally:
            srv.client = None
            srv.pid = None
            srv.ready.set()
            errlog.close()

    def _pidfile(self, srv: _Server) -> Path | None:
        if self._log_dir is None or srv.spec.url is not None:
            return None
        path = self._log_dir / f"{srv.name}.pid"
        path.unlink(missing_ok=True)
        return path

    def _remember(self, srv: _Server) -> None:
        """Keep the tools the server listed for the next run's prompts (TOOLS_CACHE)."""
        if self._log_dir is None:
            return
        entry = {"spec": _spec_key(srv.spec), "tools": [
            {"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in srv.tools.values()
        ]}
        if self._cache.get(srv.name) == entry:
            return
        self._cache[srv.name] = entry
        path = self._log_dir / TOOLS_CACHE
        try:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._cache, sort_keys=True, indent=1), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass  # only a cache: the next run lists the tools again

    def _transport(self, srv: _Server, errlog: IO[str], pidfile: Path | None = None) -> Any:
        spec = srv.spec
        try:
            env = {key: expand_env_refs(value, self._environ) for key, value in spec.env.items()}
            headers = {key: expand_env_refs(value, self._environ) for key, value in spec.headers.items()}
        except EnvReferenceError as exc:
            raise McpUnavailable(str(exc)) from None
        if spec.url is not None:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            http = httpx2.AsyncClient(headers=headers, timeout=spec.timeout)
            return streamable_http_client(spec.url, http_client=http)
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        command = resolve_command(str(spec.command))
        cwd = self._root / spec.cwd if spec.cwd else self._root
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "lemming.engine.mcp.launch", *(["--pidfile", str(pidfile)] if pidfile else []), command, *spec.args],
            env=env,
            cwd=str(cwd),
        )
        return stdio_client(params, errlog=errlog)

    def _lost(self, srv: _Server) -> bool:
        """Whether a server that was ready has gone (its owner task ended)."""
        return srv.task is None or srv.task.done() or srv.client is None

    def _crashed(self, srv: _Server, why: str) -> None:
        if srv.state is ServerState.CLOSED:
            return
        backoff = RESTART_BACKOFF[min(srv.restarts, len(RESTART_BACKOFF) - 1)]
        srv.restarts += 1
        srv.state = ServerState.CRASHED
        srv.error = why
        srv.retry_at = time.monotonic() + backoff
        srv.stop.set()
        if self._on_failed is not None:
            log = str(srv.log_path) if srv.log_path else ""
            try:
                self._on_failed(srv.name, why, log)
            except Exception:  # noqa: BLE001 - telling never breaks the hub
                pass

    def _open_log(self, srv: _Server) -> IO[str]:
        if self._log_dir is None:
            return open(os.devnull, "w")  # noqa: SIM115 - closed by the owner task
        self._log_dir.mkdir(parents=True, exist_ok=True)
        srv.log_path = self._log_dir / f"{srv.name}.log"
        return open(srv.log_path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115

    def _stderr_tail(self, srv: _Server) -> str:
        if srv.log_path is None or not srv.log_path.exists():
            return ""
        with open(srv.log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - _STDERR_TAIL))
            lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        return f" (its stderr: {lines[-1].strip()[:200]})" if lines else ""


async def _list_tools(server: str, client: Any) -> list[McpTool]:
    tools: list[McpTool] = []
    cursor = None
    while True:
        page = await client.list_tools(cursor=cursor)
        for t in page.tools:
            schema = t.input_schema if isinstance(t.input_schema, dict) else {}
            tools.append(McpTool(server, t.name, (t.description or "").strip(), schema))
        cursor = page.next_cursor
        if not cursor:
            return tools


def _spec_key(spec: McpServerSpec) -> str:
    """What a cached tool list is valid for: the server's entry as org.json gives it."""
    return json.dumps(spec.model_dump(mode="json"), sort_keys=True)


def _read_cache(log_dir: Path | None) -> dict[str, Any]:
    if log_dir is None:
        return {}
    try:
        data = json.loads((log_dir / TOOLS_CACHE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_pid(pidfile: Path | None) -> int | None:
    if pidfile is None:
        return None
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def resolve_command(command: str) -> str:
    """A bare command name found on PATH, else beside this Python (a venv's bin/, where the
    project's own MCP servers are installed even when the venv is not activated)."""
    if os.sep in command or shutil.which(command):
        return command
    beside = Path(sys.executable).parent / command
    return str(beside) if beside.exists() else command


def schema_problem(schema: dict[str, Any], args: dict[str, Any]) -> str | None:
    """The first way `args` fails the tool's JSON schema, in words; None when they fit."""
    if not schema:
        return None
    import jsonschema

    try:
        validator_cls = jsonschema.validators.validator_for(schema)
        errors = sorted(validator_cls(schema).iter_errors(args), key=lambda e: list(e.path))
    except jsonschema.exceptions.SchemaError as exc:
        return f"the tool's own schema is invalid ({_one_line(exc)})"
    if not errors:
        return None
    first = errors[0]
    where = "/".join(str(p) for p in first.path)
    return f"at {where!r}: {first.message}" if where else first.message


def render_result(result: Any, limit: int) -> tuple[str, bool]:
    """A call's content as text for the model: text parts as they are, others described."""
    parts: list[str] = []
    for item in getattr(result, "content", None) or []:
        kind = getattr(item, "type", "")
        if kind == "text":
            parts.append(item.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {getattr(item, 'mime_type', '')}, {len(getattr(item, 'data', '') or '')} base64 chars]")
        elif kind == "resource":
            res = item.resource
            parts.append(getattr(res, "text", None) or f"[resource {getattr(res, 'uri', '')}]")
        elif kind == "resource_link":
            parts.append(f"[resource link {getattr(item, 'uri', '')}]")
        else:
            parts.append(f"[{kind or 'unknown'} content]")
    if not parts and getattr(result, "structured_content", None) is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, sort_keys=True))
    text = "\n".join(parts)
    if len(text) > limit:
        return text[:limit] + f"\n[cut: {len(text) - limit} more characters]", True
    return text, False


def _quiet_sdk_logging(log_dir: Path | None) -> None:
    """The SDK logs protocol trouble (with tracebacks) on the root logger's stderr, which
    would draw over the control room: keep it in the run's MCP log instead."""
    import logging

    sdk = logging.getLogger("mcp")
    sdk.propagate = False
    if log_dir is not None and not any(getattr(h, "_lemming", False) for h in sdk.handlers):
        log_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_dir / "sdk.log", encoding="utf-8", delay=True)
        handler._lemming = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        sdk.addHandler(handler)
    elif not sdk.handlers:
        sdk.addHandler(logging.NullHandler())


def _timed_out(full_name: str, server: str, timeout: float) -> str:
    return f"{full_name}: no answer within {timeout:g} s (raise mcp_servers.{server}.timeout if it needs longer)"


def _codes() -> Any:
    import mcp_types

    return mcp_types


def _error_code(exc: BaseException) -> int | None:
    return getattr(getattr(exc, "error", None), "code", None)


def _broken(exc: BaseException) -> bool:
    import anyio

    return isinstance(exc, (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream))


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
        return _one_line(exc)
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
