"""`lemming validate` and `lemming bootstrap`: an organisation's files, checked or created."""

from __future__ import annotations

import argparse
import asyncio
import time
import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from lemming.engine.mcp import McpHub, mcp_grants, split_tool_name
from lemming.engine.mcp.hub import McpUnavailable
from lemming.engine.org import Org, OrgInvalid, load_org
from lemming.tui.cli.options import add_org_arg
from lemming.tui.cli.output import EXIT_FAIL, EXIT_OK, err_console, fail, warn


def cmd_validate(args: argparse.Namespace) -> int:
    """Every problem on stdout as `file: field: message`, exit 1; or `ok` with the counts."""
    console = Console()
    try:
        org = load_org(args.org)
    except OrgInvalid as e:
        for p in e.problems:
            console.print(escape(p), highlight=False, soft_wrap=True)
        err_console().print(f"[red]{len(e.problems)} problem(s)[/]")
        return EXIT_FAIL
    for w in org.warnings:
        warn(w)
    console.print(f"[green]ok[/]: {len(org.agents)} agents, {len(org.models)} models in models.json")
    if args.probe and org.settings.mcp_servers:
        return probe_mcp(org, console)
    return EXIT_OK


def probe_mcp(org: Org, console: Console) -> int:
    """Start each MCP server, list its tools, and check every grant names a tool it has."""
    problems = asyncio.run(_probe_mcp(org, console))
    for p in problems:
        console.print(escape(p), highlight=False, soft_wrap=True)
    if problems:
        err_console().print(f"[red]{len(problems)} problem(s)[/]")
        return EXIT_FAIL
    return EXIT_OK


async def _probe_mcp(org: Org, console: Console) -> list[str]:
    hub = McpHub(org.settings.mcp_servers, root=org.root, log_dir=org.root / ".lemming" / "mcp")
    problems: list[str] = []
    try:
        for name in hub.names:
            started = time.perf_counter()
            try:
                tools = await hub.tools(name)
            except McpUnavailable as exc:
                problems.append(f"org.json: mcp_servers.{name}: {exc}")
                continue
            listed = ", ".join(t.name for t in tools) or "no tools"
            console.print(
                f"[green]ok[/]: MCP server {escape(name)} ({time.perf_counter() - started:.2f} s): {escape(listed)}",
                highlight=False,
                soft_wrap=True,
            )
            have = {t.name for t in tools}
            for agent in org.agents.values():
                for grant in mcp_grants(agent.resume.permissions.tools):
                    server, tool = split_tool_name(grant)
                    if server == name and tool != "*" and tool not in have:
                        problems.append(
                            f"{agent.path}: permissions.tools: {grant!r}: MCP server {name!r} has no tool {tool!r}"
                        )
    finally:
        await hub.aclose()
    return problems


BOOTSTRAP_AGENTS = {
    "lead": ("Team lead", "Coordinates the team and reports to the operator.", ["builder", "reviewer"], 1, 0),
    "builder": ("Builder", "Does the work the lead asks for.", ["lead", "reviewer"], 1, 0),
    "reviewer": ("Reviewer", "Reviews what the builder reports.", ["builder"], 2, 1),
}


def cmd_bootstrap(args: argparse.Namespace) -> int:
    """Create a runnable organisation; idempotent, never overwrites a file."""
    console = Console(highlight=False)
    root: Path = args.dir
    created: list[str] = []
    kept: list[str] = []

    def write(path: Path, data: Any) -> None:
        rel = str(path.relative_to(root))
        if path.exists():
            kept.append(rel)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        created.append(rel)

    try:
        root.mkdir(parents=True, exist_ok=True)
        for name, (title, desc, reads, n, p) in BOOTSTRAP_AGENTS.items():
            write(
                root / "agents" / name / "resume.json",
                {
                    "name": name,
                    "title": title,
                    "short_description": desc,
                    "workflow_description": "",
                    "model": {"key": "sim", "temperature": 0.2, "max_tokens": 400},
                    "permissions": {"read_outboxes": reads, "tools": []},
                    "schedule": {"run_every_n_ticks": n, "phase_offset": p},
                    "instructions": f"You are the {title.lower()}. {desc} Keep messages short.",
                    "credits": {"max_credits": 1.0, "soft_cap": 0.25},
                },
            )
        write(
            root / "models.json",
            {
                "sim": {"provider": "sim", "model_name": "sim-1", "prices": {"input_per_mtok": 1.0, "output_per_mtok": 4.0}},
            },
        )
    except OSError as e:
        return fail(f"cannot create the organisation in {root}: {e.strerror or e}")
    for c in created:
        console.print(f"[green]created[/] {escape(c)}")
    for k in kept:
        console.print(f"[dim]kept[/] {escape(k)} (exists)")
    console.print(f"run it: lemming run --headless --org {escape(str(root))} --ticks 10   or   lemming tui --org {escape(str(root))}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add `validate` and `bootstrap` to the `lemming` parser."""
    p = sub.add_parser("validate", help="check an organisation's files; exit 1 listing every problem")
    add_org_arg(p)
    p.add_argument("--probe", action="store_true", help="also start each MCP server in org.json and list its tools")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("bootstrap", help="create a runnable organisation (idempotent; never overwrites)")
    p.add_argument("dir", nargs="?", type=Path, default=Path("."))
    p.set_defaults(func=cmd_bootstrap)
