"""`lemming` / `lemming tui`, `replay`, `watch` and `serve`: the commands that open the control room.

Textual is imported only when a command opens a screen, so the other commands start fast.

* `tui` (the default command) — the control room on a new live run of the organisation.

* `replay [RUN] [--at TICK] [--follow]` — a recorded run in REPLAY mode; without
  RUN, the run picker. Read-only until the operator forks (`f`) or starts a run.
* `watch [RUN]` — follow a run another process is writing (default: the most
  recently active run); strictly read-only: no fork, no new run.
* `serve` — the same control room in a browser, through textual-serve: every
  browser session gets its own `lemming replay` process on the database, read-only
  unless `--allow-live`. Listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from pathlib import Path

from lemming.tui.cli.options import add_db_arg, add_org_arg, add_sim_args, add_sim_flag, db_path, run_settings, tick_interval
from lemming.tui.cli.output import EXIT_FAIL, EXIT_OK, EXIT_USAGE, fail


def add_tui_args(p: argparse.ArgumentParser) -> None:
    """The options of the control room on a live run (`lemming`, `lemming tui`, `lemming run`)."""
    add_org_arg(p)
    add_db_arg(p)
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed for the sim provider")
    p.add_argument("--paused", action="store_true", help="open paused (space resumes, n steps)")
    p.add_argument("--interval", type=tick_interval, default=None, metavar="SECONDS", help="wait between ticks (default 1.0; + / - change it)")
    _add_screen_args(p)
    p.add_argument("--no-record", action="store_true", help="do not record the run in the database")
    p.add_argument("--no-watch", action="store_true", help="do not hot-reload agent files")
    p.add_argument("--keep", action="store_true",
                   help="run in the background, served, with the control room attached: quitting (q, ctrl+d) leaves the run going, "
                        "lemming attach comes back, X stops it")
    add_sim_flag(p)
    add_sim_args(p)


def cmd_tui(args: argparse.Namespace) -> int:
    """The control room on a new live run of the organisation (`lemming`, `lemming tui`).

    The run is recorded in the run store (--db, default ORG/.lemming/runs.db) unless
    --no-record; agent files hot-reload unless --no-watch.
    """
    from lemming.engine.org import OrgInvalid
    from lemming.engine.recorded_run import CONTROL_ROOM, build_engine
    from lemming.tui.app import ControlRoom

    if getattr(args, "keep", False):
        from lemming.tui.cli.remote import keep_and_attach

        return keep_and_attach(args)
    org_path = Path(getattr(args, "org", None) or ".")
    try:
        engine = build_engine(org_path, run_settings(args, CONTROL_ROOM))
    except OrgInvalid as e:
        lines = [f"lemming: the organisation at {org_path} cannot run:", *(f"  {p}" for p in e.problems)]
        print("\n".join(lines), file=sys.stderr)
        return EXIT_USAGE
    record: Path | bool | None = None
    if not getattr(args, "no_record", False):
        record = Path(args.db) if getattr(args, "db", None) else True  # True: the organisation's default database
    app = ControlRoom(engine, theme=getattr(args, "theme", None), record=record, watch=not getattr(args, "no_watch", False))
    code = app.run(mouse=not bool(getattr(args, "no_mouse", False)))
    if app.failures:
        print("The control room hit an error; the run was stopped at a tick boundary.", file=sys.stderr)
        print(app.failures[-1], file=sys.stderr)
    print(
        f"run {engine.run_id}: {engine.tick} ticks committed, total spend {engine.state.total_spend:.4g}"
        + (f" ({app.run_result})" if app.run_result else "")
        + (f"; recorded in {app.recording}" if app.recording else ""),
        file=sys.stderr,
    )
    if code is None:
        return EXIT_FAIL if app.failures else EXIT_OK
    return int(code)


async def _resolve(db: Path, run: str | None, *, latest: bool):  # noqa: ANN202
    """`run` (a prefix is enough) as its RunInfo; None when no run was named and not `latest`."""
    from lemming.engine.store import RunStore

    store = await RunStore.open(db, readonly=True)
    try:
        if run is not None:
            return await store.get_run(run)
        if not latest:
            return None
        return await store.last_run()
    finally:
        await store.close()


def _open_room(args: argparse.Namespace, *, run_id: str | None, follow: bool, can_fork: bool, allow_new: bool) -> int:
    from lemming.tui.replay_app import ReplayRoom

    app = ReplayRoom(
        db_path(args),
        run_id,
        follow=follow,
        at=getattr(args, "at", None),
        can_fork=can_fork,
        allow_new=allow_new,
        org=getattr(args, "org", None),
        seed=int(getattr(args, "seed", 0) or 0),
        interval=getattr(args, "interval", None),
        sim_tokens_per_s=getattr(args, "sim_tokens_per_s", None),
        theme=getattr(args, "theme", None),
    )
    code = app.run(mouse=not bool(getattr(args, "no_mouse", False)))
    if app.failures:
        print(app.failures[-1], file=sys.stderr)
    if app.mode == "live":
        e = app.engine
        print(
            f"run {e.run_id}: {e.tick} ticks committed, total spend {e.state.total_spend:.4g}"
            + (f" ({app.run_result})" if app.run_result else "")
            + f"; recorded in {db_path(args)}",
            file=sys.stderr,
        )
    return int(code or 0) if code is not None else (1 if app.failures else 0)


def cmd_replay(args: argparse.Namespace) -> int:
    from lemming.engine.store import StoreError

    db = db_path(args)
    run_id = None
    if args.run is not None:
        if not db.exists():
            return fail(f"no run database at {db} (record a run first: `lemming run` or `lemming`)")
        try:
            info = asyncio.run(_resolve(db, args.run, latest=False))
        except StoreError as e:
            return fail(str(e))
        run_id = info.id
        # A followed run grows: a tick past its end now may come.
        if args.at is not None and (args.at < 0 or (args.at > info.ticks and not args.follow)):
            return fail(f"run {run_id} has committed ticks up to {info.ticks}; cannot replay it at tick {args.at}")
    # Without a run: the picker, which waits for runs to appear if there are none yet.
    read_only = bool(args.no_fork)
    return _open_room(args, run_id=run_id, follow=args.follow, can_fork=not read_only, allow_new=not read_only)


def cmd_watch(args: argparse.Namespace) -> int:
    from lemming.engine.store import StoreError

    db = db_path(args)
    if not db.exists():
        return fail(f"no run database at {db}")
    try:
        info = asyncio.run(_resolve(db, args.run, latest=True))
    except StoreError as e:
        return fail(str(e))
    if info is None:
        return fail(f"no runs in {db} yet")
    return _open_room(args, run_id=info.id, follow=True, can_fork=False, allow_new=False)


# --- serve --------------------------------------------------------------------------------


def session_command(args: argparse.Namespace) -> str:
    """The shell command textual-serve starts for each browser session."""
    if getattr(args, "attach", None) is not None:
        from lemming.tui.cli.remote import attach_command

        return attach_command(args)
    argv = [sys.executable, "-m", "lemming.tui.cli", "replay", "--db", str(db_path(args).resolve())]
    org = getattr(args, "org", None)
    if org is not None:
        argv += ["--org", str(Path(org).resolve())]
    if getattr(args, "run", None):
        argv += [args.run, "--follow"]
    if not args.allow_live:
        argv.append("--no-fork")
    if getattr(args, "theme", None):
        argv += ["--theme", args.theme]
    return shlex.join(argv)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from textual_serve.server import Server
    except ImportError:
        return fail("lemming serve needs textual-serve: pip install 'lemming-control-room[serve]' (or textual-serve)")
    db = db_path(args)
    command = session_command(args)
    server = Server(command, host=args.host, port=args.port, title="LeMMing Control Room", public_url=args.public_url)
    where = "loopback only" if args.host in ("127.0.0.1", "localhost", "::1") else f"{args.host} — anyone who can reach it can watch"
    print(f"serving the control room for {db} on http://{args.host}:{args.port} ({where})", file=sys.stderr)
    print("each browser session opens read-only" + ("; live runs allowed (--allow-live)" if args.allow_live else ""), file=sys.stderr)
    print(f"over SSH: ssh -L {args.port}:127.0.0.1:{args.port} THIS-HOST, then open http://localhost:{args.port}", file=sys.stderr)
    server.serve()
    return EXIT_OK


# --- the parser ----------------------------------------------------------------------------


def _add_screen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-mouse", action="store_true", help="turn mouse reporting off (useful over SSH)")
    p.add_argument("--theme", default=None, help="lemming-dark, lemming-light, lemming-contrast or lemming-ansi")


def _add_room_args(p: argparse.ArgumentParser) -> None:
    add_org_arg(p)
    add_db_arg(p)
    _add_screen_args(p)


def register_tui(sub: argparse._SubParsersAction) -> None:
    """Add `tui`, the default command, to the `lemming` parser."""
    p = sub.add_parser("tui", help="open the control room (the default command)")
    add_tui_args(p)
    p.set_defaults(func=cmd_tui)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `replay`, `watch` and `serve` to the `lemming` parser."""
    p = sub.add_parser(
        "replay",
        help="open a recorded run in the control room, tick by tick (read-only; f forks)",
        description="Open RUN in REPLAY mode: the control room's panes as the run stood at the cursor's tick. "
        "←/→ one tick, PgUp/PgDn ten, home/end, g go to, p play, enter inspect, f fork a live run from the tick. "
        "Without RUN, pick one from the recorded runs.",
    )
    p.add_argument("run", nargs="?", metavar="RUN", help="run id or a unique prefix (default: choose from a list)")
    p.add_argument("--at", type=int, default=None, metavar="TICK", help="open at this tick (default: the last committed)")
    p.add_argument("--follow", action="store_true", help="follow the run as another process writes it (as `lemming watch`)")
    p.add_argument("--no-fork", action="store_true", help="a strictly read-only session: no forks, no new runs")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of a new run started from the picker")
    p.add_argument("--interval", type=tick_interval, default=None, metavar="SECONDS", help="tick interval of a fork or new run (default 1.0)")
    _add_room_args(p)
    add_sim_args(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "watch",
        help="follow a run another process is writing, read-only",
        description="Open RUN (default: the most recently active run) read-only and follow it as ticks land. "
        "It never writes to the database.",
    )
    p.add_argument("run", nargs="?", metavar="RUN", help="run id or a unique prefix (default: the most recently active)")
    _add_room_args(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser(
        "serve",
        help="serve the control room to a browser (textual-serve), read-only by default",
        description="Serve the control room over HTTP with textual-serve. Each browser session starts its own "
        "`lemming replay` on the database: the run picker, replay and watch, read-only unless --allow-live. "
        "Listens on 127.0.0.1; reach it from another machine through an SSH tunnel "
        "(ssh -L 8000:127.0.0.1:8000 HOST, then http://localhost:8000).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--run", default=None, metavar="RUN", help="open this run (followed) instead of the run picker")
    p.add_argument("--allow-live", action="store_true", help="let browser sessions fork runs and start live runs (with --attach: steer the run)")
    p.add_argument("--attach", nargs="?", const="", default=None, metavar="RUN", help="each session attaches to this served run (no RUN: the only one), read-only unless --allow-live")
    p.add_argument("--public-url", default=None, metavar="URL", help="the URL browsers reach the server at, if not http://HOST:PORT (a tunnel on another port, a proxy)")
    add_org_arg(p)
    add_db_arg(p)
    p.add_argument("--theme", default=None, help="theme of the browser sessions")
    p.set_defaults(func=cmd_serve)
