"""The `lemming` command, run as a user runs it: a subprocess, exit codes, output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, make_org

LEMMING = [sys.executable, "-m", "lemming.tui.cli"]


def lemming(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    e = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    return subprocess.run([*LEMMING, *args], cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout, env=e)


def test_help_everywhere() -> None:
    for cmd in ([], ["validate"], ["run"], ["run-once"], ["status"], ["inspect"], ["logs"], ["bootstrap"]):
        r = lemming(*cmd, "--help")
        assert r.returncode == 0 and "usage: lemming" in r.stdout, (cmd, r.stderr)


def test_validate_ok_and_problems(tmp_path: Path) -> None:
    r = lemming("validate", "--org", str(REPO))
    assert r.returncode == 0 and "ok" in r.stdout
    root = make_org(tmp_path / "o", {"a": {}})
    (root / "agents" / "b").mkdir()
    (root / "agents" / "b" / "resume.json").write_text('{"name": "b", "model": "sim", "schedule": {"run_every_n_ticks": -2}}')
    (root / "agents" / "c").mkdir()
    (root / "agents" / "c" / "resume.json").write_text("{")
    r = lemming("validate", "--org", str(root))
    assert r.returncode == 1
    lines = r.stdout.strip().splitlines()
    assert any(line.startswith("agents/b/resume.json: schedule.run_every_n_ticks:") for line in lines)
    assert any(line.startswith("agents/c/resume.json: line 1") for line in lines)
    assert "Traceback" not in r.stderr


def test_headless_run_prints_a_line_per_tick(tmp_path: Path) -> None:
    r = lemming("run", "--headless", "--ticks", "12", "--seed", "3", "--no-record", "--no-watch")
    assert r.returncode == 0, r.stderr
    ticks = [line for line in r.stdout.splitlines() if line.startswith("tick")]
    assert len(ticks) == 12 and "fired" in ticks[0] and "spend" in ticks[0]
    assert "run stopped at tick 12: completed" in r.stdout


def _json_run(seed: int, ticks: int = 200) -> list[dict]:
    # On a fresh copy of the demo organisation: its agents' tools write files, and a run
    # starts from the files its folder holds.
    import shutil

    from tests.conftest import demo_copy

    org = demo_copy()
    r = lemming("run", "--headless", "--org", str(org), "--ticks", str(ticks), "--seed", str(seed), "--json", "--no-record", "--no-watch", timeout=120)
    shutil.rmtree(org.parent, ignore_errors=True)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def _in_order(events: list[dict]) -> list[dict]:
    """Tool call events are printed as the calls run (programs take their time): each
    agent's own sequence of them is compared, everything else in order."""
    tools = sorted((e for e in events if e["type"].startswith("tool_call_")), key=lambda e: json.dumps(e, sort_keys=True))
    return [e for e in events if not e["type"].startswith("tool_call_")] + tools


def test_two_seeded_json_runs_are_identical_apart_from_wall_clock() -> None:
    from lemming.engine.events import canonical

    a = _json_run(7)
    b = _json_run(7)
    assert _in_order([canonical(e) for e in a]) == _in_order([canonical(e) for e in b])
    types = {e["type"] for e in a}
    assert {"run_started", "tick_completed", "message_committed", "agent_skipped", "run_stopped"} <= types
    broke = {e["agent"] for e in a if e["type"] == "agent_skipped" and e["reason"] == "broke"}
    assert broke
    # Messages flow along the permission graph.
    from lemming.engine.org import load_org

    org = load_org(REPO)
    for e in a:
        if e["type"] == "message_committed" and e["entry"]["agent"] != "operator":
            for r in e["entry"]["recipients"]:
                assert org.agents[r].resume.permissions.can_read(e["entry"]["agent"])


def test_bootstrap_is_idempotent_and_runnable(tmp_path: Path) -> None:
    target = tmp_path / "neworg"
    r = lemming("bootstrap", str(target))
    assert r.returncode == 0 and "created" in r.stdout
    resume = target / "agents" / "lead" / "resume.json"
    resume.write_text(resume.read_text().replace("Team lead", "Chief"))
    r = lemming("bootstrap", str(target))
    assert r.returncode == 0 and "created" not in r.stdout and "kept" in r.stdout
    assert "Chief" in resume.read_text()  # never overwritten
    assert lemming("validate", "--org", str(target)).returncode == 0
    r = lemming("run-once", "--org", str(target), "--no-record")
    assert r.returncode == 0 and "tick     1" in r.stdout


def test_status_and_inspect_and_unknown_agent(tmp_path: Path) -> None:
    r = lemming("status", "--org", str(REPO), "--json", "--db", str(tmp_path / "none.db"))
    assert r.returncode == 0
    data = json.loads(r.stdout)
    assert data["agents"]["manager"]["every"] == 1
    r = lemming("inspect", "analyst", "--org", str(REPO), "--db", str(tmp_path / "none.db"))
    assert r.returncode == 0 and "read by:" in r.stdout and "budget:" in r.stdout
    r = lemming("inspect", "nobody", "--org", str(REPO))
    assert r.returncode == 1 and "no agent 'nobody'" in r.stderr


def test_broken_org_exits_1_without_traceback(tmp_path: Path) -> None:
    r = lemming("run", "--headless", "--org", str(tmp_path), "--ticks", "1", "--no-record")
    assert r.returncode == 1 and "lemming bootstrap" in r.stderr and "Traceback" not in r.stderr


def test_snapshot_every_sets_how_often_the_store_snapshots(tmp_path: Path) -> None:
    import sqlite3

    def snapshots(*extra: str) -> list[int]:
        db = tmp_path / f"runs{len(extra)}.db"
        r = lemming("run", "--headless", "--ticks", "30", "--no-watch", "--db", str(db), *extra)
        assert r.returncode == 0, r.stderr
        with sqlite3.connect(db) as con:
            return [t for (t,) in con.execute("SELECT tick FROM snapshots ORDER BY tick")]

    assert all(t % 100 == 0 for t in snapshots())  # the default: every 100 ticks (or 3000 events)
    assert [t for t in snapshots("--snapshot-every", "5") if t] == [5, 10, 15, 20, 25, 30]
    bad = lemming("run", "--headless", "--ticks", "1", "--snapshot-every", "0")
    assert bad.returncode == 2 and "0 is not at least 1" in bad.stderr
