"""An MCP server that cannot start is told to the operator before any agent calls it:
plain `lemming validate` refuses a stdio command that is not an executable (the cli
agent's check), and a server that fails to start during a run is a recorded
`McpServerFailed` event, printed by a headless run and noticed in the control room."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import sys
from pathlib import Path

import pytest
from rich.console import Console

from lemming.engine.engine import Engine
from lemming.engine.events import McpServerFailed, RunStopped, TickCompleted, canonical, event_from_dict
from lemming.engine.org import OrgInvalid, load_org
from lemming.tui.cli.run import ProgressPrinter
from tests.conftest import make_org
from tests.test_cli_agents import lemming

SERVER = str(Path(__file__).parent / "support" / "mcp_server.py")


def org_with_server(root: Path, entry: dict) -> Path:
    make_org(root, {"ann": {"tools": ["time/*"]}, "bob": {}})
    (root / "org.json").write_text(json.dumps({"mcp_servers": {"time": entry}}))
    return root


@pytest.mark.parametrize(
    "command, message",
    [
        ("/no/such/mcp", "'/no/such/mcp' is not an executable file"),
        ("no-such-mcp-server", "'no-such-mcp-server' is not found on PATH; install it or give its full path"),
    ],
)
def test_plain_validate_refuses_an_mcp_command_that_is_not_an_executable(tmp_path: Path, command: str, message: str) -> None:
    root = org_with_server(tmp_path / "o", {"command": command})
    with pytest.raises(OrgInvalid) as err:
        load_org(root)
    assert err.value.problems == [f"org.json: mcp_servers.time.command: {message}"]
    out = lemming("validate", "--org", str(root))
    assert out.returncode == 1 and f"org.json: mcp_servers.time.command: {message}" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr
    # the same check as a cli agent's command
    (root / "models.json").write_text(json.dumps({"c": {"provider": "cli", "provider_config": {"command": [command]}}}))
    assert f"models.json: c.provider_config.command: {message}" in lemming("validate", "--org", str(root)).stdout


def test_plain_validate_passes_a_command_it_can_run(tmp_path: Path) -> None:
    root = org_with_server(tmp_path / "o", {"command": sys.executable, "args": [SERVER]})
    assert load_org(root).settings.mcp_servers["time"].command == sys.executable


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["crash", "url"])
async def test_a_server_that_fails_to_start_is_a_recorded_event_the_headless_run_prints(tmp_path: Path, kind: str) -> None:
    from lemming.engine.recorded_run import RecordedRun
    from lemming.engine.store import RunStore

    entry = (
        {"command": sys.executable, "args": [SERVER, "--crash-at-start"]} if kind == "crash"
        else {"url": f"http://127.0.0.1:{closed_port()}/mcp"}
    )
    root = org_with_server(tmp_path / "o", entry)
    engine = Engine(load_org(root), seed=1, run_id="mcp-fail")
    sub = engine.subscribe(tokens=False)
    db = tmp_path / "runs.db"
    async with await RecordedRun.record(engine, db):
        await engine.run(ticks=2)
    events = sub.drain()
    failed = [e for e in events if isinstance(e, McpServerFailed)]
    assert len(failed) == 1, failed
    ev = failed[0]
    assert ev.server == "time" and ev.error.startswith("failed to start") and ev.tick == 0
    assert ev.log == ".lemming/mcp/time.log"
    # told before the first tick, not when an agent first calls a tool
    assert events.index(ev) < next(i for i, e in enumerate(events) if isinstance(e, TickCompleted))
    # recorded, and read back as it was
    store = await RunStore.open(db, readonly=True)
    try:
        recorded = [e for e in await store.events("mcp-fail") if isinstance(e, McpServerFailed)]
    finally:
        await store.close()
    assert recorded == [ev]
    assert event_from_dict(ev.to_dict()) == ev and "at" not in canonical(ev.to_dict())
    # the headless run prints it
    buf = io.StringIO()
    ProgressPrinter(Console(file=buf, width=400, color_system=None), as_json=False, tokens=False).handle(events)
    line = next(x for x in buf.getvalue().splitlines() if "MCP server" in x)
    assert "MCP server time failed to start" in line and ".lemming/mcp/time.log" in line and "mcp_servers.time" in line


async def test_a_failure_while_the_run_is_paused_is_recorded_at_once(tmp_path: Path) -> None:
    """The control room does not wait for its servers: one that fails while the run is
    paused is recorded then (the engine wakes for it), not only at the next tick."""
    entry = {"command": sys.executable, "args": [SERVER, "--start-delay", "0.3", "--crash-at-start"]}
    root = org_with_server(tmp_path / "o", entry)
    engine = Engine(load_org(root), seed=1, mcp_wait=False, interval=0)
    sub = engine.subscribe(tokens=False)

    seen: list = []

    async def slow_tick_then_stop() -> None:
        for _ in range(100):
            await asyncio.sleep(0.1)
            seen.extend(sub.drain())
            if any(isinstance(e, McpServerFailed) for e in seen):
                break
        engine.stop()

    stopper = asyncio.create_task(slow_tick_then_stop())
    engine.pause()
    await engine.run()
    await stopper
    events = seen + sub.drain()
    kinds = [type(e) for e in events]
    assert McpServerFailed in kinds and kinds.index(McpServerFailed) < kinds.index(RunStopped)
    assert TickCompleted not in kinds  # still paused: no tick ran
