"""`lemming search`: find where something was said in a recorded run.

Every committed message, every turn's notes and every failed turn's error are in the
store's full-text index (engine/store/search.py). A run recorded before the index
existed is indexed the first time it is searched (the database is opened read-write
for that; a read-only file is searched as far as it is indexed, with a warning).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from rich.console import Console
from rich.markup import escape

from lemming.engine.store import RunStore, StoreError
from lemming.engine.store.search import SearchIndex, jsonable
from lemming.tui.hits import hit_row
from lemming.tui.cli.options import add_db_arg, add_org_arg, db_path, positive_int
from lemming.tui.cli.output import EXIT_FAIL, EXIT_OK, EXIT_USAGE, fail, warn


async def _open(db) -> RunStore:  # noqa: ANN001
    try:
        return await RunStore.open(db)
    except StoreError as e:
        if "read-only" not in str(e) and "readonly" not in str(e):
            raise
        return await RunStore.open(db, readonly=True)


async def _search(args: argparse.Namespace) -> int:
    db = db_path(args)
    if not db.exists():
        return fail(f"no runs recorded yet ({db} does not exist); record one with `lemming run` or choose --db")
    store = await _open(db)
    try:
        if args.run:
            info = await store.get_run(args.run)
        else:
            info = await store.last_run()
            if info is None:
                return fail(f"no runs in {db}")
        index = SearchIndex(store)
        result = await index.search(info.id, " ".join(args.query), agent=args.agent, limit=args.limit)
        missing = await index.unindexed(info.id)
        if args.agent and not result.hits:
            state = await store.state_at(info.id)
            names = sorted({*state.org.agents, *state.retired, "operator"})
            if args.agent not in names:
                return fail(f"run {info.id} has no agent {args.agent!r}; its agents: {', '.join(names)}", EXIT_USAGE)
    finally:
        await store.close()
    if missing:
        warn(f"{db} is read-only here and {missing} batch(es) of run {info.id} are not indexed yet: results may be"
             " incomplete")
    if args.json:
        sys.stdout.write(jsonable(result))
        sys.stdout.flush()
        return EXIT_OK if result.hits else EXIT_FAIL
    console = Console(highlight=False)
    if not result.hits:
        console.print(f"no match for {escape(result.query)!s} in run {info.id}")
        return EXIT_FAIL
    for h in result.hits:
        console.print(hit_row(h, 16), soft_wrap=False, overflow="ellipsis", no_wrap=True)
    shown = len(result.hits)
    more = f" (the first {shown}; --limit N shows more)" if result.total > shown else ""
    built = f"; indexed {result.indexed_now} batch(es) first" if result.indexed_now else ""
    console.print(f"[dim]{result.total_text} match(es) in run {escape(info.id)}{more} · {result.elapsed_ms:.0f} ms{built}[/]")
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_search(args))
    except StoreError as e:
        return fail(str(e))


def register(sub: argparse._SubParsersAction) -> None:
    """Add `search` to the `lemming` parser."""
    p = sub.add_parser(
        "search",
        help="find where something was said in a recorded run",
        description="Print the tick, agent and line of every message, note or error of a run that holds all the "
        "WORDS (in any order; \"a phrase\" in quotes; word* for a prefix). Exit code 1 when nothing matches, "
        "2 when --agent names no agent of the run.",
    )
    p.add_argument("query", nargs="+", metavar="WORD", help="what to look for")
    p.add_argument("--run", default=None, metavar="RUN", help="run id or a unique prefix (default: the latest run)")
    p.add_argument("--agent", default=None, metavar="NAME", help="only what this agent said")
    p.add_argument("--limit", type=positive_int, default=200, metavar="N", help="show at most N hits (default 200)")
    p.add_argument("--json", action="store_true", help="one JSON object per hit per line")
    add_org_arg(p)
    add_db_arg(p)
    p.set_defaults(func=cmd_search)
