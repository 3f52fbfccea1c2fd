"""`lemming run --headless` and `lemming run-once`: a run without the control room.

A headless run prints one line per tick (or the events as JSON lines with --json),
is recorded in the run store unless --no-record, hot-reloads agent files unless
--no-watch, and stops at a tick boundary on Ctrl-C (a second Ctrl-C aborts the tick).
`resume` and `fork` (tui/cli/runs.py) print and stop the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import Any, Callable

from rich.console import Console
from rich.markup import escape

from lemming.engine.engine import Engine
from lemming.engine.events import (
    AgentSkipped,
    CommandApplied,
    CommandRejected,
    CreditsToppedUp,
    DefinitionRejected,
    DefinitionsReloaded,
    Event,
    McpServerFailed,
    RunStopped,
    SoftCapReached,
    TickCompleted,
    TokenDelta,
    TurnFinished,
)
from lemming.engine.plainjson import printable
from lemming.engine.recorded_run import HEADLESS, RecordedRun, build_engine, sim_served
from lemming.engine.store import StoreError
from lemming.tui.cli.options import add_db_arg, add_org_arg, add_sim_args, add_sim_flag, db_path, load_or_report, positive_int, run_settings, tick_interval
from lemming.tui.cli.output import EXIT_BROKEN_PIPE, EXIT_FAIL, EXIT_OK, err_console, fail, line_console


class ProgressPrinter:
    """Turns the event stream into one line per tick (or JSON lines with --json)."""

    def __init__(self, console: Console, as_json: bool, tokens: bool) -> None:
        self.console = console
        self.as_json = as_json
        self.tokens = tokens
        self._out = sys.stdout
        self._broke: set[str] = set()
        #: The reader of our output went away (`lemming run --headless | head`).
        self.reader_gone = False

    def handle(self, batch: list[Event]) -> None:
        """Print `batch`; once the reader of stdout has gone, print nothing more."""
        if self.reader_gone:
            return
        try:
            self._print(batch)
        except (BrokenPipeError, SystemExit):  # rich turns a broken pipe into SystemExit(1)
            self.reader_gone = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # nothing buffered may fail again at exit

    def _print(self, batch: list[Event]) -> None:
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
            elif t is McpServerFailed:
                what = f"; its log: {ev.log}" if ev.log else ""
                what += f"; its tools fail until it is up (check mcp_servers.{ev.server} in org.json; lemming validate --probe tries it)"
                c.print(f"        [red]MCP server {escape(ev.server)} {escape(ev.error)}[/]{escape(what)}", highlight=False)
            elif t is RunStopped:
                c.print(f"[bold]run stopped at tick {ev.tick}[/]: {escape(ev.reason)}", highlight=False)


async def run_headless(engine: Engine, args: argparse.Namespace, console: Console, *, ticks: int | None = None, until_tick: int | None = None, watcher: Callable[[Engine], Any] | None = None, db: Any = None) -> int:
    """Run `engine` without a UI, printing progress; Ctrl-C stops at a tick boundary.

    The run is served on a control socket (`lemming attach`, `ctl`, `send`) unless --no-serve."""
    from lemming.tui.cli.remote import serving

    async with serving(engine, args, console, db):
        return await _run_headless(engine, args, console, ticks=ticks, until_tick=until_tick, watcher=watcher)


async def _run_headless(engine: Engine, args: argparse.Namespace, console: Console, *, ticks: int | None, until_tick: int | None, watcher: Callable[[Engine], Any] | None) -> int:
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
                if printer.reader_gone:
                    # Like any Unix tool whose reader went away: stop (at a tick boundary,
                    # so a recorded run ends cleanly) and exit quietly.
                    engine.stop()
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
    if printer.reader_gone:
        return EXIT_BROKEN_PIPE
    return EXIT_OK if reason in ("completed", "stopped") else EXIT_FAIL


async def _run(args: argparse.Namespace, one_tick: bool = False) -> int:
    console = line_console()
    org = load_or_report(args.org)
    if org is None:
        return EXIT_FAIL
    ticks = 1 if one_tick else args.ticks
    settings = run_settings(args, HEADLESS)
    engine = build_engine(org, settings)
    if settings.sim_only and not args.json:
        served = sim_served(engine.org)
        shown = ", ".join(served[:6]) + (f" and {len(served) - 6} more" if len(served) > 6 else "")
        console.print(
            f"--sim: the sim serves {len(served)} API model(s){': ' + escape(shown) if served else ''}; cli models run as they are",
            highlight=False,
        )
    watcher = None
    if not one_tick and not getattr(args, "no_watch", True):
        from lemming.engine.watch import watch_org

        watcher = watch_org
    if getattr(args, "no_record", False):
        return await run_headless(engine, args, console, ticks=ticks, watcher=watcher)
    db = db_path(args, org.root)
    try:
        run = await RecordedRun.record(engine, db, target_ticks=ticks, snapshot_every=settings.snapshot_every)
    except StoreError as e:
        return fail(str(e))
    async with run:
        if not args.json:
            console.print(f"run [bold]{engine.run_id}[/] recording to {escape(str(db))}")
        return await run_headless(engine, args, console, ticks=ticks, watcher=watcher, db=db)


def cmd_run(args: argparse.Namespace) -> int:
    if getattr(args, "detach", False):
        from lemming.tui.cli.remote import detach_run

        return detach_run(args)
    return asyncio.run(_run(args))


def cmd_run_once(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args, one_tick=True))


def register(sub: argparse._SubParsersAction) -> None:
    """Add `run` and `run-once` to the `lemming` parser (`run` without --headless is the control room)."""
    p = sub.add_parser("run", help="run the organisation (--headless: without the control room)")
    add_org_arg(p)
    add_db_arg(p)
    p.add_argument("--headless", action="store_true", help="run without a UI, printing a line per tick")
    p.add_argument("--paused", action="store_true", help="start paused (the control room's space, or lemming ctl resume / step)")
    p.add_argument("--ticks", type=positive_int, default=None, metavar="N", help="stop after N ticks (default: run until Ctrl-C)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed for the sim provider (default 0)")
    p.add_argument("--interval", type=tick_interval, default=None, metavar="SECONDS", help="wait between ticks (default 0 headless, 1 in the control room)")
    p.add_argument("--concurrency", type=positive_int, default=None, metavar="N", help="turns in flight at once (default: org.json max_concurrency)")
    p.add_argument("--json", action="store_true", help="print the events as JSON lines instead of progress")
    p.add_argument("--tokens", action="store_true", help="with --json, include token deltas")
    p.add_argument("--no-record", action="store_true", help="do not record the run in the database")
    p.add_argument(
        "--snapshot-every",
        type=positive_int,
        default=None,
        metavar="TICKS",
        help="record a state snapshot at least every TICKS ticks (default 100; fewer means faster seeks, a bigger file)",
    )
    p.add_argument("--no-watch", action="store_true", help="do not hot-reload agent files")
    add_sim_flag(p)
    p.add_argument("--no-serve", action="store_true", help="headless: do not serve the run on a control socket (lemming attach/ctl/send)")
    p.add_argument("--detach", action="store_true", help="start the run headless in the background, served; print how to attach, and return")
    add_sim_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("run-once", help="run exactly one tick headless")
    add_org_arg(p)
    add_db_arg(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-record", action="store_true")
    add_sim_flag(p)
    add_sim_args(p)
    p.set_defaults(func=cmd_run_once, ticks=1, tokens=False, no_watch=True, concurrency=None, interval=None, no_serve=True)
