"""Options shared by several commands, and what they mean: the organisation, the run
database, the sim's knobs, and a run's settings."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape

from lemming.engine.org import Org, OrgInvalid, load_org
from lemming.engine.recorded_run import RunSettings
from lemming.tui.cli.output import err_console, warn


def add_org_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--org", type=Path, default=Path("."), metavar="DIR", help="organisation folder (holds agents/); default: current folder")


def add_db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", type=Path, default=None, metavar="PATH", help="run database; default: ORG/.lemming/runs.db")


def add_sim_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sim provider")
    g.add_argument("--sim-tokens-per-s", type=float, default=None, metavar="N", help="sim streaming rate (0 = as fast as possible)")
    g.add_argument("--sim-latency-ms", type=float, default=None, metavar="MS", help="sim thinking time before the first token")
    g.add_argument("--sim-malformed-rate", type=float, default=None, metavar="P", help="share of sim replies that are malformed (0-1)")


def add_sim_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sim",
        action="store_true",
        help="serve every API model (openai, anthropic, ollama) with the offline sim: no keys needed; cli models run as they are",
    )


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is not at least 1")
    return n


def db_path(args: argparse.Namespace, org_root: Path | str | None = None) -> Path:
    """--db, or the organisation's default database (ORG/.lemming/runs.db)."""
    from lemming.engine.store import default_db_path

    if getattr(args, "db", None):
        return Path(args.db)
    return default_db_path(org_root if org_root is not None else (getattr(args, "org", None) or Path(".")))


def holds_no_run(db: Path) -> bool:
    """The run database is missing or an empty file: no run was recorded in it (a folder
    or a file that is not a database is the store's error to say)."""
    return not db.exists() or (db.is_file() and db.stat().st_size == 0)


def run_settings(args: argparse.Namespace, defaults: RunSettings) -> RunSettings:
    """`defaults` with what the command line says (options it does not have keep the default)."""
    sim = dict(defaults.sim)
    for attr, key in (("sim_tokens_per_s", "tokens_per_s"), ("sim_latency_ms", "latency_ms"), ("sim_malformed_rate", "malformed_rate")):
        value = getattr(args, attr, None)
        if value is not None:
            sim[key] = value
    changes: dict[str, Any] = {
        "seed": getattr(args, "seed", None),
        "interval": getattr(args, "interval", None),
        "paused": getattr(args, "paused", None) or None,
        "concurrency": getattr(args, "concurrency", None),
        "snapshot_every": getattr(args, "snapshot_every", None),
        "sim_only": getattr(args, "sim", None) or None,
    }
    return defaults.replace(sim=sim, **changes)


def load_or_report(org_dir: Path, *, strict: bool = True) -> Org | None:
    """The organisation at `org_dir`, its warnings printed; None (every problem printed) if it cannot load.

    strict=False is for the commands that only read (status, inspect, logs): a broken
    file of the organisation is printed as a warning and what loads is returned, so a
    recorded run can still be shown when the operator needs it most."""
    try:
        org = load_org(org_dir, strict=strict)
    except OrgInvalid as e:
        err_console().print(f"[bold red]{len(e.problems)} problem(s) in {escape(str(org_dir))}:[/]")
        for p in e.problems:
            err_console().print(f"  {escape(p)}", highlight=False)
        return None
    for p in org.problems:
        warn(f"{p} (the organisation's files as they are now; `lemming validate` lists every problem)")
    for w in org.warnings:
        warn(w)
    return org


def tick_interval(text: str) -> float:
    """An argparse type: seconds between ticks, as the engine takes them (0 to 3600)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= x <= 3600:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 3600 seconds")
    return x
