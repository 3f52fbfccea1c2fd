"""The `lemming` command. With no arguments it opens the control room on the
organisation in the current folder.

One module a family of commands, each adding its own to the parser with `register`:

* rooms      — `tui` (the default), `replay`, `watch`, `serve`: the control room
* run        — `run --headless`, `run-once`: a run without a UI
* runs       — `runs`, `resume`, `fork`, `export`: recorded runs
* agents     — `status`, `inspect`, `logs`: an organisation's agents
* org_files  — `validate`, `bootstrap`: an organisation's files
* models     — `models`: models.json, probed
* remote     — `attach`, `send`, `inbox`, `chat`, `ctl`: a served run, from another process
* search     — `search`: find where something was said in a run
* bench      — `bench`: the benchmarks

`options` holds the options several commands share and `output` the exit codes and
error lines. Textual is imported only by the commands that open a screen, so
headless commands start fast.
"""

from __future__ import annotations

import argparse
import os
import sys

from lemming.tui.cli import rooms
from lemming.tui.cli.output import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE


def build_parser(*, only_tui: bool = False) -> argparse.ArgumentParser:
    """The `lemming` parser; `only_tui` leaves out every command but `tui`.

    Opening the control room is the common case and its first paint is timed:
    the other commands' parsers import the run store, SQLite and the benchmarks,
    which the control room does not need before it shows (a tenth of a second).
    """
    parser = argparse.ArgumentParser(
        prog="lemming",
        description=(
            "LeMMing Control Room: run an organisation of LLM agents and watch it think. "
            "With no command, opens the control room on the organisation in the current folder."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    rooms.register_tui(sub)
    if only_tui:
        return parser
    from lemming.tui.cli import agents, bench, models, org_files, remote, run, runs, search

    org_files.register(sub)
    run.register(sub)
    agents.register(sub)
    runs.register(sub)
    models.register(sub)
    search.register(sub)
    bench.register(sub)
    rooms.register(sub)
    remote.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `lemming` command with `argv` (default: the process's); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["tui", *argv]
    parser = build_parser(only_tui=argv[0] == "tui")
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "run" and not args.headless and not args.detach:
        # `lemming run` without --headless is the control room.
        for attr, default in (("paused", False), ("no_mouse", False), ("theme", None)):
            if not hasattr(args, attr):
                setattr(args, attr, default)
        args.func = rooms.cmd_tui
    try:
        return int(args.func(args) or EXIT_OK)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `lemming ... | head`: the reader went away; exit quietly like other Unix tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    raise SystemExit(main())
