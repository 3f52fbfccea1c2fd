"""The tools an agent may hold: LeMMing's names and arguments, and their description
for the prompt. `permissions.tools` in resume.json grants them by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: JSON types by the names the prompt uses.
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "list of strings": (list,),
    "any JSON": (object,),
}


@dataclass(frozen=True, slots=True)
class Arg:
    name: str
    type: str  # a key of _TYPES
    required: bool = True
    description: str = ""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    args: tuple[Arg, ...] = ()

    def signature(self) -> str:
        """`file_write {path, content}` with optional arguments marked `?`."""
        names = ", ".join(a.name + ("" if a.required else "?") for a in self.args)
        return f"{self.name} {{{names}}}"

    def check(self, args: Any) -> str | None:
        """What is wrong with `args`, in one line, or None."""
        if not isinstance(args, dict):
            return f"args must be an object {self.signature()}"
        known = {a.name: a for a in self.args}
        unknown = sorted(k for k in args if k not in known)
        if unknown:
            shown = ", ".join(repr(k)[:40] for k in unknown[:5])
            return f"unknown argument {shown}; {self.signature()}"
        for a in self.args:
            if a.name not in args or args[a.name] is None:
                if a.required:
                    return f"missing argument {a.name!r}; {self.signature()}"
                continue
            v = args[a.name]
            if a.type == "integer" and (isinstance(v, bool) or not isinstance(v, int)):
                return f"{a.name} must be an integer"
            if a.type == "string" and not isinstance(v, str):
                return f"{a.name} must be a string"
            if a.type == "list of strings" and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                return f"{a.name} must be a list of strings"
        return None


SPECS: dict[str, ToolSpec] = {
    s.name: s
    for s in (
        ToolSpec("memory_read", "read one key of your memory", (Arg("key", "string"),)),
        ToolSpec(
            "memory_write",
            "set one key of your memory (kept from the end of this tick)",
            (Arg("key", "string"), Arg("value", "any JSON")),
        ),
        ToolSpec("file_read", "read a file of your workspace (or shared/...)", (Arg("path", "string"),)),
        ToolSpec(
            "file_write",
            "write a text file in your workspace (or shared/...), replacing it; folders are made as needed",
            (Arg("path", "string"), Arg("content", "string")),
        ),
        ToolSpec("file_list", "list a folder of your workspace (default: its top; shared/ is the org's)", (Arg("path", "string", False),)),
        ToolSpec(
            "shell",
            "run a command in your workspace, sandboxed (no network; only allowed programs)",
            (Arg("command", "string"),),
        ),
        ToolSpec(
            "create_agent",
            "create a new agent from the organisation's template; it joins at the next tick",
            (
                Arg("name", "string"),
                Arg("title", "string", False),
                Arg("short_description", "string", False),
                Arg("instructions", "string", False),
                Arg("read_outboxes", "list of strings", False),
                Arg("tools", "list of strings", False),
                Arg("model", "string", False),
                Arg("run_every_n_ticks", "integer", False),
            ),
        ),
        ToolSpec("list_agents", "the names of the organisation's agents"),
        ToolSpec("clock", "the current tick"),
    )
}


def describe(tools: list[str], *, shell_allow: list[str] | None = None, mcp: dict[str, str] | None = None) -> str:
    """The prompt's list of the tools an agent holds, one line each with its arguments;
    an MCP grant (`<server>/<tool>`, `<server>/*`) is described by `mcp` (its tools'
    lines, as the run's MCP hub listed them)."""
    lines = []
    for name in tools:
        if "/" in name:
            lines.append((mcp or {}).get(name) or f"- {name}: an MCP tool whose server has not listed its tools yet (a call waits for the server, or says why not)")
            continue
        spec = SPECS.get(name)
        if spec is None:
            lines.append(f"- {name}: not provided by this engine (calling it returns an error)")
            continue
        line = f"- {spec.signature()}: {spec.description}"
        if name == "shell" and shell_allow:
            line += "; allowed: " + ("any program" if "*" in shell_allow else ", ".join(shell_allow))
        lines.append(line)
    return "\n".join(lines)
