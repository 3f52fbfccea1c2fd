"""`lemming runs`, `resume`, `fork` and `export`: the commands that work on recorded runs.

Every failure of the database (missing, corrupt, locked, newer schema, no such
run) is one red line and exit code 1, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape

from lemming.engine.recorded_run import HEADLESS, RecordedRun
from lemming.engine.replay import Exporter
from lemming.engine.store import RunStore, StoreError
from lemming.tui.cli.options import add_db_arg, add_org_arg, add_sim_args, db_path, holds_no_run, positive_int, run_settings
from lemming.tui.cli.output import EXIT_OK, fail, line_console
from lemming.tui.cli.run import run_headless
from lemming.tui.cli.tables import Col, fitted_table

#: `lemming runs`' columns: ids and numbers whole; short of width, the least important go.
RUN_COLUMNS = (
    Col("id", 0, wrap=False),
    Col("org", 6),
    Col("ticks", 1, wrap=False),
    Col("status", 2, wrap=False),
    Col("spend", 3, wrap=False, justify="right"),
    Col("parent", 4, wrap=False),
    Col("started", 5, wrap=False),
)


def _run_async(coro) -> int:
    try:
        return asyncio.run(coro)
    except StoreError as e:
        return fail(str(e))


# --- runs --------------------------------------------------------------------------------


async def _runs(args: argparse.Namespace) -> int:
    db = db_path(args)
    if holds_no_run(db):
        if args.json:
            return EXIT_OK
        Console(highlight=False).print(f"no runs recorded yet ({escape(str(db))} {'is empty' if db.exists() else 'does not exist'})")
        return EXIT_OK
    store = await RunStore.open(db, readonly=True)
    try:
        runs = await store.list_runs()
    finally:
        await store.close()
    if args.json:
        out = sys.stdout
        for r in runs:
            out.write(json.dumps(r.to_dict(), sort_keys=True, ensure_ascii=False) + "\n")
        out.flush()
        return EXIT_OK
    console = Console(highlight=False)
    if not runs:
        console.print(f"no runs in {escape(str(db))}")
        return EXIT_OK
    colours = {"running": "green", "completed": "cyan", "stopped": "yellow", "error": "red", "interrupted": "magenta"}
    rows = []
    for r in runs:
        ticks = f"{r.ticks}" + (f"/{r.target_ticks}" if r.target_ticks is not None else "")
        # a run id ends with its random part: enough to tell a parent
        parent = f"…{r.parent_run[-6:]}@{r.fork_tick}" if r.parent_run else ""
        status = f"[{colours.get(r.status, 'white')}]{r.status}[/]"
        started = "—"
        if r.started_at:
            fmt = "%H:%M" if time.time() - r.started_at < 20 * 3600 else "%m-%d"
            started = time.strftime(fmt, time.localtime(r.started_at))
        rows.append([r.id, escape(Path(r.org_path).name), ticks, status, f"{r.spend:.4f}", parent, started])
    table = fitted_table(
        RUN_COLUMNS, rows, console.width, title=f"runs in {escape(str(db))}", title_justify="left",
        box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True,
    )
    console.print(table)
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    return _run_async(_runs(args))


# --- export --------------------------------------------------------------------------------


async def _export(args: argparse.Namespace) -> int:
    db = db_path(args)
    store = await RunStore.open(db, readonly=True)
    try:
        info = await store.get_run(args.run)
        out = sys.stdout
        ex = Exporter(args.canonical)
        async for chunk in store.iter_events(info.id):
            dicts = [d for ev in chunk for d in ex.feed(ev)]
            out.write("".join(json.dumps(d, sort_keys=True, ensure_ascii=False) + "\n" for d in dicts))
        out.write("".join(json.dumps(d, sort_keys=True, ensure_ascii=False) + "\n" for d in ex.finish()))
        out.flush()
    except BrokenPipeError:  # `lemming export RUN | head`
        pass
    finally:
        await store.close()
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    return _run_async(_export(args))


# --- resume and fork -----------------------------------------------------------------------


async def _continue(args: argparse.Namespace, fork: bool) -> int:
    console = line_console()
    db = db_path(args)
    settings = run_settings(args, HEADLESS)
    if fork:
        run = await RecordedRun.fork(db, args.run, args.at, settings, ticks=args.ticks, seed=args.seed, open_ended=False)
    else:
        run = await RecordedRun.resume(db, args.run, settings, ticks=args.ticks, force=args.force)
    async with run:
        engine = run.engine
        if run.complete:
            console.print(f"run {engine.run_id} is complete: tick {engine.tick} of {run.target_ticks}; `lemming resume {engine.run_id} --ticks N` runs N more")
            return EXIT_OK
        if not args.json:
            what = f"fork of {engine.parent_run} at tick {engine.fork_tick}" if fork else f"resuming from tick {engine.tick}"
            until = f" to tick {run.target_ticks}" if run.target_ticks is not None else " until Ctrl-C"
            console.print(f"run [bold]{engine.run_id}[/] ({what}){until}, recording to {escape(str(db))}")
        return await run_headless(engine, args, console, until_tick=run.target_ticks)


def cmd_resume(args: argparse.Namespace) -> int:
    return _run_async(_continue(args, fork=False))


def cmd_fork(args: argparse.Namespace) -> int:
    return _run_async(_continue(args, fork=True))


# --- the parser ----------------------------------------------------------------------------


def _add_common(p: argparse.ArgumentParser) -> None:
    add_org_arg(p)
    add_db_arg(p)


def _add_running(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the events as JSON lines instead of progress")
    p.add_argument("--tokens", action="store_true", help="with --json, include token deltas")
    p.add_argument("--concurrency", type=int, default=None, metavar="N", help="turns in flight at once")
    add_sim_args(p)
    p.set_defaults(interval=0.0, no_watch=True, no_record=False)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `runs`, `resume`, `fork` and `export` to the `lemming` parser."""
    p = sub.add_parser("runs", help="list the recorded runs (--json: one object per line)")
    _add_common(p)
    p.add_argument("--json", action="store_true", help="one JSON object per run per line")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser(
        "resume",
        help="continue a stopped or killed run from its last committed tick",
        description="Continue RUN from its last committed tick, up to the tick count it was started "
        "with (or N more ticks), with the definitions and seed it was recorded with.",
    )
    p.add_argument("run", metavar="RUN", help="run id (or a unique prefix of it)")
    p.add_argument("--ticks", type=positive_int, default=None, metavar="N", help="run N more ticks (default: up to the run's target)")
    p.add_argument("--force", action="store_true", help="resume even if the run looks like it is still being recorded")
    _add_common(p)
    _add_running(p)
    p.set_defaults(func=cmd_resume, seed=None)

    p = sub.add_parser(
        "fork",
        help="start a new run from a past tick of another",
        description="Start a new run whose state is RUN's at the end of TICK; the new run records RUN as its parent.",
    )
    p.add_argument("run", metavar="RUN", help="run id (or a unique prefix of it)")
    p.add_argument("--at", type=int, required=True, metavar="TICK", help="the tick whose end state the fork starts from")
    p.add_argument("--ticks", type=positive_int, default=None, metavar="N", help="run N ticks (default: up to the parent's target)")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="seed for the sim (default: the parent's)")
    _add_common(p)
    _add_running(p)
    p.set_defaults(func=cmd_fork)

    p = sub.add_parser("export", help="print a run's events as JSON lines")
    p.add_argument("run", metavar="RUN", help="run id (or a unique prefix of it)")
    p.add_argument(
        "--canonical",
        action="store_true",
        help="leave out wall-clock fields, run ids and resume marks, so runs compare with diff",
    )
    _add_common(p)
    p.set_defaults(func=cmd_export)
