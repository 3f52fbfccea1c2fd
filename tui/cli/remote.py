"""A served run, from another process: `attach`, `send`, `inbox`, `chat`, `ctl`, and
the serving side of `run --headless` (and `run --detach`).

Each finds the run through the organisation's `.lemming/control/` (engine/remote/
endpoint.py): RUN is a run id or a prefix of one, and may be left out when one run is
served. With no run served they say so in one line and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator

from rich.console import Console
from rich.markup import escape

from lemming.engine.remote import ControlClient, ControlServer, EndpointError, RemoteError, find_run
from lemming.engine.remote.server import served_at
from lemming.engine.resume import NO_MODEL_KEY
from lemming.tui.cli.options import add_org_arg
from lemming.tui.cli.output import EXIT_FAIL, EXIT_OK, EXIT_USAGE, err_console, fail

#: How long `run --detach` waits for the run to be served before it gives up.
DETACH_WAIT = 30.0
#: How long a command waits for the tick boundary that applies it before saying it is queued.
COMMAND_WAIT = 30.0


@contextlib.asynccontextmanager
async def serving(engine: Any, args: argparse.Namespace, console: Console, db: Any) -> AsyncIterator[ControlServer | None]:
    """Serve `engine` for the time of the block (unless --no-serve); a socket that cannot
    be set up is said in one line and the run goes on unserved."""
    if getattr(args, "no_serve", False):
        yield None
        return
    note = (lambda text: err_console().print(f"        [cyan]control:[/] {escape(text)}", highlight=False))
    server = ControlServer(engine, engine.org.root, store_path=db, note=note)
    try:
        await server.start()
    except (EndpointError, OSError) as e:
        err_console().print(f"[yellow]not served[/] ({escape(str(e))}); the run goes on without a control socket", highlight=False)
        yield None
        return
    if not getattr(args, "json", False):
        console.print(f"run [bold]{engine.run_id}[/] {escape(served_at(server))}", highlight=False)
    try:
        yield server
    finally:
        await server.close()


def start_in_background(org: Path, argv: list[str]) -> tuple[Any, Path] | str:
    """Start `lemming <argv>` (a headless, served run) in a new session with its output in
    a log under ORG/.lemming/logs; the served run and the log once it is served, or what
    went wrong in one line."""
    from lemming.engine.remote.endpoint import private_dir, served_runs

    logs = private_dir(org / ".lemming" / "logs")
    log = logs / time.strftime("run-%Y%m%d-%H%M%S.log")
    with open(log, "ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "lemming.tui.cli", *argv],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=os.getcwd(),
        )
    deadline = time.monotonic() + DETACH_WAIT
    while time.monotonic() < deadline:
        if child.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            return f"the run exited at once (code {child.returncode}): " + " | ".join(tail) + f" (log: {log})"
        for s in served_runs(org, clean=False)[0]:
            if s.pid == child.pid:
                return s, log
        time.sleep(0.1)
    return f"the run (pid {child.pid}) is not served after {DETACH_WAIT:g} s; see {log}"


def detach_run(args: argparse.Namespace) -> int:
    """`run --detach`: the same run headless in a new session, its output in a log file."""
    org = Path(args.org).resolve()
    argv = [a for a in sys.argv[1:] if a != "--detach"] if sys.argv[1:2] == ["run"] else ["run", "--org", str(org)]
    if "--headless" not in argv:
        argv.append("--headless")
    started = start_in_background(org, argv)
    if isinstance(started, str):
        return fail(started)
    s, log = started
    print(f"run {s.run_id} started in the background (pid {s.pid}), served on {s.socket}")
    print(f"  lemming attach {s.run_id}     the control room on it (ctrl+d detaches)")
    print(f"  lemming ctl stop              stops it; log: {log}")
    return EXIT_OK


def keep_and_attach(args: argparse.Namespace) -> int:
    """`lemming --keep`: the run in the background (headless, served), and the control
    room attached to it, so that quitting leaves the run going; X stops it."""
    from lemming.engine.recorded_run import CONTROL_ROOM

    org = Path(args.org).resolve()
    # The control room's pace (a tick a second, the sim at a readable rate) unless told otherwise.
    interval = args.interval if args.interval is not None else CONTROL_ROOM.interval
    argv = ["run", "--headless", "--org", str(org), "--seed", str(args.seed), "--interval", str(interval)]
    for flag in ("paused", "no_record", "no_watch", "sim"):
        if getattr(args, flag, False):
            argv.append("--" + flag.replace("_", "-"))
    if getattr(args, "db", None):
        argv += ["--db", str(Path(args.db).resolve())]
    sim = {"sim_tokens_per_s": CONTROL_ROOM.sim.get("tokens_per_s")}
    for attr in ("sim_tokens_per_s", "sim_latency_ms", "sim_malformed_rate"):
        value = getattr(args, attr, None)
        if value is None:
            value = sim.get(attr)
        if value is not None:
            argv += ["--" + attr.replace("_", "-"), str(value)]
    started = start_in_background(org, argv)
    if isinstance(started, str):
        return fail(started)
    s, log = started
    print(f"run {s.run_id} started in the background (pid {s.pid}); log: {log}", file=sys.stderr)
    return cmd_attach(argparse.Namespace(org=org, run=s.run_id, read_only=False,
                                         theme=getattr(args, "theme", None), no_mouse=getattr(args, "no_mouse", False)))


async def _connect(args: argparse.Namespace, client: str, *, read_only: bool = False) -> ControlClient:
    served = find_run(args.org, getattr(args, "run", None))
    return await ControlClient.connect(served.socket, client=client, read_only=read_only)


def _client_command(body: Any) -> Any:
    """A command body run with a connection; endpoint and run errors are one line, exit 1."""

    def cmd(args: argparse.Namespace) -> int:
        async def main() -> int:
            try:
                c = await _connect(args, args.command)
            except EndpointError as e:
                return fail(str(e))
            try:
                return await body(c, args)
            except RemoteError as e:
                return fail(str(e))
            finally:
                await c.close()

        return asyncio.run(main())

    return cmd


def _entry_line(e: dict[str, Any]) -> str:
    payload = e.get("payload")
    text = payload.get("text") if isinstance(payload, dict) and "text" in payload else json.dumps(payload, ensure_ascii=False)
    to = ",".join(e.get("recipients") or ()) or "all"
    kind = "" if e.get("kind") == "message" else f" [{e.get('kind')}]"
    return f"tick {e.get('tick'):>5}  {e.get('agent')} → {to}{kind}: {text}"


async def _agent(c: ControlClient, verb: str, name: str) -> dict[str, Any]:
    """The served run's row for agent `name` (model, status); RemoteError naming the
    run's agents when it has none of that name."""
    r = await c.request("status")
    for a in r["agents"]:
        if a["name"] == name:
            return a
    names = ", ".join(a["name"] for a in r["agents"]) or "none"
    raise RemoteError(f"{verb}: run {r['run_id']} has no agent {name!r}; its agents: {names}")


def _message(verb: str, words: list[str]) -> str:
    """The words of a message as one text; RemoteError when there is nothing in it."""
    text = " ".join(words)
    if not text.strip():
        raise RemoteError(f"{verb}: the message is empty; give the text to send")
    return text


async def _send(c: ControlClient, args: argparse.Namespace) -> int:
    if not args.all and not args.agent:
        return fail("name an agent, or --all", EXIT_USAGE)
    words = ([args.agent] if args.all and args.agent else []) + list(args.text)
    to = None if args.all else [args.agent]
    text = _message("send", words)
    if to is not None:
        await _agent(c, "send", args.agent)
    r = await c.request("inject", timeout=COMMAND_WAIT, text=text, to=to, kind=args.kind)
    print(f"sent to {'all agents' if to is None else args.agent}; they read it at tick {r['tick'] + 1}")
    return EXIT_OK


async def _inbox(c: ControlClient, args: argparse.Namespace) -> int:
    r = await c.request("inbox", agent=args.agent, limit=args.limit)
    msgs = r["messages"]
    if args.json:
        for m in msgs:
            print(json.dumps(m, ensure_ascii=False, sort_keys=True))
        return EXIT_OK
    if not msgs:
        print(f"{args.agent or 'the board'}: nothing new at tick {r['tick']}")
    for m in msgs:
        print(_entry_line(m))
    return EXIT_OK


async def _chat(c: ControlClient, args: argparse.Namespace) -> int:
    """Send, then wait for the agent's next reply (its messages, or its turn's outcome).

    An agent that cannot reply (model none, disabled, broke, retired) is said at once
    instead of waited for."""
    lines = [_message("chat", args.text)] if args.text else None
    _never_replies(await _agent(c, "chat", args.agent))
    await c.subscribe(tokens=False)
    while True:
        if lines is None:
            try:
                text = input(f"to {args.agent}> ")
            except EOFError:
                return EXIT_OK
            if not text.strip():
                continue
        else:
            text = lines[0]
        r = await c.request("inject", timeout=COMMAND_WAIT, text=text, to=[args.agent])
        sent_at = int(r["tick"])
        replied = False
        async for frame in c.events():
            if frame["t"] == "closed":
                return fail(str(frame.get("reason")))
            if frame["t"] != "events":
                continue
            for ev in frame["events"]:
                if ev["type"] == "message_committed" and ev["entry"]["agent"] == args.agent and ev["tick"] > sent_at:
                    print(_entry_line(ev["entry"]))
                    replied = True
                elif ev["type"] == "turn_finished" and ev["agent"] == args.agent and ev["tick"] > sent_at and ev["record"]["status"] != "ok":
                    print(f"{args.agent}: {ev['record'].get('error') or ev['record']['status']}")
                    replied = True
                elif ev["type"] == "tick_completed" and replied:
                    break
            else:
                continue
            break
        if lines is not None:
            return EXIT_OK


def _never_replies(agent: dict[str, Any]) -> None:
    """RemoteError saying why `agent` (a status row) would never answer a chat, and what to do."""
    name = agent["name"]
    if agent.get("model") == NO_MODEL_KEY:
        raise RemoteError(f"chat: {name} has model {NO_MODEL_KEY}: it never replies (lemming send {name} TEXT leaves it a message)")
    why = {
        "disabled": f"{name} is disabled: enable it with lemming ctl enable {name}",
        "broke": f"{name} is broke: it takes no turn until topped up (lemming ctl top-up {name} AMOUNT)",
        "retired": f"{name} is retired: its folder is gone from the organisation",
    }.get(agent["status"])
    if why:
        raise RemoteError(f"chat: {why}")


async def _ctl(c: ControlClient, args: argparse.Namespace) -> int:
    verb = args.verb
    fields: dict[str, Any] = {}
    op = {"top-up": "top_up"}.get(verb, verb)
    if verb == "status":
        r = await c.request("status")
        state = ("paused" if r["paused"] else "running") if r["running"] else ("stopping" if r.get("stopping") else "not started yet")
        print(f"run {r['run_id']}: tick {r['tick']}, {state}, interval {r['interval']:g} s, "
              f"spend {r['total_spend']:.6g}, {r['clients']} connected")
        for a in r["agents"]:
            print(f"  {a['name']:<20} {a['status']:<9} credits {a['credits']:>12.6g}  sent {a['sent']}")
        return EXIT_OK
    try:
        if verb == "interval":
            fields["seconds"] = _number(_arg(args, 0, "SECONDS"), "SECONDS", "a number of seconds from 0 to 3600")
        elif verb == "top-up":
            fields["agent"] = _arg(args, 0, "AGENT")
            fields["amount"] = _number(_arg(args, 1, "AMOUNT"), "AMOUNT", "a number of credits, e.g. 2.5")
        elif verb in ("enable", "disable"):
            fields["agent"] = _arg(args, 0, "AGENT")
        elif verb == "stop":
            fields["abort"] = args.abort
        elif args.args:
            return fail(f"ctl {verb} takes no arguments", EXIT_USAGE)
    except ValueError as e:
        return fail(f"ctl {verb}: {e}", EXIT_USAGE)
    fut = c.send(op, **fields)
    try:
        frame = await asyncio.wait_for(asyncio.shield(fut), COMMAND_WAIT)
    except asyncio.TimeoutError:
        print(f"{verb}: queued; it applies when the tick in flight ends")
        return EXIT_OK
    if frame.get("t") == "error":
        return fail(str(frame.get("error")))
    if verb == "stop":
        print(f"the run stopped at tick {frame.get('tick')} ({frame.get('reason')})")
    elif verb == "abort":
        print(f"abort: {frame.get('note')}")
    else:
        print(f"{verb}: {frame.get('note') or 'applied'} at tick {frame.get('tick')}")
    return EXIT_OK


def _number(text: str, name: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a number; give {what}") from None


def _arg(args: argparse.Namespace, i: int, name: str) -> str:
    if len(args.args) <= i:
        raise ValueError(f"needs {name}")
    return args.args[i]


def cmd_attach(args: argparse.Namespace) -> int:
    """The control room on a served run; q / ctrl+d detach, X stops the run."""
    try:
        served = find_run(args.org, args.run)
    except EndpointError as e:
        return fail(str(e))
    from lemming.tui.attach_app import AttachRoom, attach_remote

    async def main() -> tuple[int, AttachRoom | None, str]:
        try:
            remote = await attach_remote(served.socket, read_only=args.read_only)
        except (EndpointError, RemoteError) as e:
            return fail(str(e)), None, ""
        app = AttachRoom(remote, theme=getattr(args, "theme", None), socket=served.socket)
        code = await app.run_async(mouse=not args.no_mouse)
        await remote.aclose()
        return int(code or 0), app, remote.run_id

    code, app, run_id = asyncio.run(main())
    if app is not None:
        if app.failures:
            print(app.failures[-1], file=sys.stderr)
        print(f"run {run_id}: {app.goodbye()}", file=sys.stderr)
    return code


def attach_command(args: argparse.Namespace) -> str:
    """`lemming serve --attach [RUN]`: the shell command of each browser session."""
    import shlex

    argv = [sys.executable, "-m", "lemming.tui.cli", "attach", "--org", str(Path(args.org).resolve())]
    if args.attach:
        argv.append(args.attach)
    if not args.allow_live:
        argv.append("--read-only")
    if getattr(args, "theme", None):
        argv += ["--theme", args.theme]
    return shlex.join(argv)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `attach`, `send`, `inbox`, `chat` and `ctl` to the `lemming` parser."""
    p = sub.add_parser("attach", help="the control room on a served run (ctrl+d detaches and leaves it running)")
    add_org_arg(p)
    p.add_argument("run", nargs="?", default=None, metavar="RUN", help="a served run's id or prefix (default: the only one)")
    p.add_argument("--read-only", action="store_true", help="watch only: no command is sent")
    p.add_argument("--theme", default=None)
    p.add_argument("--no-mouse", action="store_true")
    p.set_defaults(func=cmd_attach)

    p = sub.add_parser("send", help="send a message from the operator to an agent of a served run")
    add_org_arg(p)
    p.add_argument("--run", default=None, metavar="RUN")
    p.add_argument("--all", action="store_true", help="to every agent")
    p.add_argument("--kind", default="message")
    p.add_argument("agent", nargs="?", default=None, metavar="AGENT")
    p.add_argument("text", nargs="+", metavar="TEXT")
    p.set_defaults(func=_client_command(_send))

    p = sub.add_parser("inbox", help="what an agent of a served run will read next (no AGENT: the latest messages)")
    add_org_arg(p)
    p.add_argument("--run", default=None, metavar="RUN")
    p.add_argument("agent", nargs="?", default=None, metavar="AGENT")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_client_command(_inbox))

    p = sub.add_parser("chat", help="send to an agent of a served run and print its next reply (no TEXT: a prompt, repeated)")
    add_org_arg(p)
    p.add_argument("--run", default=None, metavar="RUN")
    p.add_argument("agent", metavar="AGENT")
    p.add_argument("text", nargs="*", metavar="TEXT")
    p.set_defaults(func=_client_command(_chat))

    p = sub.add_parser("ctl", help="steer a served run: pause, resume, step, interval S, top-up A N, enable/disable A, abort, stop, status")
    add_org_arg(p)
    p.add_argument("--run", default=None, metavar="RUN")
    p.add_argument("verb", choices=["pause", "resume", "step", "interval", "top-up", "enable", "disable", "abort", "stop", "status"])
    p.add_argument("args", nargs="*")
    p.add_argument("--abort", action="store_true", help="stop: abort the tick in flight first")
    p.set_defaults(func=_client_command(_ctl))
