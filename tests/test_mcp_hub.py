"""The MCP hub against real MCP servers (tests/support/mcp_server.py, written with the SDK):
stdio and streamable HTTP on 127.0.0.1; schema checks before the call; timeouts, caps,
crashes and restarts as recorded errors; secrets kept out; no server outlives a kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lemming.engine.mcp import McpHub, McpServerSpec, ServerState, tool_granted
from lemming.engine.mcp.config import expand_env_refs, grant_problems

SERVER = str(Path(__file__).parent / "support" / "mcp_server.py")


def stdio(*extra: str, **fields) -> McpServerSpec:
    return McpServerSpec(command=sys.executable, args=[SERVER, *extra], **fields)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_call_lists_checks_and_answers(tmp_path):
    async def go():
        hub = McpHub({"t": stdio()}, root=tmp_path, log_dir=tmp_path / "logs")
        try:
            assert hub.status()[0].state is ServerState.STOPPED  # started only when first needed
            ok = await hub.call("t/add", {"a": 2, "b": 40})
            assert ok.ok and ok.text == "42" and ok.error is None
            tools = {t.name: t for t in await hub.tools("t")}
            assert tools["add"].description == "Add two integers."
            assert tools["add"].input_schema["required"] == ["a", "b"]
            assert hub.status()[0].state is ServerState.READY and hub.status()[0].calls == 1

            bad = await hub.call("t/add", {"a": "two", "b": 2})
            assert not bad.ok and "refused before the call" in bad.error and "'a'" in bad.error
            missing = await hub.call("t/add", {"a": 1})
            assert not missing.ok and "'b' is a required property" in missing.error
            assert hub.status()[0].calls == 1  # refused calls never reached the server

            assert "has no tool 'nope'" in (await hub.call("t/nope", {})).error
            unknown = await hub.call("other/add", {})
            assert "no MCP server 'other'" in unknown.error and "(t)" in unknown.error
            assert "must be a JSON object" in (await hub.call("t/add", [1, 2])).error
        finally:
            await hub.aclose()

    run(go())


def test_results_are_capped_and_slow_calls_time_out(tmp_path):
    async def go():
        hub = McpHub({"t": stdio(timeout=1.0, max_result_chars=500)}, root=tmp_path)
        try:
            hub.start()  # a call waits for a starting server only as long as a call may take (1 s)
            await hub.wait_started()
            big = await hub.call("t/big", {"n": 5000})
            assert big.ok and big.truncated
            assert big.text.startswith("x" * 500) and "[cut: 4500 more characters]" in big.text
            started = time.monotonic()
            slow = await hub.call("t/slow", {"seconds": 30})
            assert not slow.ok and "no answer within 1 s" in slow.error
            assert time.monotonic() - started < 10
            # The server is still usable after a timed-out call.
            assert (await hub.call("t/echo", {"text": "still here"})).text == "still here"
        finally:
            await hub.aclose()

    run(go())


def test_crash_is_a_recorded_error_then_restart_with_backoff(tmp_path):
    async def go():
        hub = McpHub({"t": stdio()}, root=tmp_path, log_dir=tmp_path / "logs")
        try:
            assert (await hub.call("t/add", {"a": 1, "b": 1})).ok
            crash = await hub.call("t/crash", {})
            assert not crash.ok and "stopped during a call to 'crash'" in crash.error
            assert "crashing on purpose" in crash.error  # the server's last stderr line says why
            status = hub.status()[0]
            assert status.state is ServerState.CRASHED and status.restarts == 1
            meanwhile = await hub.call("t/add", {"a": 1, "b": 1})
            assert not meanwhile.ok and "restarting in" in meanwhile.error
            await asyncio.sleep(0.6)  # the first backoff is 0.5 s
            again = await hub.call("t/add", {"a": 1, "b": 1})
            assert again.ok and again.text == "2"
            assert hub.status()[0].state is ServerState.READY
        finally:
            await hub.aclose()

    run(go())


def test_a_server_that_cannot_start_is_an_error_not_a_hang(tmp_path):
    async def go():
        hub = McpHub(
            {
                "dead": stdio("--crash-at-start", timeout=5.0),
                "nothing": McpServerSpec(command="no-such-mcp-server-anywhere", timeout=5.0),
            },
            root=tmp_path,
            log_dir=tmp_path / "logs",
        )
        try:
            dead = await hub.call("dead/add", {"a": 1, "b": 1})
            assert not dead.ok and "MCP server 'dead'" in dead.error
            assert "refusing to start" in dead.error or "failed to start" in dead.error
            nothing = await hub.call("nothing/add", {})
            assert not nothing.ok and "MCP server 'nothing'" in nothing.error
            assert all(s.state is ServerState.CRASHED for s in hub.status())
        finally:
            await hub.aclose()

    run(go())


def test_garbage_on_stdout_is_an_error(tmp_path):
    script = tmp_path / "garbage.py"
    script.write_text("import sys, time\nfor _ in range(50):\n    print('this is not json-rpc', flush=True)\n    time.sleep(0.05)\n")

    async def go():
        hub = McpHub({"g": McpServerSpec(command=sys.executable, args=[str(script)], timeout=3.0)}, root=tmp_path)
        try:
            got = await hub.call("g/anything", {})
            assert not got.ok and "MCP server 'g'" in got.error
        finally:
            await hub.aclose()

    run(go())


def test_environment_holds_only_what_the_entry_lists(tmp_path, monkeypatch):
    environ = {"PATH": os.environ["PATH"], "MY_TOKEN": "tok-123", "OPENAI_API_KEY": "sk-secret"}

    async def go():
        spec = stdio(env={"GRANTED": "${env.MY_TOKEN}", "PLAIN": "p"})
        hub = McpHub({"t": spec}, root=tmp_path, environ=environ)
        try:
            assert (await hub.call("t/env", {"name": "GRANTED"})).text == "tok-123"
            assert (await hub.call("t/env", {"name": "PLAIN"})).text == "p"
            assert (await hub.call("t/env", {"name": "OPENAI_API_KEY"})).text == "<unset>"
            assert (await hub.call("t/env", {"name": "MY_TOKEN"})).text == "<unset>"
        finally:
            await hub.aclose()

    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-in-the-run")  # the run's own env is not passed on
    run(go())

    async def missing():
        hub = McpHub({"t": stdio(env={"X": "${env.NOT_SET_ANYWHERE}"})}, root=tmp_path, environ={})
        try:
            got = await hub.call("t/add", {"a": 1, "b": 1})
            assert not got.ok and "${env.NOT_SET_ANYWHERE}" in got.error and "not set" in got.error
        finally:
            await hub.aclose()

    run(missing())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_streamable_http_server(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, SERVER, "--http", str(port)], stderr=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)

        async def go():
            hub = McpHub({"web": McpServerSpec(url=f"http://127.0.0.1:{port}/mcp")}, root=tmp_path)
            try:
                got = await hub.call("web/add", {"a": 20, "b": 22})
                assert got.ok and got.text == "42"
                assert hub.status()[0].transport == "http"
                refused = await hub.call("web/add", {"a": 1})
                assert not refused.ok and "refused before the call" in refused.error
            finally:
                await hub.aclose()

        run(go())
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_no_server_outlives_a_kill_9_of_the_run(tmp_path):
    pidfile = tmp_path / "pids"
    runner = tmp_path / "runner.py"
    runner.write_text(textwrap.dedent(f"""
        import asyncio, sys
        from lemming.engine.mcp import McpHub, McpServerSpec
        async def main():
            hub = McpHub({{"t": McpServerSpec(command=sys.executable, args=[{SERVER!r}, "--pidfile", {str(pidfile)!r}])}}, root=".")
            got = await hub.call("t/add", {{"a": 1, "b": 2}})
            print("ready", got.text, flush=True)
            await asyncio.sleep(600)
        asyncio.run(main())
    """))
    proc = subprocess.Popen([sys.executable, str(runner)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready 3"
        server_pid = int(pidfile.read_text().split()[0])
        assert alive(server_pid)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert wait_gone(server_pid), "the MCP server outlived the run"


def test_close_stops_every_server(tmp_path):
    pidfile = tmp_path / "pids"

    async def go():
        hub = McpHub({"a": stdio("--pidfile", str(pidfile)), "b": stdio("--pidfile", str(pidfile))}, root=tmp_path)
        await hub.call("a/add", {"a": 1, "b": 1})
        await hub.call("b/add", {"a": 1, "b": 1})
        pids = [int(p) for p in pidfile.read_text().split()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
        await hub.aclose()
        assert all(s.state is ServerState.CLOSED for s in hub.status())
        assert "the run is ending" in (await hub.call("a/add", {"a": 1, "b": 1})).error
        return pids

    pids = run(go())
    assert all(wait_gone(p) for p in pids)


def test_grants_and_config_checks():
    grants = ["file_read", "time/*", "calc/add"]
    assert tool_granted(grants, "time", "get_current_time")
    assert tool_granted(grants, "calc", "add")
    assert not tool_granted(grants, "calc", "sub")
    assert not tool_granted(grants, "file", "read")
    assert expand_env_refs("Bearer ${env.T}", {"T": "x"}) == "Bearer x"
    servers = {"time": McpServerSpec(command="mcp-server-time")}
    assert grant_problems("agents/a/resume.json", ["file_read", "time/*", "time/x"], servers) == []
    assert grant_problems("agents/a/resume.json", ["git/*", "time/"], servers) == [
        "agents/a/resume.json: permissions.tools: 'git/*' names MCP server 'git', which is not in org.json mcp_servers (time)",
        "agents/a/resume.json: permissions.tools: 'time/': name a tool or use \"time/*\"",
    ]
    with pytest.raises(ValueError, match="either"):
        McpServerSpec()
    with pytest.raises(ValueError, match="either"):
        McpServerSpec(command="x", url="http://127.0.0.1/mcp")
    with pytest.raises(ValueError, match="http"):
        McpServerSpec(url="ftp://example/mcp")


def test_validate_reports_mcp_configuration_problems(tmp_path):
    from lemming.engine.org import OrgInvalid, load_org

    agent = tmp_path / "agents" / "a"
    agent.mkdir(parents=True)
    (agent / "resume.json").write_text(
        '{"name": "a", "model": "sim", "permissions": {"read_outboxes": [], "tools": ["git/*"]}}'
    )
    (tmp_path / "org.json").write_text('{"mcp_servers": {"time": {"command": "x", "url": "http://h/mcp"}}}')
    with pytest.raises(OrgInvalid) as err:
        load_org(tmp_path)
    assert "org.json: mcp_servers.time: give either" in "\n".join(err.value.problems)
    (tmp_path / "org.json").write_text('{"mcp_servers": {"bad name": {"command": "y"}}}')
    with pytest.raises(OrgInvalid) as err:
        load_org(tmp_path)
    assert "'bad name' is not a server name" in "\n".join(err.value.problems)
    (tmp_path / "org.json").write_text('{"mcp_servers": {"time": {"command": "mcp-server-time"}}}')
    with pytest.raises(OrgInvalid) as err:
        load_org(tmp_path)
    assert err.value.problems == [
        "agents/a/resume.json: permissions.tools: 'git/*' names MCP server 'git', which is not in org.json mcp_servers (time)"
    ]
    (agent / "resume.json").write_text(
        '{"name": "a", "model": "sim", "permissions": {"read_outboxes": [], "tools": ["time/*"]}}'
    )
    org = load_org(tmp_path)
    assert org.settings.mcp_servers["time"].command == "mcp-server-time"


def test_status_shows_what_the_control_room_lists(tmp_path):
    """Background start, then per server: phase, pid (the server's own process), uptime,
    calls, errors and last latency; a server that never came up is "failed" with its log."""

    async def go():
        hub = McpHub({"t": stdio(), "dead": stdio("--crash-at-start")}, root=tmp_path, log_dir=tmp_path / "logs")
        try:
            hub.start()
            assert {s.name: s.phase for s in hub.status()} == {"t": "starting", "dead": "starting"}
            await hub.wait_started()
            t, dead = hub.status()
            assert t.phase == "up" and t.pid is not None and alive(t.pid) and t.uptime_s is not None
            assert "mcp_server.py" in Path(f"/proc/{t.pid}/cmdline").read_text()
            assert [tool.name for tool in t.tools][:2] == ["add", "echo"] and not t.tools_cached
            assert dead.phase == "failed" and "refusing to start" in (dead.error or "")
            assert dead.log_path == str(tmp_path / "logs" / "dead.log") and dead.retry_in_s is not None
            assert (await hub.call("t/add", {"a": 1, "b": 2})).ok
            assert not (await hub.call("t/add", {"a": "x", "b": 2})).ok
            t = hub.status()[0]
            assert (t.calls, t.errors) == (1, 1) and t.last_latency_s is not None and t.last_latency_s < 5
            await hub.call("t/crash", {})
            assert hub.status()[0].phase == "restarting" and hub.status()[0].pid is None
        finally:
            await hub.aclose()
        assert {s.phase for s in hub.status()} == {"stopped"}
        # The next hub (the next run) knows the tools before its server starts.
        later = McpHub({"t": stdio()}, root=tmp_path, log_dir=tmp_path / "logs")
        cached = later.status()[0]
        assert cached.phase == "not started" and cached.tools_cached and cached.tools[0].name == "add"

    run(go())


def test_a_run_that_ends_while_a_server_is_still_starting_leaves_nothing(tmp_path):
    """Servers start in the background: a run may end first. The hub does not wait for the
    start-up, and the half-started server's process is gone."""
    pidfile = tmp_path / "logs" / "slow.pid"  # the launcher writes it before it execs the server

    async def go():
        hub = McpHub({"slow": stdio("--start-delay", "30")}, root=tmp_path, log_dir=tmp_path / "logs")
        hub.start()
        deadline = time.monotonic() + 20
        while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:  # there, not serving yet
            await asyncio.sleep(0.05)
        assert hub.status()[0].phase == "starting"
        started = time.monotonic()
        await hub.aclose()
        return time.monotonic() - started

    took = run(go())
    assert took < 5  # not the 30 s start-up, nor the 5 s grace for a server that answers
    assert wait_gone(int(pidfile.read_text().split()[0]))
