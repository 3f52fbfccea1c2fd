"""A command-line agent's turn ends when its command exits, even when something the
command left running in the background still holds its stdout or stderr: the output
it printed is the reply, the turn is not a timeout, and the background child is ended
with the group (docs/cli-agents.md)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_org
from tests.test_cli_agents import cli_model, messages, run_org, script, turns, wait_gone

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")


def background(marker: str, redirect: str = "") -> str:
    """A shell fragment that leaves a child running for 300 s, named by `marker`."""
    return f'"{sys.executable}" -c "import time; time.sleep(300)" {marker} {redirect} &'


@pytest.mark.parametrize("held", ["stdout", "stderr"])
async def test_a_per_turn_command_that_leaves_a_background_child_ends_its_turn_when_it_exits(
    tmp_path: Path, held: str
) -> None:
    marker = f"bg-{held}-{os.getpid()}-{time.monotonic_ns()}"
    # The user's case was `sh -c "sleep 300 & echo hello"`: sh exits at once, its
    # background sleep holds the pipe. (Here the sleeper is named, to be found later;
    # "stderr": only stderr is held, stdout reaches EOF when sh exits.)
    redirect = ">/dev/null" if held == "stderr" else ""
    command = ["sh", "-c", f"{background(marker, redirect)} echo hello"]
    root = make_org(tmp_path / "o", {"tool": {"model": "bg"}}, models={"bg": cli_model(command, timeout=10)})
    t0 = time.monotonic()
    _, events = await run_org(root, 2)
    took = time.monotonic() - t0
    recs = turns(events, "tool")
    assert [r.status for r in recs] == ["ok", "ok"], [r.error for r in recs]
    assert recs[0].process["timed_out"] is False and recs[0].process["exit_code"] == 0
    assert [m.payload["text"] for m in messages(events, "tool")] == ["hello", "hello"]
    assert took < 6, f"two turns took {took:.1f} s: they waited for the background child"
    assert wait_gone(marker, 3) == []  # ended with the turn's group


async def test_a_stateful_process_that_exits_mid_turn_leaving_a_child_is_a_death_not_a_timeout(tmp_path: Path) -> None:
    marker = f"bg-stateful-{os.getpid()}-{time.monotonic_ns()}"
    loop = script(tmp_path, "loop", f"""
        import json, subprocess, sys
        n = 0
        for line in sys.stdin:
            n += 1
            if n == 2:  # leaves a child holding stdout and stderr, and exits
                subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "{marker}"])
                print(json.dumps({{"type": "delta", "text": "half a reply"}}), flush=True)
                sys.exit(5)
            print(json.dumps({{"type": "end", "text": f"turn {{n}}"}}), flush=True)
    """)
    root = make_org(
        tmp_path / "o", {"tool": {"model": "m"}},
        models={"m": cli_model([sys.executable, loop], mode="stateful", timeout=20, kill_grace=0.5)},
    )
    t0 = time.monotonic()
    _, events = await run_org(root, 3)
    took = time.monotonic() - t0
    recs = turns(events, "tool")
    assert [r.status for r in recs] == ["ok", "provider", "ok"]
    assert "exited with code 5 during the turn" in recs[1].error, recs[1].error
    assert recs[1].process["timed_out"] is False and recs[1].raw_output == "half a reply"
    assert recs[2].raw_output == "turn 1" and recs[2].process["restarted"] is True
    assert took < 10, f"the turn waited {took:.1f} s for a pipe the dead process's child held"
    assert wait_gone(marker, 3) == []
