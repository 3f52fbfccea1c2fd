"""The `lemming` command. With no arguments it opens the control room on the
organisation in the current folder; the engine's commands live in engine/cli.py.

Textual is imported only by the commands that open a screen, so headless
commands start fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lemming.tui.cli import engine_cmds as engine_cli


def _add_tui_args(p: argparse.ArgumentParser) -> None:
    engine_cli.add_org_arg(p)
    engine_cli.add_db_arg(p)
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed for the sim provider")
    p.add_argument("--paused", action="store_true", help="open paused (space resumes, n steps)")
    p.add_argument("--interval", type=float, default=None, metavar="SECONDS", help="wait between ticks (default 1.0; + / - change it)")
    p.add_argument("--no-mouse", action="store_true", help="turn mouse reporting off (useful over SSH)")
    p.add_argument("--theme", default=None, help="lemming-dark, lemming-light, lemming-contrast or lemming-ansi")
    p.add_argument("--no-record", action="store_true", help="do not record the run in the database")
    p.add_argument("--no-watch", action="store_true", help="do not hot-reload agent files")
    engine_cli.add_sim_args(p)


def cmd_tui(args: argparse.Namespace) -> int:
    from lemming.tui.app import main as app_main

    return app_main(args)


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
    p = sub.add_parser("tui", help="open the control room (the default command)")
    _add_tui_args(p)
    p.set_defaults(func=cmd_tui)
    if only_tui:
        return parser
    engine_cli.register(sub)
    from lemming.tui import bench
    from lemming.tui.cli import rooms

    bench.register(sub)
    rooms.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["tui", *argv]
    parser = build_parser(only_tui=argv[0] == "tui")
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    if args.command == "run" and not args.headless:
        # `lemming run` without --headless is the control room.
        for attr, default in (("paused", False), ("no_mouse", False), ("theme", None)):
            if not hasattr(args, attr):
                setattr(args, attr, default)
        args.interval = args.interval or None
        args.func = cmd_tui
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `lemming ... | head`: the reader went away; exit quietly like other Unix tools.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
