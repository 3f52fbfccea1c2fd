"""The tools on real files and real sandboxed processes (bubblewrap)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lemming.engine.engine import Engine
from lemming.engine.events import ToolCallFinished, TurnFinished
from lemming.engine.org import load_org
from lemming.engine.tools.files import PathRefused, TurnFiles, Workspace
from lemming.engine.tools.runner import ToolRunner
from lemming.engine.tools.sandbox import Limits, Mount, SandboxPolicy, run_sandboxed
from lemming.engine.tools.shell import CommandRefused, check_command
from tests.conftest import REPO, demo_copy, make_org
from tests.support import scripted_provider as sp
from tests.support.processes import no_transport_left_open

#: A subprocess transport collected after its event loop closed raises in its __del__
#: ("Event loop is closed"): here that fails the test, not just a warning in the summary.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap missing: run `make system-deps`")
ALL_TOOLS = ["memory_read", "memory_write", "file_read", "file_write", "file_list", "shell", "create_agent", "list_agents", "clock"]


def _org(tmp_path: Path, **settings):
    root = tmp_path / "org"
    make_org(root, {"ann": {"tools": ALL_TOOLS, "reads": ["bob"]}, "bob": {"tools": ["clock"]}})
    if settings:
        (root / "org.json").write_text(json.dumps(settings))
    return load_org(root)


def _run(runner: ToolRunner, tool: str, **args):
    shown, kept = asyncio.run(runner.run(tool, args))
    return shown


# --- files ------------------------------------------------------------------------


def test_file_tools_happy_path_stage_until_applied(tmp_path: Path) -> None:
    org = _org(tmp_path)
    r = ToolRunner(org, "ann", 1, {}, ALL_TOOLS)
    assert _run(r, "file_write", path="notes/a.md", content="hello\n")["ok"]
    assert _run(r, "file_read", path="notes/a.md")["result"]["content"] == "hello\n"
    listing = _run(r, "file_list", path="notes")["result"]["entries"]
    assert listing == [{"name": "a.md", "type": "file", "size": 6}]
    assert _run(r, "file_write", path="shared/team.md", content="x")["ok"]
    # Nothing on disk until the tick commits.
    assert not (org.root / "agents/ann/workspace/notes/a.md").exists()
    from lemming.engine.tools.files import apply_changes

    assert apply_changes(org.root, "ann", r.file_records()) == []
    assert (org.root / "agents/ann/workspace/notes/a.md").read_text() == "hello\n"
    assert (org.root / "shared/team.md").read_text() == "x"
    rec = {c["path"]: c for c in r.file_records()}
    assert rec["notes/a.md"]["sha256"] and "+hello" in rec["notes/a.md"]["diff"]


def test_memory_and_info_tools(tmp_path: Path) -> None:
    org = _org(tmp_path)
    r = ToolRunner(org, "ann", 7, {"k": 1}, ALL_TOOLS)
    assert _run(r, "memory_read", key="k")["result"]["value"] == 1
    assert _run(r, "memory_write", key="k", value=[2])["ok"]
    assert _run(r, "memory_read", key="k")["result"]["value"] == [2]
    assert r.memory_writes == [("k", [2])]
    assert _run(r, "clock")["result"] == {"tick": 7}
    assert _run(r, "list_agents")["result"] == {"agents": ["ann", "bob"]}


def test_bad_calls_are_results_not_crashes(tmp_path: Path) -> None:
    org = _org(tmp_path)
    bob = ToolRunner(org, "bob", 1, {}, ["clock"])
    assert "not granted" in _run(bob, "file_write", path="a", content="x")["error"]
    ann = ToolRunner(org, "ann", 1, {}, ALL_TOOLS + ["teleport"])
    assert "not a tool" in _run(ann, "teleport")["error"]
    assert "missing argument 'content'" in _run(ann, "file_write", path="a")["error"]
    assert "unknown argument" in _run(ann, "file_read", path="a", mode="r")["error"]
    assert "no such file" in _run(ann, "file_read", path="nope.txt")["error"]
    assert "may hold" in _run(ann, "file_write", path="big", content="x" * 300_000)["error"]


ESCAPES = ["../x", "../../etc/passwd", "/etc/passwd", "a/../../b", "shared/../../x", "C:\\x", "a\\..\\b", "a\x00b", "\n"]


@pytest.mark.parametrize("path", ESCAPES)
def test_escaping_paths_are_refused(tmp_path: Path, path: str) -> None:
    ws = Workspace(tmp_path / "ws", tmp_path / "shared")
    with pytest.raises(PathRefused):
        ws.locate(path)


def test_symlinks_that_lead_out_and_devices_are_refused(tmp_path: Path) -> None:
    org = _org(tmp_path)
    ws = org.root / "agents/ann/workspace"
    ws.mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("TOPSECRET")
    os.symlink(tmp_path / "secret.txt", ws / "link")
    os.symlink(tmp_path, ws / "out")
    os.symlink("/dev/zero", ws / "zero")
    r = ToolRunner(org, "ann", 1, {}, ALL_TOOLS)
    for path in ("link", "out/secret.txt", "zero"):
        res = _run(r, "file_read", path=path)
        assert not res["ok"] and "TOPSECRET" not in json.dumps(res), res
    assert not _run(r, "file_write", path="out/new.txt", content="x")["ok"]
    assert not (tmp_path / "new.txt").exists()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["..", ".", "", "shared", "a", "é", "ｆ", "\u202e", "x" * 300, "/", "~"]), st.text(max_size=8)), max_size=6), st.booleans())
def test_generated_paths_never_leave_the_workspace(tmp_path_factory, parts, absolute) -> None:
    base = tmp_path_factory.mktemp("gen")
    ws = Workspace(base / "ws", base / "shared")
    (base / "ws").mkdir()
    os.symlink(base, base / "ws" / "up")
    path = ("/" if absolute else "") + "/".join(parts)
    try:
        loc = ws.locate(path, root_ok=True)
    except PathRefused:
        return
    real = os.path.realpath(loc.host)
    assert real.startswith(os.path.realpath(base / "ws")) or real.startswith(os.path.realpath(base / "shared")), (path, real)


def test_create_agent_writes_a_valid_permissioned_resume(tmp_path: Path) -> None:
    org = _org(tmp_path)
    r = ToolRunner(org, "ann", 1, {}, ALL_TOOLS)
    assert "cannot grant" in _run(r, "create_agent", name="cy", tools=["teleport"])["error"]
    assert "only outboxes" in _run(r, "create_agent", name="cy", read_outboxes=["*"])["error"]
    assert "already exists" in _run(r, "create_agent", name="bob")["error"]
    assert _run(r, "create_agent", name="cy", title="Helper", tools=["clock"], read_outboxes=["ann"])["ok"]
    from lemming.engine.tools.create_agent import apply_created

    (change,) = r.file_records()
    assert apply_created(org.root, change) is None
    again = load_org(org.root)
    assert again.agents["cy"].resume.permissions.tools == ["clock"]


# --- the shell, in bubblewrap -------------------------------------------------------------


def test_allow_list() -> None:
    check_command("ls notes | head -n 3", ["ls", "head"])
    for bad in ("rm -rf x", "ls; rm x", "echo $(id)", "ls && python3 -c 1", "cat `which ls`"):
        with pytest.raises(CommandRefused):
            check_command(bad, ["ls", "cat", "echo", "head"])


@needs_bwrap
def test_shell_runs_sandboxed_on_a_copy_and_stages_its_changes(tmp_path: Path) -> None:
    org = _org(tmp_path, shell_allow=["*"])
    (org.root / "agents/ann/workspace").mkdir(parents=True)
    (org.root / "agents/ann/workspace/in.txt").write_text("one\n")
    r = ToolRunner(org, "ann", 1, {}, ALL_TOOLS)
    res = _run(r, "shell", command="cat in.txt; echo two > out.txt; echo s > shared/s.txt; touch /usr/x 2>&1; echo $HOME; env | sort")
    assert res["ok"], res
    out = res["result"]["output"]
    assert "one" in out and "Read-only" in out
    assert "KEY" not in out and "OPENAI" not in out
    assert set(res["result"]["changed"]) == {"out.txt", "shared/s.txt"}
    assert not (org.root / "agents/ann/workspace/out.txt").exists()  # staged only
    assert _run(r, "file_read", path="out.txt")["result"]["content"] == "two\n"


@needs_bwrap
def test_shell_cannot_reach_the_host_or_the_network(tmp_path: Path) -> None:
    org = _org(tmp_path, shell_allow=["*"])
    r = ToolRunner(org, "ann", 1, {}, ALL_TOOLS)
    outside = tmp_path / "outside.txt"
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.5)
    port = srv.getsockname()[1]
    res = _run(r, "shell", command=f"echo x > {outside}; ls /proc | grep -c . ; cat /proc/{os.getpid()}/environ; bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}' && echo CONNECTED")
    assert res["ok"], res
    assert not outside.exists()
    assert "CONNECTED" not in res["result"]["output"]
    with pytest.raises(TimeoutError):
        srv.accept()
    srv.close()


@needs_bwrap
def test_timeout_kills_the_group_and_floods_are_capped(tmp_path: Path) -> None:
    org = _org(tmp_path, shell_allow=["*"], shell_timeout_s=1, shell_output_bytes=1000)
    r = ToolRunner(org, "ann", 1, {}, ALL_TOOLS)
    t0 = time.monotonic()
    res = _run(r, "shell", command="sleep 30 & sleep 30")
    assert not res["ok"] and "timed out" in res["error"] and time.monotonic() - t0 < 10
    assert not _sleepers("30")
    res = _run(r, "shell", command="yes flood | head -c 5000000")
    assert res["ok"] and len(res["result"]["output"]) <= 1000 and "5000000" in res["result"]["output_cut"]


async def test_a_process_that_leaves_its_group_leaves_no_subprocess_transport_open(tmp_path: Path) -> None:
    """Unsandboxed (kind "none"), a program can start something in a session of its own that
    the group kill does not reach and that keeps the output pipe open: the run still closes
    its side (asyncio would wait for that pipe's EOF forever, and the transport would be
    collected after the event loop closed: "Exception ignored ... Event loop is closed")."""
    marker = f"37.{os.getpid()}{time.monotonic_ns() % 10**6}"
    try:
        async with no_transport_left_open():
            res = await run_sandboxed(
                ["/bin/sh", "-c", f"setsid sleep {marker} & echo started"],
                mounts=[Mount(tmp_path, "/workspace")],
                cwd="/workspace",
                policy=SandboxPolicy(kind="none", limits=Limits(timeout_s=1)),
            )
        assert res.output == "started\n" and res.timed_out  # the pipe stayed open until the timeout
        assert _sleepers(marker)  # it did leave the group
    finally:
        for pid in _sleepers(marker):
            os.kill(pid, signal.SIGKILL)


def test_without_bubblewrap_shell_says_how_to_install_it(tmp_path: Path, monkeypatch) -> None:
    from lemming.engine.tools import runner

    monkeypatch.setattr(runner, "bwrap_path", lambda: None)
    org = _org(tmp_path)
    res = _run(ToolRunner(org, "ann", 1, {}, ALL_TOOLS), "shell", command="ls")
    assert not res["ok"] and "apt-get install bubblewrap" in res["error"] and '"sandbox": "none"' in res["error"]


def _sleepers(marker: str) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd[:2] == [b"sleep", marker.encode()]:
                out.append(int(pid))
    return out


@needs_bwrap
def test_kill_9_of_the_run_leaves_no_process(tmp_path: Path) -> None:
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from lemming.engine.tools.sandbox import run_sandboxed, Mount, SandboxPolicy, Limits\n"
        "async def main():\n"
        "    t = asyncio.ensure_future(run_sandboxed(['/bin/sh','-c','sleep 417 & sleep 417 & sleep 417'], mounts=[Mount(Path(sys.argv[1]), '/workspace')], cwd='/workspace', policy=SandboxPolicy(limits=Limits(timeout_s=60))))\n"
        "    await asyncio.sleep(1.0); print('running', flush=True); await t\n"
        "asyncio.run(main())\n"
    )
    (tmp_path / "ws").mkdir()
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "ws")], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert p.stdout.readline().strip() == "running"
    deadline = time.monotonic() + 5
    while not _sleepers("417") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _sleepers("417")
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.monotonic() + 5
    while _sleepers("417") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _sleepers("417")


# --- in the engine ---------------------------------------------------------------------


def test_results_come_back_within_the_same_turn(tmp_path: Path, monkeypatch) -> None:
    sp.install(monkeypatch)
    root = tmp_path / "org"
    make_org(root, {"ann": {"model": "scripted", "tools": ["file_write", "file_read"]}}, models=sp.SCRIPTED_MODELS)
    sp.REPLIES["ann"] = {
        "outbox_entries": [{"kind": "message", "payload": {"text": "done"}}],
        "tool_calls": [{"tool": "file_write", "args": {"path": "a.txt", "content": "in-turn"}},
                       {"tool": "file_read", "args": {"path": "a.txt"}}, {"tool": "shell", "args": {"command": "ls"}}],
    }

    async def go():
        engine = Engine(load_org(root), seed=1)
        sub = engine.subscribe(tokens=False)
        await engine.run(ticks=1)
        return engine, sub.drain()

    engine, events = asyncio.run(go())
    rec = next(e.record for e in events if isinstance(e, TurnFinished))
    assert len(rec.rounds) == 2 and rec.status == "ok"
    # The second request held the results of the first reply's calls.
    assert "in-turn" in rec.prompt[-1]["content"] and "not granted" in rec.prompt[-1]["content"]
    assert [c["tool"] for c in rec.tool_calls] == ["file_write", "file_read", "shell"]
    assert sum(1 for e in events if isinstance(e, ToolCallFinished)) == 3
    assert (root / "agents/ann/workspace/a.txt").read_text() == "in-turn"
    # Each round was charged; the message was sent once.
    charges = [e for e in events if e.type == "credits_charged"]
    assert len(charges) == 2
    assert sum(1 for e in events if e.type == "message_committed") == 1


# --- kill -9 during a tool call, then `lemming resume` ------------------------------------

LEMMING = [sys.executable, "-m", "lemming.tui.cli"]
KILLPOINT = [sys.executable, "-m", "tests.support.killpoint"]


def _env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("LEMMING_")}
    e.update({"COLUMNS": "200", "NO_COLOR": "1", "PYTHONPATH": str(REPO)})
    return e


def _demo(base: Path, name: str) -> Path:
    return demo_copy(base / name)


def _cli(*args, argv=LEMMING) -> subprocess.CompletedProcess:
    return subprocess.run([*argv, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=300, env=_env())


def _export(db: Path) -> list[str]:
    import sqlite3

    (run,) = [r[0] for r in sqlite3.connect(db).execute("SELECT id FROM runs")]
    r = _cli("export", run, "--canonical", "--db", db)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def _files(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and ("workspace" in p.parts or "shared" in p.parts):
            out[str(p.relative_to(root))] = p.read_text()
    return out


@needs_bwrap
@pytest.mark.parametrize("point", ["tool-call:1", "tool-call:3", "files-written:2"])
def test_kill_9_during_a_tool_call_then_resume_gives_the_same_run(tmp_path: Path, point: str) -> None:
    ticks, seed = 14, 1
    ref_root = _demo(tmp_path, "ref")
    r = _cli("run", "--headless", "--org", ref_root, "--ticks", ticks, "--seed", seed, "--db", tmp_path / "ref.db", "--no-watch")
    assert r.returncode == 0, r.stderr
    reference = _export(tmp_path / "ref.db")
    assert any('"tool": "shell"' in line for line in reference)

    root = _demo(tmp_path, "killed")
    db = tmp_path / "killed.db"
    killed = _cli("--kill", point, "--", "run", "--headless", "--org", root, "--ticks", ticks, "--seed", seed, "--db", db, "--no-watch",
                  argv=KILLPOINT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    time.sleep(0.3)
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and _is_sandbox_of(pid, root)]
    import sqlite3

    (run,) = [r[0] for r in sqlite3.connect(db).execute("SELECT id FROM runs")]
    r = _cli("resume", run, "--db", db, "--org", root, "--force")
    assert r.returncode == 0, r.stderr
    got = _export(db)
    # The resumed run's record is the uninterrupted one's (a resume adds its own start).
    strip = lambda lines: [l for l in lines if '"type": "run_started"' not in l and '"type": "run_stopped"' not in l]  # noqa: E731
    assert strip(got) == strip(reference)
    assert _files(root) == _files(ref_root)


def _is_sandbox_of(pid: str, root: Path) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"bwrap" in cmd and b"lemming-shell-" in cmd


def test_the_stream_shows_each_call_and_its_result() -> None:
    from lemming.engine.events import ToolCallStarted
    from lemming.tui.model import tool_line

    assert tool_line(ToolCallStarted(3, "ann", 1, 0, "shell", '{"command": "ls"}')) == '⚙ shell {"command": "ls"}'
    assert tool_line(ToolCallFinished(3, "ann", 1, 0, "shell", False, "timed out")) == "  ✗ shell: timed out"


def test_an_explicit_unsandboxed_shell_runs_and_says_so(tmp_path: Path) -> None:
    org = _org(tmp_path, sandbox="none", shell_allow=["*"])
    r = ToolRunner(org, "ann", 1, {}, ALL_TOOLS)
    res = _run(r, "shell", command="echo hi > out.txt; echo s > shared/s.txt; cat out.txt; env")
    assert res["ok"], res
    assert res["result"]["sandbox"] == "none (org.json)"
    assert res["result"]["output"].startswith("hi\n") and "KEY" not in res["result"]["output"]
    assert set(res["result"]["changed"]) == {"out.txt", "shared/s.txt"}
