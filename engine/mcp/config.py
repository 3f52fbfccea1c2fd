"""org.json's `mcp_servers` entries and `permissions.tools` grants.

The entry shape is the one MCP clients already use:

    "mcp_servers": {
      "time": {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]},
      "files": {"command": "npx", "args": [...], "cwd": "...", "env": {"TOKEN": "${env.TOKEN}"}},
      "remote": {"url": "http://127.0.0.1:8765/mcp"}
    }

A stdio server's environment holds only a minimal base (PATH, HOME, LANG, ...) and what
its `env` lists; `${env.NAME}` takes NAME from the run's environment (LeMMing's rule),
so a key reaches a server only when its entry names it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from lemming.engine.process_group import expand_env_refs  # noqa: F401 - LeMMing's ${env.NAME}, one rule for cli agents and MCP servers
from lemming.engine.process_group import program_problem

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: A server's name is the first half of a tool's name (`<server>/<tool>`).
SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


class McpServerSpec(BaseModel):
    """One `mcp_servers` entry: a stdio `command` or a streamable HTTP `url`."""

    model_config = ConfigDict(extra="forbid")

    command: str | None = Field(default=None, min_length=1, max_length=4_096)
    args: list[str] = Field(default_factory=list, max_length=1_000)
    cwd: str | None = Field(default=None, max_length=4_096)
    env: dict[str, str] = Field(default_factory=dict, max_length=1_000)
    url: str | None = Field(default=None, max_length=4_096)
    headers: dict[str, str] = Field(default_factory=dict, max_length=100)
    #: Seconds one call may take before it is a recorded timeout.
    timeout: float = Field(default=30.0, gt=0, le=3_600)
    #: Seconds a server may take to start and list its tools.
    start_timeout: float = Field(default=60.0, gt=0, le=3_600)
    #: Characters of a result the model sees; the rest is cut with a note.
    max_result_chars: int = Field(default=16_000, ge=100, le=1_000_000)

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerSpec:
        if (self.command is None) == (self.url is None):
            raise ValueError('give either "command" (a stdio server) or "url" (a streamable HTTP server)')
        if self.url is not None and not re.match(r"^https?://", self.url):
            raise ValueError(f"url must start with http:// or https://, not {self.url[:60]!r}")
        return self

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*\Z", name):
                raise ValueError(f"{name[:60]!r} is not an environment variable name")
        return v

    @property
    def transport(self) -> str:
        return "stdio" if self.command is not None else "http"

    def describe(self) -> str:
        """What the operator sees: the command line or the URL (never env values)."""
        if self.command is not None:
            return " ".join([self.command, *self.args])
        return str(self.url)


def server_problems(spec: McpServerSpec, env: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """What keeps a server from starting that can be seen before a run, as (field,
    message): a stdio command that is not an executable (the check a cli agent's command
    gets), looked up as the run looks it up (`resolve_command`)."""
    if spec.command is None:
        return []
    from lemming.engine.mcp.hub import resolve_command

    src = os.environ if env is None else env
    problem = program_problem(resolve_command(spec.command), src.get("PATH", os.defpath))
    return [("command", problem)] if problem else []


def grant_problems(rel: str, tools: Iterable[str], servers: Mapping[str, McpServerSpec]) -> list[str]:
    """`file: field: message` lines for MCP grants that name no configured server."""
    problems = []
    for grant in mcp_grants(tools):
        server, tool = split_tool_name(grant)
        if server not in servers:
            have = ", ".join(sorted(servers)) or "none are configured"
            problems.append(
                f"{rel}: permissions.tools: {grant!r} names MCP server {server!r}, "
                f"which is not in org.json mcp_servers ({have})"
            )
        elif not tool:
            problems.append(f"{rel}: permissions.tools: {grant!r}: name a tool or use \"{server}/*\"")
    return problems


def is_mcp_tool(name: str) -> bool:
    """`<server>/<tool>` names an MCP tool; built-in tools have no slash."""
    return "/" in name


def split_tool_name(name: str) -> tuple[str, str]:
    server, _, tool = name.partition("/")
    return server, tool


def mcp_grants(tools: Iterable[str]) -> list[str]:
    """The MCP entries of a `permissions.tools` list."""
    return [t for t in tools if is_mcp_tool(t)]


def tool_granted(grants: Iterable[str], server: str, tool: str) -> bool:
    """Whether `permissions.tools` grants `<server>/<tool>` (exactly or by `<server>/*`)."""
    wanted = f"{server}/{tool}"
    return any(g == wanted or g == f"{server}/*" for g in grants)
