"""A served run and its clients: real sockets, real processes.

A headless run is started as a subprocess (`lemming run --headless`, which serves its
run), clients connect to it over its Unix socket, detach, reattach, are killed with
SIGKILL; the run's own behaviour is checked through the protocol and its database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lemming.engine.events import CommandApplied, TurnFinished
from lemming.engine.remote import ControlClient, ControlServer, EndpointError, RemoteEngine, RemoteError, find_run, served_runs
from lemming.engine.remote import endpoint, protocol
from lemming.engine.store import RunStore, default_db_path
from tests.support.app_driver import sim_engine
from tests.support.processes import alive

LEMMING = [sys.executable, "-c", "import sys; from lemming.tui.cli import main; sys.exit(main())"]


def lemming(*args: str, org: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*LEMMING, *args, "--org", str(org)], capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def serving(org_dir: Path, *options: str):
    """A headless run of `org_dir` in its own process, served; yields (process, Served)."""
    log = open(org_dir.parent / "run.log", "w")
    proc = subprocess.Popen([*LEMMING, "run", "--headless", "--org", str(org_dir), *options],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        found = None
        while time.monotonic() < deadline and found is None:
            assert proc.poll() is None, (org_dir.parent / "run.log").read_text()
            found = next((s for s in served_runs(org_dir)[0] if s.pid == proc.pid), None)
            time.sleep(0.05)
        assert found is not None, "the run was not served in time"
        yield proc, found
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


@pytest.fixture
def served(org_dir: Path):
    """A headless run of `org_dir` in its own process, served; yields (process, Served)."""
    with serving(org_dir, "--interval", "0.05", "--sim-tokens-per-s", "2000") as run:
        yield run


async def status(path: str) -> dict:
    c = await ControlClient.connect(path, client="test")
    try:
        return await c.request("status")
    finally:
        await c.close()


async def wait_tick(path: str, above: int, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = (await status(path))["tick"]
        if t > above:
            return t
        await asyncio.sleep(0.05)
    raise AssertionError(f"the run did not pass tick {above}")


# --- the endpoint ------------------------------------------------------------------------


def test_socket_is_private_and_the_peer_check_names_the_uid(tmp_path: Path) -> None:
    path = tmp_path / "ctl" / "x.sock"
    sock = endpoint.listen(path)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        a, b = socket.socketpair(socket.AF_UNIX)
        with a, b:
            pid, uid, gid = endpoint.peer_credentials(a)
            assert (pid, uid, gid) == (os.getpid(), os.getuid(), os.getgid())
        assert endpoint.check_peer(os.getuid()) is None
        refusal = endpoint.check_peer(os.getuid() + 1)
        assert refusal is not None and f"uid {os.getuid() + 1}" in refusal
        # A live socket is never replaced; a dead one (its run killed) is.
        with pytest.raises(EndpointError, match="already served"):
            endpoint.listen(path)
    finally:
        sock.close()
    endpoint.listen(path).close()


async def test_another_users_connection_is_refused(org_dir: Path) -> None:
    engine = sim_engine(org_dir, interval=0.0)
    notes: list[str] = []
    async with ControlServer(engine, org_dir, note=notes.append, allowed_uid=os.getuid() + 1) as server:
        with pytest.raises(EndpointError, match=f"served to uid {os.getuid() + 1} only"):
            await ControlClient.connect(server.path)
    assert any("refused a connection" in n for n in notes)


def test_a_stale_endpoint_is_cleaned_up(org_dir: Path) -> None:
    d = endpoint.private_dir(endpoint.control_dir(org_dir))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (d / "old.json").write_text(json.dumps({"run_id": "old", "pid": dead.pid, "socket": str(d / "old.sock")}))
    runs, removed = served_runs(org_dir)
    assert runs == [] and removed == [f"removed the stale endpoint of run old (process {dead.pid} is gone)"]
    assert not (d / "old.json").exists()
    with pytest.raises(EndpointError, match="no run is served"):
        find_run(org_dir, None)
    # A run killed with SIGKILL and not reaped yet (a zombie), or whose pid was reused: its
    # process looks alive, but nothing listens on its socket any more.
    dead_socket = d / "zombie.sock"
    endpoint.listen(dead_socket).close()
    (d / "zombie.json").write_text(json.dumps({"run_id": "zombie", "pid": os.getpid(), "socket": str(dead_socket)}))
    with pytest.raises(EndpointError, match="removed the stale endpoint of run zombie"):
        find_run(org_dir, None)
    assert not dead_socket.exists()


def test_verbs_without_a_served_run_say_so_and_fail(org_dir: Path) -> None:
    for argv in (["ctl", "pause"], ["send", "alice", "hi"], ["inbox", "alice"], ["attach"]):
        r = lemming(*argv, org=org_dir)
        assert r.returncode == 1, argv
        assert "no run is served" in " ".join(r.stderr.split()), r.stderr


# --- two processes -----------------------------------------------------------------------


async def test_pause_step_send_and_stop_across_processes(served, org_dir: Path) -> None:
    proc, run = served
    c = await ControlClient.connect(run.socket, client="test")
    try:
        r = await c.request("pause", timeout=20)
        assert [e["type"] for e in r["events"]] == ["command_applied", "run_paused"]
        assert r["events"][0]["args"]["by"].endswith(f"/test:{os.getpid()}")
        held = (await c.request("status"))["tick"]
        await asyncio.sleep(0.5)
        assert (await c.request("status"))["tick"] == held  # pause holds the tick
        await c.request("step", timeout=20)
        after = await wait_tick(run.socket, held)
        await asyncio.sleep(0.5)
        assert after == held + 1 and (await c.request("status"))["tick"] == held + 1  # exactly one

        # send: delivered to exactly the named agent, read at the next tick it fires
        state, _ = await c.subscribe(tokens=False)
        sent = lemming("send", "bob", "the", "secret", "word", "is", "plover", org=org_dir)
        assert sent.returncode == 0 and "sent to bob" in sent.stdout, sent.stderr
        inbox = lemming("inbox", "bob", "--json", org=org_dir)
        assert [json.loads(line)["payload"]["text"] for line in inbox.stdout.splitlines()][-1] == "the secret word is plover"
        assert "plover" not in lemming("inbox", "alice", org=org_dir).stdout
        await c.request("step", timeout=20)
        fired: list[tuple[str, int]] = []
        while "bob" not in [a for a, _ in fired]:
            frame = await asyncio.wait_for(c.frames.get(), 20)
            for d in frame.get("events", []):
                if d["type"] == "turn_finished":
                    assert d["record"]["prompt"] == [] and d["record"]["prompt_hash"]  # lean: fetched on demand
                    fired.append((d["agent"], d["tick"]))
        prompts = {a: json.dumps((await c.request("turn", agent=a, tick=t))["record"]["prompt"]) for a, t in fired}
        assert "plover" in prompts["bob"]
        assert not [a for a, p in prompts.items() if a != "bob" and "plover" in p]

        bad = lemming("ctl", "top-up", "nobody", "5", org=org_dir)
        assert bad.returncode == 1 and "no such agent: nobody" in bad.stderr
        stop = lemming("ctl", "stop", org=org_dir)
        assert stop.returncode == 0 and "the run stopped at tick" in stop.stdout, stop.stderr
    finally:
        await c.close()
    assert proc.wait(20) == 0
    assert not Path(run.socket).exists() and not run.pointer.exists()
    # Every command is an event in the store, with who sent it.
    async with await RunStore.open(default_db_path(org_dir), readonly=True) as store:
        events = await store.events(run.run_id)
    applied = [e for e in events if isinstance(e, CommandApplied)]
    assert [e.command for e in applied] == ["pause", "step", "inject", "step"]
    assert all("by" in e.args for e in applied)
    assert [e for e in events if isinstance(e, TurnFinished)][-1].tick == held + 2  # stopped at a boundary


async def test_a_killed_client_does_not_disturb_the_run(served) -> None:
    proc, run = served
    script = (
        "import asyncio, sys\n"
        "from lemming.engine.remote import ControlClient\n"
        "async def main():\n"
        f"    c = await ControlClient.connect({run.socket!r}, client='victim')\n"
        "    await c.subscribe()\n"
        "    print('subscribed', flush=True)\n"
        "    await asyncio.sleep(3600)\n"
        "asyncio.run(main())\n"
    )
    victim = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert victim.stdout is not None and victim.stdout.readline().strip() == "subscribed"
    before = (await status(run.socket))["tick"]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    t = await wait_tick(run.socket, before + 5)
    assert t > before + 5 and proc.poll() is None
    # ...and a new window attaches afterwards, with the history that fills its panes.
    remote = await RemoteEngine.attach(run.socket)
    try:
        assert remote.running and remote.tick >= t
        assert any(isinstance(e, TurnFinished) for e in remote.history)
        assert (await status(run.socket))["clients"] == 2  # this one and the status probe
    finally:
        await remote.aclose()


def test_the_wire_form_reads_back_as_the_event_without_its_prompt(org_dir: Path) -> None:
    from lemming.engine.events import event_from_dict

    engine = sim_engine(org_dir, interval=0.0)
    sub = engine.subscribe()
    asyncio.run(engine.run(ticks=4))
    events = sub.drain()
    kinds = set()
    for ev in events:
        d = protocol.wire(ev)
        full = ev.to_dict()
        if "record" in full:
            assert d["record"]["prompt"] == [] and full["record"]["prompt"]
            full["record"]["prompt"] = []
        assert json.loads(json.dumps(d)) == json.loads(json.dumps(full))
        assert event_from_dict(json.loads(json.dumps(d))).type == ev.type
        kinds.add(ev.type)
    assert {"turn_finished", "message_committed", "token_delta", "tick_completed"} <= kinds


# --- bad input, slow clients (in-process server, real socket) ----------------------------


async def test_bad_frames_get_one_line_and_the_run_goes_on(org_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "HELLO_TIMEOUT", 0.3)
    engine = sim_engine(org_dir, interval=0.01)
    async with ControlServer(engine, org_dir) as server:
        task = asyncio.create_task(engine.run())
        # a client that says nothing
        r, w = await asyncio.open_unix_connection(str(server.path))
        line = await asyncio.wait_for(r.readline(), 5)
        assert "said nothing" in json.loads(line)["error"] and await r.read() == b""
        w.close()
        # a wrong version
        r, w = await asyncio.open_unix_connection(str(server.path))
        w.write(b'{"op": "hello", "version": 99}\n')
        assert "speaks version 1" in json.loads(await r.readline())["error"]
        w.close()
        c = await ControlClient.connect(server.path)
        c.writer.write(b"this is not json\n")
        c.writer.write(b'["a list"]\n')
        frames = [await asyncio.wait_for(c.frames.get(), 5) for _ in range(2)]
        assert "not a JSON line" in frames[0]["error"] and "is a JSON object" in frames[1]["error"]
        with pytest.raises(RemoteError, match="unknown op 'fly'"):
            await c.request("fly")
        with pytest.raises(RemoteError, match="inject: text must be a non-empty string"):
            await c.request("inject", text=3)
        with pytest.raises(RemoteError, match="no such agent: zed"):
            await c.request("inject", text="hi", to=["zed"], timeout=10)
        with pytest.raises(RemoteError, match="inbox: no such agent"):
            await c.request("inbox", agent="zed")
        c.writer.write(b'{"op": "status", "pad": "' + b"x" * (protocol.MAX_FRAME + 10) + b'"}\n')
        frame = await asyncio.wait_for(c.frames.get(), 5)
        assert "over the limit" in frame["error"]
        await c.close()
        ro = await ControlClient.connect(server.path, read_only=True)
        with pytest.raises(RemoteError, match="pause: this connection is read-only"):
            await ro.request("pause")
        assert (await ro.request("status"))["running"]
        await ro.close()
        t = engine.tick
        await asyncio.sleep(0.2)
        assert engine.running and engine.tick > t
        engine.stop()
        await task


async def test_a_stalled_client_is_dropped_then_resynchronised(org_dir: Path) -> None:
    engine = sim_engine(org_dir, interval=0.0)
    notes: list[str] = []
    async with ControlServer(engine, org_dir, note=notes.append, queue_bytes=64 << 10) as server:
        remote = await RemoteEngine.attach(server.path)
        sub = remote.subscribe()
        # The window does not read: its socket fills, its queue passes the bound.
        remote.client.reader._transport.pause_reading()  # type: ignore[attr-defined]
        asked = remote.client.send("status")  # its answer must survive the dropped queue
        task = asyncio.create_task(engine.run(ticks=200))
        await task  # the run never waited for the stalled window
        assert engine.tick == 200
        assert any("fell behind" in n for n in notes)
        remote.client.reader._transport.resume_reading()  # type: ignore[attr-defined]
        assert (await asyncio.wait_for(asked, 10))["t"] == "ok"
        follow = asyncio.create_task(remote.run())
        reason = await asyncio.wait_for(follow, 10)
        assert reason.startswith("the run stopped: completed")
        assert remote.resyncs >= 1 and remote.tick == 200
        assert remote.state.credits == engine.state.credits  # the mirror ends where the run did
        assert len(sub)


# --- the attached control room ------------------------------------------------------------


async def test_the_attached_room_steers_and_detaching_leaves_the_run(org_dir: Path) -> None:
    from lemming.tui.attach_app import AttachRoom

    engine = sim_engine(org_dir, interval=0.05)
    async with ControlServer(engine, org_dir) as server:
        task = asyncio.create_task(engine.run())
        await asyncio.sleep(0.3)
        remote = await RemoteEngine.attach(server.path)
        app = AttachRoom(remote, wall_clock=False, cursor_blink=False, animations=False, config_dir=org_dir / "cfg")
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("space")
            for _ in range(50):
                if engine.paused:
                    break
                await pilot.pause(0.1)
            assert engine.paused
            await pilot.pause(0.3)
            assert app.main.status.mode == "PAUSED"
            # The timeline says who paused it.
            assert [n for n in app.view.next_row().operator if n.startswith("⏸ (") and n.endswith("/attach)")]
            held = engine.tick
            await pilot.press("n")
            for _ in range(50):
                if engine.tick == held + 1:
                    break
                await pilot.pause(0.1)
            await pilot.pause(0.3)
            assert engine.tick == held + 1 and remote.tick == held + 1
            # The inspector shows a turn whole: its prompt is fetched from the run.
            from lemming.tui.screens.inspector import InspectorScreen

            name = app.main.selected_agent
            await pilot.press("enter")
            await pilot.pause(0.5)
            assert isinstance(app.screen, InspectorScreen)
            assert remote.state.last_turn[name].prompt == engine.state.last_turn[name].prompt != []
            await pilot.press("escape")
            await pilot.pause(0.2)
            await pilot.press("ctrl+d")
            await pilot.pause(0.2)
        assert app.detached and "the run goes on" in app.goodbye()
        await asyncio.sleep(0.2)
        assert engine.running
        engine.resume()
        await asyncio.sleep(0.3)
        assert engine.tick > held + 1
        engine.stop()
        await task


def test_serve_attach_sessions_are_read_only_unless_allowed(org_dir: Path) -> None:
    from lemming.tui.cli import build_parser
    from lemming.tui.cli.rooms import session_command

    args = build_parser().parse_args(["serve", "--org", str(org_dir), "--attach", "abc"])
    assert session_command(args).endswith(f"attach --org {org_dir.resolve()} abc --read-only")
    args = build_parser().parse_args(["serve", "--org", str(org_dir), "--attach", "--allow-live"])
    assert session_command(args).endswith(f"attach --org {org_dir.resolve()}")


def test_keep_runs_in_the_background_and_quitting_the_room_leaves_it(org_dir: Path) -> None:
    """`lemming --keep`: the control room attached to a background run; n steps it, q
    detaches (the run is still served, at the tick it was stepped to), ctl stop ends it."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [*LEMMING, "--keep", "--paused", "--org", str(org_dir), "--sim-tokens-per-s", "0"])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    seen = bytearray()

    def read_until(predicate, timeout: float) -> bool:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate(bytes(seen)):
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                seen.extend(chunk)
        return predicate(bytes(seen))

    background = None
    try:
        assert read_until(lambda s: b"PAUSED" in s, 60), bytes(seen[-2000:])
        (background,) = served_runs(org_dir)[0]
        assert background.pid != pid  # the run is another process than the room
        assert asyncio.run(status(background.socket))["tick"] == 0  # --paused reached the run
        os.write(fd, b"n")
        assert asyncio.run(wait_tick(background.socket, 0)) == 1
        os.write(fd, b"q")
        assert read_until(lambda s: b"the run goes on" in s, 30), bytes(seen[-2000:])
        _, code = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(code) == 0
        (still,) = served_runs(org_dir)[0]
        assert still.pid == background.pid and asyncio.run(status(still.socket))["tick"] == 1
        r = lemming("ctl", "stop", org=org_dir)
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and alive(background.pid):
            time.sleep(0.1)
        assert not alive(background.pid), "ctl stop left the background run going"
        assert served_runs(org_dir)[0] == []
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        if background is not None and alive(background.pid):
            os.kill(background.pid, signal.SIGKILL)
        os.close(fd)

