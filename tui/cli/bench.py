"""`lemming bench`: measure the engine, the store, the UI and replay (lemming.tui.bench)."""

from __future__ import annotations

import argparse
import json
import os

from rich.console import Console
from rich.table import Table

from lemming.tui.bench import BENCHMARKS, FIGURE_KEYS, run_benchmarks
from lemming.tui.cli.output import EXIT_OK, EXIT_USAGE, fail


def cmd_bench(args: argparse.Namespace) -> int:
    names = args.names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        return fail(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}", EXIT_USAGE)
    console = Console()

    def on_line(line: dict) -> None:
        if args.json:
            print(json.dumps(line, sort_keys=True), flush=True)

    if args.profile:
        try:
            import pyinstrument  # noqa: F401
        except ImportError:
            return fail("--profile needs pyinstrument: pip install 'lemming-control-room[dev]'", EXIT_USAGE)
        os.makedirs(args.profile, exist_ok=True)
    results = run_benchmarks(names, args.quick, args.json, args.repeats, on_line, args.profile)
    if args.json:
        return EXIT_OK
    table = Table(title="lemming bench" + (" --quick" if args.quick else ""))
    table.add_column("bench")
    table.add_column("figures (median \\[min–max])")
    table.add_column("goal")
    for r in results:
        name = r["bench"]
        if "error" in r:
            table.add_row(name, f"[yellow]error: {r['error']}[/]", BENCHMARKS[name][1])
            continue
        parts = []
        for k in FIGURE_KEYS[name]:
            if k in r:
                rng = r.get("range", {}).get(k)
                parts.append(f"{k} {r[k]}" + (f" [{rng[0]}–{rng[1]}]" if rng else ""))
        label = name + (f" {r['path']} ×{r['agents']}" if "path" in r else "")
        label += " (persist)" if r.get("persist") is True else " (no store)" if r.get("persist") is False else ""
        if r.get("label"):
            label = f"{name} {r['label']}"
        table.add_row(label, ", ".join(parts), BENCHMARKS[name][1])
    console.print(table)
    if args.profile:
        console.print(f"profiles (pyinstrument, text and html): {args.profile}/<bench>.txt, .html")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure the engine, the store, the UI and replay")
    p.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default all: {', '.join(BENCHMARKS)})")
    p.add_argument("--quick", action="store_true", help="smaller sizes, same fields; under a minute on two cores")
    p.add_argument("--json", action="store_true", help="one JSON object per benchmark per line")
    p.add_argument("--repeats", type=int, default=None, help="repeats per benchmark (default 3; 1 with --quick)")
    p.add_argument(
        "--profile",
        metavar="DIR",
        default=None,
        help="run each benchmark once under pyinstrument and write DIR/<bench>.txt and .html "
        "(figures taken under the profiler are slower than without it)",
    )
    p.set_defaults(func=cmd_bench)
