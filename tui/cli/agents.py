"""`lemming status`, `inspect AGENT` and `logs AGENT`: an organisation's agents and what
its last recorded run made of them."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lemming.engine.events import Event
from lemming.engine.org import Org
from lemming.engine.plainjson import printable
from lemming.engine.store import RunStore, StoreError
from lemming.tui.cli.options import add_db_arg, add_org_arg, db_path, holds_no_run, load_or_report, positive_int
from lemming.tui.cli.output import EXIT_FAIL, EXIT_OK, fail


async def _last_state(org: Org, args: argparse.Namespace):
    """The state of the organisation's last recorded run, if there is one (StoreError:
    the database is there and cannot be read)."""
    db = db_path(args, org.root)
    if holds_no_run(Path(db)):
        return None, None
    store = await RunStore.open(db, readonly=True)
    try:
        info = await store.last_run(org.root)
        if info is None:
            return None, None
        return info, await store.state_at(info.id)
    finally:
        await store.close()


def _read_only_command(body):  # noqa: ANN001, ANN202
    """A command that only reads: the organisation loaded leniently (its problems are
    warnings), and a run database that cannot be read said in one line, exit 1."""

    def cmd(args: argparse.Namespace) -> int:
        org = load_or_report(args.org, strict=False)
        if org is None:
            return EXIT_FAIL
        try:
            return body(org, args)
        except StoreError as e:
            return fail(str(e))

    return cmd


def _status(org: Org, args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    info, state = asyncio.run(_last_state(org, args))
    if args.json:
        out = {
            "org": org.name,
            "agents": {},
            "run": None if info is None else {"id": info.id, "ticks": info.ticks, "status": info.status},
        }
        for name, a in sorted(org.agents.items()):
            out["agents"][name] = {
                "model": a.resume.model.key,
                "every": a.resume.schedule.run_every_n_ticks,
                "offset": a.resume.schedule.phase_offset,
                "credits": state.credits.get(name) if state else a.budget.initial,
                "status": state.agent_status(name) if state else "idle",
            }
        print(json.dumps(out, sort_keys=True))
        return EXIT_OK
    title = f"{org.name}: {len(org.agents)} agents"
    if info is not None:
        title += f" — last run {info.id} ({info.status}, tick {info.ticks})"
    table = Table(title=title)
    for col in ("agent", "title", "model", "every", "offset", "reads", "credits", "state"):
        table.add_column(col)
    for name, a in sorted(org.agents.items()):
        r = a.resume
        credits = state.credits.get(name, a.budget.initial) if state else a.budget.initial
        status = state.agent_status(name) if state else "—"
        table.add_row(
            name, escape(r.title), r.model.key, str(r.schedule.run_every_n_ticks), str(r.schedule.phase_offset),
            escape(", ".join(r.permissions.read_outboxes)), f"{credits:.4f} / {a.budget.max_credits:g}", status,
        )
    console.print(table)
    if info is None:
        console.print("no recorded run yet: `lemming run --headless` or `lemming` starts one")
    return EXIT_OK


def _no_agent(org: Org, name: str) -> int:
    broken = f"agents/{name}/"
    if any(p.startswith(broken) for p in org.problems):
        return fail(f"agents/{name}/resume.json does not load (see the warning above); fix it, then try again")
    return fail(f"no agent {name!r}; agents: {', '.join(sorted(org.agents))}")


def _inspect(org: Org, args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    a = org.agents.get(args.agent)
    if a is None:
        return _no_agent(org, args.agent)
    r = a.resume
    info, state = asyncio.run(_last_state(org, args))
    if args.json:
        out = {"definition": a.as_dict(), "readers": org.readers_of(a.name), "reads": org.readable_by(a.name)}
        if state is not None:
            last = state.last_turn.get(a.name)
            out["state"] = {
                "credits": state.credits.get(a.name),
                "memory": state.memory.get(a.name, {}),
                "status": state.agent_status(a.name),
                "last_turn": last.to_dict() if last else None,
            }
        print(json.dumps(out, sort_keys=True, default=str))
        return EXIT_OK
    def shown(text: str) -> str:
        # Files and model output: no markup, no terminal control codes.
        return escape(printable(text))

    console.print(f"[bold]{a.name}[/] — {shown(r.title)}")
    if r.short_description:
        console.print(shown(r.short_description))
    console.print(f"model: {r.model.key} (temperature {r.model.temperature}, max_tokens {r.model.max_tokens})")
    console.print(f"schedule: every {r.schedule.run_every_n_ticks} tick(s), phase {r.schedule.phase_offset}")
    console.print(f"reads: {escape(', '.join(org.readable_by(a.name)) or '—')}")
    console.print(f"read by: {escape(', '.join(org.readers_of(a.name)) or '—')}")
    console.print(f"tools: {escape(', '.join(r.permissions.tools) or '—')}")
    b = a.budget
    console.print(f"budget: {b.initial:g} of {b.max_credits:g}, soft cap {b.soft_cap}, cost per action {b.cost_per_action:g}")
    if state is not None:
        console.print(f"\n[bold]in run {info.id}[/] at tick {state.tick}: {state.agent_status(a.name)}, credits {state.credits.get(a.name, 0):.6f}")
        console.print(f"memory: {shown(json.dumps(state.memory.get(a.name, {}), ensure_ascii=False))}")
        last = state.last_turn.get(a.name)
        if last is not None:
            console.print(f"last turn: tick {last.tick}, {last.status}, {last.usage.input_tokens}+{last.usage.output_tokens} tokens, cost {last.cost:.6f}")
            if last.error:
                console.print(f"[red]error: {shown(last.error)}[/]")
            proc = last.process
            if proc:  # a command-line agent: how its program ended
                console.print(
                    f"process: {shown(str(proc.get('command')))} exit {proc.get('exit_code')}"
                    + (", timed out" if proc.get("timed_out") else "")
                    + f", {proc.get('stdout_bytes', 0)} bytes out"
                    + (" (cut off)" if proc.get("stdout_truncated") else "")
                    + f", {float(proc.get('duration_ms') or 0) / 1000:.2f} s"
                )
                if str(proc.get("stderr") or "").strip():
                    console.print(f"stderr: {shown(str(proc['stderr'])[-2000:])}")
            console.print(f"reply: {shown(last.raw_output[:2000])}")
    console.print(f"\ninstructions:\n{shown(r.instructions)}")
    return EXIT_OK


def _logs(org: Org, args: argparse.Namespace) -> int:
    return asyncio.run(_read_logs(org, args, Console(highlight=False)))


async def _read_logs(org: Org, args: argparse.Namespace, console: Console) -> int:
    db = db_path(args, org.root)
    if holds_no_run(Path(db)):
        if args.agent not in org.agents:
            return _no_agent(org, args.agent)
        console.print("no recorded run yet: `lemming run --headless` starts one")
        return EXIT_OK
    store = await RunStore.open(db, readonly=True)
    try:
        info = await store.last_run(org.root)
        if args.agent not in org.agents:
            # An agent whose file is broken now still has its recorded turns.
            recorded = await store.state_at(info.id) if info is not None else None
            if recorded is None or args.agent not in recorded.credits:
                return _no_agent(org, args.agent)
        if info is None:
            console.print("no recorded run of this organisation yet")
            return EXIT_OK
        lines: list[str] = []
        # The last N lines need only the recent ticks, and no prompts rebuilt.
        since = max(0, info.ticks - max(args.lines, 10) * 4)
        for ev in await store.events(info.id, since_tick=since, prompts=False):
            agent = getattr(ev, "agent", None)
            if agent != args.agent and not (getattr(ev, "entry", None) is not None and args.agent in ev.entry.recipients):  # type: ignore[attr-defined]
                continue
            lines.append(_log_line(ev))
        for line in lines[-args.lines :]:
            console.print(escape(line), highlight=False, soft_wrap=True)
        return EXIT_OK
    finally:
        await store.close()


def _log_line(ev: Event) -> str:
    # Model output and server errors: shown, never able to drive the terminal.
    return printable(_log_text(ev))


def _log_text(ev: Event) -> str:
    d = ev.to_dict()
    t = d.pop("type")
    tick = d.pop("tick", "")
    if t == "turn_finished":
        r = d["record"]
        return f"[{tick}] turn {r['status']} {r['usage']['input_tokens']}+{r['usage']['output_tokens']} tok cost {r['cost']:.6f}" + (f" error: {r['error']}" if r["error"] else "")
    if t == "message_committed":
        e = d["entry"]
        to = ",".join(e["recipients"]) or "*"
        text = e["payload"].get("text") if isinstance(e["payload"], dict) else e["payload"]
        return f"[{tick}] {e['agent']} → {to}: {text}"
    d.pop("agent", None)
    d.pop("at", None)
    return f"[{tick}] {t} {json.dumps(d, default=str)[:300]}"


def register(sub: argparse._SubParsersAction) -> None:
    """Add `status`, `inspect` and `logs` to the `lemming` parser."""
    p = sub.add_parser("status", help="agents, schedules, credits and the last run's state")
    add_org_arg(p)
    add_db_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_read_only_command(_status))

    p = sub.add_parser("inspect", help="one agent: definition, permissions, budget, memory, last turn")
    p.add_argument("agent")
    add_org_arg(p)
    add_db_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_read_only_command(_inspect))

    p = sub.add_parser("logs", help="an agent's recent turns and messages from the last run")
    p.add_argument("agent")
    add_org_arg(p)
    add_db_arg(p)
    p.add_argument("--lines", type=positive_int, default=40, metavar="N", help="the last N lines (default 40)")
    p.set_defaults(func=_read_only_command(_logs))
