"""The engine's half of the `lemming` command: everything that runs without a UI.

`tui/cli.py` owns the entry point (it adds the control room's commands); this
module never imports Textual.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lemming.engine.engine import Engine
from lemming.engine.events import (
    AgentSkipped,
    CommandApplied,
    CommandRejected,
    CreditsToppedUp,
    DefinitionRejected,
    DefinitionsReloaded,
    Event,
    RunStopped,
    SoftCapReached,
    TickCompleted,
    TokenDelta,
    TurnFinished,
)
from lemming.engine.org import Org, OrgInvalid, load_org
from lemming.engine.plainjson import printable
from lemming.engine.providers.registry import ProviderRegistry

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def add_org_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--org", type=Path, default=Path("."), metavar="DIR", help="organisation folder (holds agents/); default: current folder")


def add_db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", type=Path, default=None, metavar="PATH", help="run database; default: ORG/.lemming/runs.db")


def add_sim_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sim provider")
    g.add_argument("--sim-tokens-per-s", type=float, default=None, metavar="N", help="sim streaming rate (0 = as fast as possible)")
    g.add_argument("--sim-latency-ms", type=float, default=None, metavar="MS", help="sim thinking time before the first token")
    g.add_argument("--sim-malformed-rate", type=float, default=None, metavar="P", help="share of sim replies that are malformed (0-1)")


def sim_overrides(args: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {}
    for attr, key in (("sim_tokens_per_s", "tokens_per_s"), ("sim_latency_ms", "latency_ms"), ("sim_malformed_rate", "malformed_rate")):
        v = getattr(args, attr, None)
        if v is not None:
            o[key] = v
    return {"sim": o} if o else {}


def load_or_report(org_dir: Path, console: Console) -> Org | None:
    try:
        org = load_org(org_dir)
    except OrgInvalid as e:
        err_console().print(f"[bold red]{len(e.problems)} problem(s) in {escape(str(org_dir))}:[/]")
        for p in e.problems:
            err_console().print(f"  {escape(p)}", highlight=False)
        return None
    for w in org.warnings:
        err_console().print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    return org


_err: Console | None = None


def err_console() -> Console:
    global _err
    if _err is None:
        _err = Console(stderr=True)
    return _err


# --- validate ----------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    console = Console()
    try:
        org = load_org(args.org)
    except OrgInvalid as e:
        for p in e.problems:
            console.print(escape(p), highlight=False, soft_wrap=True)
        err_console().print(f"[red]{len(e.problems)} problem(s)[/]")
        return EXIT_INVALID
    for w in org.warnings:
        err_console().print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    console.print(f"[green]ok[/]: {len(org.agents)} agents, {len(org.models)} models in models.json")
    return EXIT_OK


# --- run --headless ----------------------------------------------------------------------


class ProgressPrinter:
    """Turns the event stream into one line per tick (or JSON lines with --json)."""

    def __init__(self, console: Console, as_json: bool, tokens: bool) -> None:
        self.console = console
        self.as_json = as_json
        self.tokens = tokens
        self._out = sys.stdout
        self._broke: set[str] = set()

    def handle(self, batch: list[Event]) -> None:
        if self.as_json:
            lines = []
            for ev in batch:
                if type(ev) is TokenDelta and not self.tokens:
                    continue
                lines.append(json.dumps(ev.to_dict(), ensure_ascii=False, sort_keys=True, default=str))
            if lines:
                self._out.write("\n".join(lines) + "\n")
                self._out.flush()
            return
        c = self.console
        for ev in batch:
            t = type(ev)
            if t is TickCompleted:
                failed = f" [red]({len(ev.failed)} failed: {', '.join(ev.failed)})[/]" if ev.failed else ""
                c.print(
                    f"tick {ev.tick:>5}  fired {len(ev.fired):>3}{failed}  msgs {ev.messages:>3}  "
                    f"spend {ev.spend:.6f}  total {ev.total_spend:.6f}",
                    highlight=False,
                )
            elif t is CreditsToppedUp:
                self._broke.discard(ev.agent)
            elif t is AgentSkipped and ev.reason == "broke" and ev.agent not in self._broke:
                # Said once when an agent goes broke, not again on every tick it is skipped.
                self._broke.add(ev.agent)
                c.print(f"        [yellow]{escape(ev.agent)} is broke[/]: {escape(ev.detail)}", highlight=False)
            elif t is SoftCapReached:
                c.print(f"        [yellow]{escape(ev.agent)} passed its soft cap ({ev.soft_cap:g})[/]", highlight=False)
            elif t is TurnFinished and ev.record.status != "ok":
                c.print(f"        [red]{escape(ev.agent)}: {escape(printable(ev.record.error or ev.record.status))}[/]", highlight=False)
            elif t is CommandApplied:
                c.print(f"        [cyan]operator: {ev.command}[/] {escape(json.dumps(ev.args))}", highlight=False)
            elif t is CommandRejected:
                c.print(f"        [red]operator: {ev.command} rejected: {escape(ev.error)}[/]", highlight=False)
            elif t is DefinitionsReloaded:
                parts = []
                if ev.added:
                    parts.append("added " + ", ".join(ev.added))
                if ev.removed:
                    parts.append("retired " + ", ".join(ev.removed))
                for name, fields in ev.changed.items():
                    parts.append(f"{name}: {', '.join(fields)}")
                c.print(f"        [cyan]reloaded[/]: {escape('; '.join(parts))}", highlight=False)
            elif t is DefinitionRejected:
                c.print(f"        [red]rejected {escape(ev.file)}[/]: {escape(' | '.join(ev.errors))}", highlight=False)
            elif t is RunStopped:
                c.print(f"[bold]run stopped at tick {ev.tick}[/]: {escape(ev.reason)}", highlight=False)


async def run_headless(engine: Engine, args: argparse.Namespace, console: Console, *, ticks: int | None = None, until_tick: int | None = None, watcher: Callable[[Engine], Any] | None = None) -> int:
    """Run `engine` without a UI, printing progress; Ctrl-C stops at a tick boundary."""
    printer = ProgressPrinter(console, getattr(args, "json", False), getattr(args, "tokens", False))
    sub = engine.subscribe(tokens=printer.tokens)
    loop = asyncio.get_running_loop()
    interrupts = 0

    def on_sigint() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            err_console().print("[yellow]stopping at the end of this tick (Ctrl-C again to abort it)[/]")
            engine.stop()
        else:
            engine.stop(abort=True)

    installed = False
    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        loop.add_signal_handler(signal.SIGTERM, on_sigint)
        installed = True
    except (NotImplementedError, RuntimeError):  # not the main thread / not Unix
        pass

    async def pump() -> None:
        while True:
            await sub.wait()
            batch = sub.drain()
            if batch:
                printer.handle(batch)
            if sub.closed:
                return

    pump_task = asyncio.create_task(pump())
    watch_task = asyncio.create_task(watcher(engine)) if watcher else None
    try:
        reason = await engine.run(ticks=ticks, until_tick=until_tick)
    except Exception as e:
        reason = f"error: {e}"
        err_console().print(f"[red]the run stopped: {escape(str(e))}[/]")
    finally:
        if watch_task:
            watch_task.cancel()
            await asyncio.gather(watch_task, return_exceptions=True)
        sub.close()
        await pump_task
        printer.handle(sub.drain())
        if installed:
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
    return EXIT_OK if reason in ("completed", "stopped") else EXIT_INVALID


def build_engine(org: Org, args: argparse.Namespace, **kw: Any) -> Engine:
    registry = ProviderRegistry(org.models, overrides=sim_overrides(args))
    return Engine(
        org,
        seed=getattr(args, "seed", 0) or 0,
        concurrency=getattr(args, "concurrency", None),
        interval=getattr(args, "interval", None) or 0.0,
        registry=registry,
        **kw,
    )


async def _run(args: argparse.Namespace, one_tick: bool = False) -> int:
    console = Console(highlight=False)
    org = load_or_report(args.org, console)
    if org is None:
        return EXIT_INVALID
    ticks = 1 if one_tick else args.ticks
    store = None
    recorder = None
    engine_kw: dict[str, Any] = {}
    if not getattr(args, "no_record", False):
        try:
            from lemming.engine.store import RunStore, StoreError, default_db_path
        except ImportError:  # the store has not landed
            RunStore = None  # type: ignore[assignment]
        if RunStore is not None:
            db = args.db or default_db_path(org.root)
            try:
                store = await RunStore.open(db, snapshot_every=getattr(args, "snapshot_every", None) or 100)
            except StoreError as e:
                err_console().print(f"[red]{escape(str(e))}[/]")
                return EXIT_INVALID
    engine = build_engine(org, args, **engine_kw)
    try:
        if store is not None:
            await store.create_run(
                run_id=engine.run_id,
                org_root=org.root,
                seed=engine.seed,
                definitions_hash=org.definitions_hash(),
                target_ticks=ticks,
            )
            # Snapshots come from the engine's live state (the recorder need not fold a copy).
            recorder = store.recorder(engine.run_id, state=engine.state)
            engine.recorder = recorder
            if not args.json:
                console.print(f"run [bold]{engine.run_id}[/] recording to {escape(str(args.db or default_db_path(org.root)))}")
        watcher = None
        if not one_tick and not getattr(args, "no_watch", True):
            try:
                from lemming.engine.watch import watch_org
            except ImportError:
                watch_org = None  # type: ignore[assignment]
            if watch_org is not None:
                watcher = watch_org
        return await run_headless(engine, args, console, ticks=ticks, watcher=watcher)
    finally:
        if store is not None:
            await store.close()


def cmd_run(args: argparse.Namespace) -> int:
    if not args.headless:
        # Without --headless, `run` is the control room; tui/cli.py handles that.
        err_console().print("[red]`lemming run` without --headless opens the control room: use `lemming tui`[/]")
        return EXIT_USAGE
    return asyncio.run(_run(args))


def cmd_run_once(args: argparse.Namespace) -> int:
    args.headless = True
    return asyncio.run(_run(args, one_tick=True))


# --- status / inspect / logs -------------------------------------------------------------


async def _last_state(org: Org, args: argparse.Namespace):
    """The state of the organisation's last recorded run, if there is one."""
    try:
        from lemming.engine.store import RunStore, StoreError, default_db_path
    except ImportError:
        return None, None
    db = args.db or default_db_path(org.root)
    if not Path(db).exists():
        return None, None
    try:
        store = await RunStore.open(db, readonly=True)
    except StoreError as e:
        err_console().print(f"[yellow]{escape(str(e))}[/]")
        return None, None
    try:
        info = await store.last_run(org.root)
        if info is None:
            return None, None
        return info, await store.state_at(info.id)
    finally:
        await store.close()


def cmd_status(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    org = load_or_report(args.org, console)
    if org is None:
        return EXIT_INVALID
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


def cmd_inspect(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    org = load_or_report(args.org, console)
    if org is None:
        return EXIT_INVALID
    a = org.agents.get(args.agent)
    if a is None:
        err_console().print(f"[red]no agent {escape(args.agent)!r}; agents: {escape(', '.join(sorted(org.agents)))}[/]")
        return EXIT_INVALID
    r = a.resume
    info, state = asyncio.run(_last_state(org, args))
    if args.json:
        out = {"definition": a.as_dict(), "readers": org.readers_of(a.name), "reads": org.readable_by(a.name)}
        if state is not None:
            last = state.last_turn.get(a.name)
            from lemming.engine.events import _plain

            out["state"] = {
                "credits": state.credits.get(a.name),
                "memory": state.memory.get(a.name, {}),
                "status": state.agent_status(a.name),
                "last_turn": _plain(last) if last else None,
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
            console.print(f"reply: {shown(last.raw_output[:2000])}")
    console.print(f"\ninstructions:\n{shown(r.instructions)}")
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    org = load_or_report(args.org, console)
    if org is None:
        return EXIT_INVALID
    if args.agent not in org.agents:
        err_console().print(f"[red]no agent {escape(args.agent)!r}; agents: {escape(', '.join(sorted(org.agents)))}[/]")
        return EXIT_INVALID
    return asyncio.run(_logs(org, args, console))


async def _logs(org: Org, args: argparse.Namespace, console: Console) -> int:
    try:
        from lemming.engine.store import RunStore, StoreError, default_db_path
    except ImportError:
        err_console().print("[yellow]no run store available[/]")
        return EXIT_INVALID
    db = args.db or default_db_path(org.root)
    if not Path(db).exists():
        console.print("no recorded run yet: `lemming run --headless` starts one")
        return EXIT_OK
    try:
        store = await RunStore.open(db, readonly=True)
    except StoreError as e:
        err_console().print(f"[red]{escape(str(e))}[/]")
        return EXIT_INVALID
    try:
        info = await store.last_run(org.root)
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


# --- bootstrap ---------------------------------------------------------------------------

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
        err_console().print(f"[red]cannot create the organisation in {escape(str(root))}: {escape(e.strerror or str(e))}[/]")
        return EXIT_INVALID
    for c in created:
        console.print(f"[green]created[/] {escape(c)}")
    for k in kept:
        console.print(f"[dim]kept[/] {escape(k)} (exists)")
    console.print(f"run it: lemming run --headless --org {escape(str(root))} --ticks 10   or   lemming tui --org {escape(str(root))}")
    return EXIT_OK


# --- the parser ----------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is not at least 1")
    return n


def register(sub: argparse._SubParsersAction) -> None:
    """Add the engine's commands to the `lemming` parser."""
    p = sub.add_parser("validate", help="check an organisation's files; exit 1 listing every problem")
    add_org_arg(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="run the organisation (--headless: without the control room)")
    add_org_arg(p)
    add_db_arg(p)
    p.add_argument("--headless", action="store_true", help="run without a UI, printing a line per tick")
    p.add_argument("--ticks", type=int, default=None, metavar="N", help="stop after N ticks (default: run until Ctrl-C)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed for the sim provider (default 0)")
    p.add_argument("--interval", type=float, default=0.0, metavar="SECONDS", help="wait between ticks (default 0)")
    p.add_argument("--concurrency", type=int, default=None, metavar="N", help="turns in flight at once (default: org.json max_concurrency)")
    p.add_argument("--json", action="store_true", help="print the events as JSON lines instead of progress")
    p.add_argument("--tokens", action="store_true", help="with --json, include token deltas")
    p.add_argument("--no-record", action="store_true", help="do not record the run in the database")
    p.add_argument(
        "--snapshot-every",
        type=_positive_int,
        default=None,
        metavar="TICKS",
        help="record a state snapshot at least every TICKS ticks (default 100; fewer means faster seeks, a bigger file)",
    )
    p.add_argument("--no-watch", action="store_true", help="do not hot-reload agent files")
    add_sim_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("run-once", help="run exactly one tick headless")
    add_org_arg(p)
    add_db_arg(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-record", action="store_true")
    add_sim_args(p)
    p.set_defaults(func=cmd_run_once, ticks=1, tokens=False, no_watch=True, concurrency=None, interval=0.0)

    p = sub.add_parser("status", help="agents, schedules, credits and the last run's state")
    add_org_arg(p)
    add_db_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("inspect", help="one agent: definition, permissions, budget, memory, last turn")
    p.add_argument("agent")
    add_org_arg(p)
    add_db_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("logs", help="an agent's recent turns and messages from the last run")
    p.add_argument("agent")
    add_org_arg(p)
    add_db_arg(p)
    p.add_argument("--lines", type=int, default=40, metavar="N")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("bootstrap", help="create a runnable organisation (idempotent; never overwrites)")
    p.add_argument("dir", nargs="?", type=Path, default=Path("."))
    p.set_defaults(func=cmd_bootstrap)

    try:
        from lemming.tui.cli import runs as cli_runs
    except ImportError:
        cli_runs = None  # type: ignore[assignment]
    if cli_runs is not None:
        cli_runs.register(sub)
    from lemming.engine.providers.probe import add_models_parser

    add_models_parser(sub)
