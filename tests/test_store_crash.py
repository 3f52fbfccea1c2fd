"""The store against real processes: SIGKILL mid-run, a reader beside a writer, secrets,
and the command line's answers to broken databases."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lemming.engine.store import RunStore
from lemming.engine.store.encoding import CompressionError, decompress
from lemming.engine.store.schema import APPLICATION_ID
from tests.conftest import REPO, make_org

LEMMING = [sys.executable, "-m", "lemming.tui.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEMMING_SIM_")}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "PYTHONPATH": str(REPO)}, **extra)
    return env


def lemming(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*LEMMING, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env or _env())


def start(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*LEMMING, *map(str, args)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env or _env()
    )


def org(tmp_path: Path) -> Path:
    return make_org(
        tmp_path / "org",
        {
            "alice": {"reads": ["bob"], "credits": {"max_credits": 10.0, "soft_cap": 9.999}},
            "bob": {"reads": ["alice", "carol"]},
            "carol": {"reads": ["*"], "every": 2, "offset": 1},
            "dave": {"reads": ["carol"], "every": 3},
        },
    )


def committed_ticks(db: Path) -> int:
    """What a reader sees: the last committed tick of the only run (0 before it starts)."""
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("SELECT max(ticks) FROM runs").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return 0
    return row[0] or 0 if row else 0


def _has_run_started(db: Path) -> bool:
    if not db.exists():
        return False
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM batches").fetchone()[0] > 0
        finally:
            con.close()
    except sqlite3.Error:
        return False


def wait_for_tick(db: Path, proc: subprocess.Popen, tick: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while committed_ticks(db) < tick:
        assert proc.poll() is None, f"the run ended early: {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.005)


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def canonical_export(db: Path, run: str) -> list[str]:
    r = lemming("export", run, "--canonical", "--db", db)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def run_ids(db: Path) -> list[dict]:
    r = lemming("runs", "--json", "--db", db)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_sigkill_at_several_points_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    root = org(tmp_path)
    n, seed = 16, 11
    ref_db = tmp_path / "ref.db"
    r = lemming("run", "--headless", "--org", root, "--ticks", n, "--seed", seed, "--db", ref_db, "--no-watch")
    assert r.returncode == 0, r.stderr
    (ref,) = run_ids(ref_db)
    reference = canonical_export(ref_db, ref["id"])
    assert sum(1 for line in reference if '"type": "tick_completed"' in line) == n

    db = tmp_path / "killed.db"
    # Each turn "thinks" 60 ms, so a kill a little after a commit lands inside a tick.
    slow = _env(LEMMING_SIM_LATENCY_MS="60")
    p = start("run", "--headless", "--org", root, "--ticks", n, "--seed", seed, "--db", db, "--no-watch", env=slow)
    wait_for_tick(db, p, 3)
    time.sleep(0.02)
    kill(p)
    (info,) = run_ids(db)
    assert info["status"] == "interrupted" and 3 <= info["ticks"] < n
    run = info["id"]

    # Resume; kill again mid-tick; then once more very soon after a commit.
    for after, pause in ((info["ticks"] + 3, 0.03), (info["ticks"] + 7, 0.0)):
        p = start("resume", run[:15], "--db", db, "--org", root, env=slow)
        wait_for_tick(db, p, after)
        time.sleep(pause)
        kill(p)
        (info,) = run_ids(db)
        assert info["status"] == "interrupted" and info["ticks"] >= after

    r = lemming("resume", run, "--db", db, "--org", root)
    assert r.returncode == 0, r.stderr
    assert "resuming from tick" in r.stdout
    (info,) = run_ids(db)
    assert (info["status"], info["ticks"], info["target_ticks"]) == ("completed", n, n)
    assert canonical_export(db, run) == reference
    # Resuming a finished run says so and does nothing.
    r = lemming("resume", run, "--db", db, "--org", root)
    assert r.returncode == 0 and "is complete" in r.stdout
    # --ticks goes further.
    r = lemming("resume", run, "--db", db, "--org", root, "--ticks", "2", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["type"] == "run_stopped"
    assert run_ids(db)[0]["ticks"] == n + 2


def test_a_run_killed_between_its_last_tick_and_its_stop_is_stopped_by_resume(tmp_path: Path) -> None:
    """Every tick committed, the stop not: resume records the stop (the run is not yet
    complete), and the record is the uninterrupted run's."""
    root = org(tmp_path)
    n, seed = 4, 3
    ref_db = tmp_path / "ref.db"
    r = lemming("run", "--headless", "--org", root, "--ticks", n, "--seed", seed, "--db", ref_db, "--no-watch")
    assert r.returncode == 0, r.stderr
    reference = canonical_export(ref_db, run_ids(ref_db)[0]["id"])

    db = tmp_path / "killed.db"
    r = subprocess.run([sys.executable, "-m", "tests.support.killpoint", "--kill", "stop-begun:1", "--",
                        "run", "--headless", "--org", str(root), "--ticks", str(n), "--seed", str(seed), "--db", str(db), "--no-watch"],
                       cwd=REPO, capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == -9, r.stderr
    (info,) = run_ids(db)
    assert info["status"] == "interrupted" and info["ticks"] == n
    r = lemming("resume", info["id"], "--db", db, "--org", root)
    assert r.returncode == 0, r.stderr
    assert "is complete" not in r.stdout
    (info,) = run_ids(db)
    assert (info["status"], info["ticks"]) == ("completed", n)
    assert canonical_export(db, info["id"]) == reference
    r = lemming("resume", info["id"], "--db", db, "--org", root)
    assert r.returncode == 0 and "is complete" in r.stdout


def test_a_run_killed_before_its_first_tick_resumes_from_the_start(tmp_path: Path) -> None:
    root = org(tmp_path)
    db = tmp_path / "early.db"
    ref_db = tmp_path / "ref.db"
    assert lemming("run", "--headless", "--org", root, "--ticks", 4, "--seed", 2, "--db", ref_db, "--no-watch").returncode == 0
    reference = canonical_export(ref_db, run_ids(ref_db)[0]["id"])
    # Killed inside tick 1: only its start is recorded.
    p = start("run", "--headless", "--org", root, "--ticks", 4, "--seed", 2, "--db", db, "--no-watch",
              env=_env(LEMMING_SIM_LATENCY_MS="2000"))
    deadline = time.monotonic() + 30
    while not _has_run_started(db):
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.01)
    kill(p)
    # Killed between writing its row and writing its start (made by hand: the window is tiny).
    from lemming.engine.org import load_org

    async def bare_row() -> None:
        store = await RunStore.open(db)
        try:
            await store.create_run(run_id="bare", org_root=root, seed=2, definitions_hash=load_org(root).definitions_hash(),
                                   target_ticks=4)
            await store.db.call(lambda c: c.execute("UPDATE runs SET writer='gone:1:1' WHERE id='bare'"))
        finally:
            await store.close()

    asyncio.run(bare_row())
    first, bare = run_ids(db)
    assert first["ticks"] == 0 and first["status"] == "interrupted"
    r = lemming("resume", "bare", "--db", db, "--org", root)
    assert r.returncode == 1 and "being recorded by gone:1:1" in r.stderr  # another host: cannot tell
    for run, extra in ((first["id"], ()), ("bare", ("--force",))):
        r = lemming("resume", run, "--db", db, "--org", root, *extra)
        assert r.returncode == 0, r.stderr
        assert canonical_export(db, run) == reference


def test_a_reader_process_sees_new_ticks_while_the_writer_runs(tmp_path: Path) -> None:
    root = org(tmp_path)
    db = tmp_path / "live.db"
    n = 14
    p = start("run", "--headless", "--org", root, "--ticks", n, "--seed", 4, "--db", db, "--no-watch",
              env=_env(LEMMING_SIM_LATENCY_MS="40"))
    try:
        wait_for_tick(db, p, 1)

        async def follow() -> list[tuple[int, int]]:
            seen: list[tuple[int, int]] = []
            store = await RunStore.open(db, readonly=True)
            try:
                (info,) = await store.list_runs()
                while p.poll() is None:
                    now = (await store.get_run(info.id)).ticks
                    if not seen or now != seen[-1][0]:
                        state = await store.state_at(info.id, now)
                        seen.append((now, state.tick))
                    await asyncio.sleep(0.01)
            finally:
                await store.close()
            return seen

        seen = asyncio.run(follow())
    finally:
        p.wait(timeout=60)
    assert p.returncode == 0, p.stderr.read() if p.stderr else ""
    ticks = [t for t, _ in seen]
    assert len(ticks) >= 3 and ticks == sorted(ticks) and ticks[0] < n
    assert all(t == folded for t, folded in seen)  # each state rebuilt while the writer was writing


def test_secrets_never_reach_the_database(tmp_path: Path) -> None:
    planted = {
        "OPENAI_API_KEY": "sk-planted-openai-0123456789abcdef",
        "ANTHROPIC_API_KEY": "sk-ant-planted-fedcba9876543210",
        "ORG_GATEWAY_TOKEN": "planted-gateway-token-5f3e2d1c",
    }
    root = make_org(
        tmp_path / "org",
        {
            "alice": {"reads": ["bob"]},
            "bob": {"reads": ["alice"], "model": "gateway"},
            "carol": {"reads": ["alice"], "model": "claude"},
        },
        models={
            "sim": {"provider": "sim", "model_name": "sim-1"},
            # Nothing listens on port 9: these calls fail fast, and fail is recorded.
            "gateway": {"provider": "openai", "model_name": "gw-1", "base_url": "http://127.0.0.1:9/v1",
                        "api_key_env": "ORG_GATEWAY_TOKEN", "max_attempts": 1, "timeout": 2},
            "claude": {"provider": "anthropic", "model_name": "claude-x", "base_url": "http://127.0.0.1:9",
                       "max_attempts": 1, "timeout": 2},
        },
    )
    db = tmp_path / "secrets.db"
    r = lemming("run", "--headless", "--org", root, "--ticks", 3, "--db", db, "--no-watch", env=_env(**planted))
    assert r.returncode == 0, r.stderr
    (info,) = run_ids(db)
    events = canonical_export(db, info["id"])
    assert any('"status": "provider"' in line for line in events)  # the failing calls were recorded
    # The raw files (the WAL too), every stored blob decompressed, and the full export.
    haystacks = [p.read_bytes() for p in tmp_path.glob("secrets.db*")]
    con = sqlite3.connect(db)
    try:
        # (not the contentless search index itself: it cannot be scanned, and holds no text; its shadow tables are)
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table' AND sql NOT LIKE 'CREATE VIRTUAL%'").fetchall():
            for row in con.execute(f"SELECT * FROM {table}"):
                for v in row:
                    if isinstance(v, bytes):
                        try:
                            haystacks.append(decompress(v))
                        except CompressionError:
                            haystacks.append(v)
                    elif isinstance(v, str):
                        haystacks.append(v.encode())
    finally:
        con.close()
    haystacks.append("\n".join(lemming("export", info["id"], "--db", db).stdout.splitlines()).encode())
    for name, secret in planted.items():
        for h in haystacks:
            assert secret.encode() not in h, f"{name} leaked into the store"
            assert secret[:12].encode() not in h, f"a prefix of {name} leaked into the store"


def test_the_command_line_answers_broken_databases_in_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(8192))
    newer = tmp_path / "newer.db"
    con = sqlite3.connect(newer)
    con.execute("CREATE TABLE runs (id TEXT)")
    con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    con.execute("PRAGMA user_version = 42")
    con.commit()
    con.close()
    cases = [
        (("runs", "--db", junk), "corrupt or not a LeMMing run database"),
        (("export", "x", "--db", junk), "corrupt or not a LeMMing run database"),
        (("resume", "x", "--db", junk), "corrupt or not a LeMMing run database"),
        (("runs", "--db", newer), "newer lemming"),
        (("fork", "x", "--at", "1", "--db", newer), "newer lemming"),
        (("export", "x", "--db", tmp_path / "none.db"), "no run database"),
    ]
    for args, message in cases:
        r = lemming(*args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) <= 2, r.stderr
    r = lemming("runs", "--db", tmp_path / "none.db")
    assert r.returncode == 0 and "no runs recorded yet" in r.stdout
    from lemming.tui.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for cmd in ("runs", "resume", "fork", "export"):
        assert "--db" in sub.choices[cmd].format_help(), cmd


def test_runs_lists_what_was_recorded(tmp_path: Path) -> None:
    root = org(tmp_path)
    db = tmp_path / "r.db"
    assert lemming("run", "--headless", "--org", root, "--ticks", 5, "--seed", 1, "--db", db, "--no-watch").returncode == 0
    (parent,) = run_ids(db)
    r = lemming("fork", parent["id"], "--at", 2, "--ticks", 2, "--db", db, "--org", root)
    assert r.returncode == 0, r.stderr
    rows = run_ids(db)
    assert [x["parent_run"] for x in rows] == [None, parent["id"]]
    assert rows[1]["fork_tick"] == 2 and rows[1]["ticks"] == 4 and rows[1]["status"] == "completed"
    assert {"id", "org_path", "ticks", "status", "spend", "parent_run"} <= set(rows[0])
    r = lemming("runs", "--db", db, env=_env(COLUMNS="80"))
    assert r.returncode == 0 and parent["id"] in r.stdout and rows[1]["id"] in r.stdout and "completed" in r.stdout
    assert f"…{parent['id'][-6:]}@2" in r.stdout
