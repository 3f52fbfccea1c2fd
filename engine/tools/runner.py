"""Runs one turn's tool calls: checks the grant and the arguments, runs the tool, and
returns what the model is shown and what the turn record keeps.

A runner lives for one turn. It holds the turn's working memory (memory_write is seen
by memory_read at once) and its staged files (engine/tools/files.py); the engine
commits both when the tick commits. Every failure — an unknown tool, one not granted,
wrong arguments, an escaping path, a refused command, a timeout, a flood of output, a
full disk — is a result with `ok: false` and an error the agent can act on; nothing
raises out of `run`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lemming.engine.jsontext import copy_plain
from lemming.engine.org import Org
from lemming.engine.tools import create_agent as creating
from lemming.engine.tools.files import PathRefused, TurnFiles, Workspace, MAX_LIST_ENTRIES
from lemming.engine.tools.sandbox import INSTALL_HINT, Limits, SandboxPolicy, SandboxUnavailable, bwrap_path
from lemming.engine.tools.shell import CommandRefused, check_command, run_shell
from lemming.engine.tools.specs import SPECS
from lemming.engine.mcp import McpHub, is_mcp_tool, split_tool_name, tool_granted

#: A result the model is shown (and the record keeps) is cut at this many characters of JSON.
MAX_RESULT_CHARS = 20_000
#: Arguments kept in the record are cut likewise.
MAX_ARGS_CHARS = 4_000


def policy_of(org: Org) -> SandboxPolicy:
    s = org.settings
    return SandboxPolicy(
        kind=s.sandbox, network=s.shell_network, limits=Limits(timeout_s=s.shell_timeout_s, output_bytes=s.shell_output_bytes)
    )


def _cut(value: Any, limit: int) -> Any:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    if len(text) <= limit:
        return value
    return {"cut": True, "chars": len(text), "start": text[: limit - 200]}


@dataclass(slots=True)
class ToolRunner:
    """One turn's tools (see the module docstring)."""

    org: Org
    agent: str
    tick: int
    memory: dict[str, Any]
    granted: list[str]
    files: TurnFiles = field(init=False)
    #: memory_write calls, in order: (key, value)
    memory_writes: list[tuple[str, Any]] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)
    #: The run's MCP servers (None: the organisation has none).
    mcp: McpHub | None = None

    def __post_init__(self) -> None:
        self.memory = dict(self.memory)
        self.files = TurnFiles(Workspace.of(Path(self.org.root), self.agent))

    async def run(self, tool: str, args: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """(what the model is shown, what the record keeps) for one call."""
        t0 = time.monotonic()
        self.files.touched = set()
        try:
            result = await self._dispatch(tool, args)
            shown: dict[str, Any] = {"tool": tool, "ok": True, "result": _cut(result, MAX_RESULT_CHARS)}
        except (PathRefused, CommandRefused, creating.CreateRefused, _ToolError, SandboxUnavailable) as e:
            shown = {"tool": tool, "ok": False, "error": str(e)}
        except FileNotFoundError as e:
            shown = {"tool": tool, "ok": False, "error": f"no such file or folder: {e.args[0] if e.args else ''}"}
        except OSError as e:  # the disk said no: the agent sees why
            shown = {"tool": tool, "ok": False, "error": f"{e.strerror or e}"}
        except Exception as e:  # a bug in one tool fails that call, not the turn
            shown = {"tool": tool, "ok": False, "error": f"internal error in {tool}: {type(e).__name__}: {e}"[:500]}
        record = dict(shown)
        record["args"] = _cut(copy_plain(args) if isinstance(args, dict) else args, MAX_ARGS_CHARS)
        record["duration_ms"] = (time.monotonic() - t0) * 1000
        if self.files.touched:
            record["files"] = sorted(self.files.changes[k].shown() for k in self.files.touched)
        return shown, record

    async def _dispatch(self, tool: str, args: Any) -> Any:
        if is_mcp_tool(tool):
            return await self._mcp(tool, args)
        spec = SPECS.get(tool)
        if tool not in self.granted:
            raise _ToolError(f"{tool!r} is not granted to you (permissions.tools: {', '.join(self.granted) or 'none'})")
        if spec is None:
            raise _ToolError(f"{tool!r} is not a tool this engine provides ({', '.join(SPECS)})")
        problem = spec.check(args)
        if problem:
            raise _ToolError(problem)
        if tool == "memory_read":
            key = args["key"]
            return {"key": key, "value": copy_plain(self.memory.get(key)), "exists": key in self.memory}
        if tool == "memory_write":
            key, value = args["key"], copy_plain(args.get("value"))
            if not key or len(key) > 200:
                raise _ToolError("key must be 1-200 characters")
            size = len(json.dumps(value, ensure_ascii=False, default=str))
            if size > 20_000:
                raise _ToolError(f"value is {size} characters of JSON; the limit is 20000")
            self.memory[key] = value
            self.memory_writes.append((key, value))
            return {"key": key, "written": True}
        if tool == "file_read":
            loc = self.files.workspace.locate(args["path"])
            data, size = self.files.read(loc)
            text = data.decode("utf-8", errors="replace")
            out: dict[str, Any] = {"path": loc.shown, "size": size, "content": text}
            if size > len(data):
                out["cut"] = f"the first {len(data)} of {size} bytes"
            return out
        if tool == "file_write":
            loc = self.files.workspace.locate(args["path"])
            content = args["content"].encode("utf-8", errors="replace")
            self.files.write(loc, content)
            return {"path": loc.shown, "size": len(content)}
        if tool == "file_list":
            loc = self.files.workspace.locate(args.get("path") or ".", root_ok=True)
            entries = self.files.list(loc)
            out = {"path": loc.shown, "entries": entries[:MAX_LIST_ENTRIES]}
            if len(entries) > MAX_LIST_ENTRIES:
                out["not_shown"] = len(entries) - MAX_LIST_ENTRIES
            return out
        if tool == "shell":
            return await self._shell(args["command"])
        if tool == "create_agent":
            pending = {c["rel"].split("/", 1)[0] for c in self.created}
            resume = creating.build_resume(self.org, self.agent, args, pending=pending)
            self.created.append(creating.change_record(args["name"], resume))
            return {"name": args["name"], "joins": "at the next tick boundary"}
        if tool == "list_agents":
            return {"agents": sorted(self.org.agents)}
        if tool == "clock":
            return {"tick": self.tick}
        raise _ToolError(f"{tool!r} has no implementation")  # a spec without one: a bug

    async def _mcp(self, tool: str, args: Any) -> Any:
        return await _mcp_call(self, tool, args)

    async def _shell(self, command: str) -> dict[str, Any]:
        s = self.org.settings
        check_command(command, s.shell_allow)
        policy = policy_of(self.org)
        if policy.kind == "bwrap" and bwrap_path() is None:
            raise SandboxUnavailable(
                f"shell runs under bubblewrap, which is not installed here: {INSTALL_HINT}; "
                "or set \"sandbox\": \"none\" in org.json to run commands unsandboxed (not recommended)"
            )
        outcome = await run_shell(command, self.files, allow=s.shell_allow, policy=policy)
        r = outcome.result
        if r.timed_out:
            raise _ToolError(
                f"timed out after {policy.limits.timeout_s:g} s; the command and everything it started were killed"
                + (f"; output so far: {r.output[:2000]!r}" if r.output else "")
            )
        out: dict[str, Any] = {"exit_code": r.exit_code, "output": r.output}
        if r.truncated:
            out["output_cut"] = f"the first {len(r.output.encode())} of {r.output_bytes} bytes"
        if outcome.changed:
            out["changed"] = outcome.changed
        if outcome.dropped:
            out["not_kept"] = outcome.dropped
        if policy.kind == "none":
            out["sandbox"] = "none (org.json)"
        return out

    def file_records(self) -> list[dict[str, Any]]:
        """The turn's file changes and created agents, as the record keeps them."""
        return self.files.records() + list(self.created)


class _ToolError(ValueError):
    pass


async def _mcp_call(runner: ToolRunner, tool: str, args: Any) -> Any:
    server, name = split_tool_name(tool)
    if not tool_granted(runner.granted, server, name):
        raise _ToolError(f"{tool!r} is not granted to you (permissions.tools: {', '.join(runner.granted) or 'none'})")
    if runner.mcp is None:
        raise _ToolError(f"{tool!r}: this run has no MCP servers (org.json mcp_servers)")
    result = await runner.mcp.call(tool, args)
    if not result.ok:
        raise _ToolError(result.error or f"{tool}: failed")
    return {"text": result.text, **({"cut": True} if result.truncated else {})}
