"""Crash safety, proven by killing real processes.

One seeded run of the demo organisation is SIGKILLed at least 50 times — at random
instants from outside (during start-up and the resume fold, mid-tick while turns
stream, right after a commit) and at exact points from inside (mid-transaction,
right after COMMIT, inside a snapshot's transaction, while a snapshot is encoded,
at the WAL reset) — and resumed each time with `lemming resume`. Along the way the
recorded run is always a prefix of the uninterrupted one; at the end its canonical
export equals it: no message lost or duplicated, credits exact.

Then the disk fills up mid-run (RLIMIT_FSIZE on the running process: the writes fail
with EFBIG as they would with ENOSPC, no root or mount needed) and the database turns
read-only: the run stops at a tick boundary with one clear line, no traceback, and
resumes to the same result once the space or the permission is back.

All slow: `make test-faults`.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

LEMMING = [sys.executable, "-m", "lemming.tui.cli"]
KILLPOINT = [sys.executable, "-m", "tests.support.killpoint"]
TICKS = int(os.environ.get("LEMMING_CRASH_TICKS", "200"))
MIN_KILLS = int(os.environ.get("LEMMING_CRASH_KILLS", "60"))
SEED = 5
INTERNAL_POINTS = ["tx-begun", "tx-committed", "snapshot-tx", "snapshot-build", "wal-reset"]


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("LEMMING_")}
    e.update({"COLUMNS": "200", "NO_COLOR": "1", "PYTHONPATH": str(REPO)}, **extra)
    return e


#: Turns think 20 ms and stream at 3,000 tokens/s: a tick lasts ~60 ms, so kills land inside.
SLOW_ENV = env(LEMMING_SIM_LATENCY_MS="20", LEMMING_SIM_TOKENS_PER_S="3000")


def demo_org(base: Path) -> Path:
    root = base / "org"
    shutil.copytree(REPO / "agents", root / "agents")
    for f in ("models.json", "credits.json", "org.json"):
        if (REPO / f).exists():
            shutil.copy(REPO / f, root / f)
    return root


def lemming(*args, e: dict | None = None, timeout: float = 300, user: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LEMMING, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=e or env(),
        preexec_fn=_as_user(user),
    )


def _as_user(uid: int | None):
    if uid is None:
        return None

    def drop() -> None:
        os.setgid(uid)
        os.setuid(uid)

    return drop


def start(argv: list[str], e: dict, user: int | None = None) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=e,
                            preexec_fn=_as_user(user))


def db_runs(db: Path) -> list[tuple[str, int]]:
    """(id, last committed tick) of every run, read as any reader would."""
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return [(r[0], r[1] or 0) for r in con.execute("SELECT id, ticks FROM runs ORDER BY rowid")]
        finally:
            con.close()
    except sqlite3.Error:
        return []


def committed(db: Path) -> int:
    runs = db_runs(db)
    return runs[0][1] if runs else 0


def export(db: Path, run: str) -> list[str]:
    r = lemming("export", run, "--canonical", "--db", db)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def reference(base: Path, root: Path, ticks: int) -> list[str]:
    """The uninterrupted run's export, run on a copy of `root`: the demo's tools write
    files, and the run under test must start from the same files as this one did."""
    db = base / "reference.db"
    copy = base / "reference-org"
    shutil.copytree(root, copy)
    r = lemming("run", "--headless", "--org", copy, "--ticks", ticks, "--seed", SEED, "--db", db, "--no-watch")
    assert r.returncode == 0, r.stderr
    ((run, n),) = db_runs(db)
    assert n == ticks
    return export(db, run)


def upto_tick(lines: list[str], tick: int) -> list[str]:
    """The export's lines up to and including tick `tick`'s completion."""
    out = []
    for line in lines:
        out.append(line)
        d = json.loads(line)
        if d["type"] == "tick_completed" and d["tick"] == tick:
            return out
    raise AssertionError(f"tick {tick} is not in the export")


def assert_prefix(partial: list[str], ref: list[str], tick: int) -> None:
    """A killed run's record is the uninterrupted run's, up to its last committed tick."""
    if tick == 0:
        return
    got = upto_tick(partial, tick)
    want = upto_tick(ref, tick)
    assert got == want, _first_difference(got, want)


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"line {i}:\n got  {x[:400]}\n want {y[:400]}"
    return f"lengths {len(a)} != {len(b)}"


def one_clear_line(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, stderr


@pytest.fixture
def base() -> Path:
    d = Path(tempfile.mkdtemp(prefix="faults-crash-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_sixty_sigkills_over_one_run_then_the_export_equals_an_uninterrupted_run(base: Path) -> None:
    root = demo_org(base)
    ref = reference(base, root, TICKS)
    db = base / "killed.db"
    rng = random.Random(1234)
    kills: Counter[str] = Counter()
    runs_started = 0
    run_id: str | None = None
    last = 0
    t0 = time.monotonic()
    while sum(kills.values()) < MIN_KILLS:
        assert time.monotonic() - t0 < 1200, f"too slow: {kills}"
        if run_id is None:
            args = ["run", "--headless", "--org", root, "--ticks", TICKS, "--seed", SEED, "--db", db, "--no-watch"]
        else:
            args = ["resume", run_id, "--db", db, "--org", root]
        args = [str(a) for a in args]
        mode = "first" if run_id is None else rng.choice(["startup", "mid-tick", "mid-tick", "after-commit", "internal", "internal"])
        point = rng.choice(INTERNAL_POINTS + ["snapshot-tx", "snapshot-build"]) if mode == "internal" else None
        if point:
            k = 1 if point.startswith("snapshot") or point == "wal-reset" else rng.randint(1, 3)
            argv = [*KILLPOINT, "--snapshot-every", "3", "--kill", f"{point}:{k}", "--", *args]
        elif rng.random() < 0.5:
            argv = [*KILLPOINT, "--snapshot-every", "3", "--", *args]
        else:
            argv = [*LEMMING, *args]
        p = start(argv, SLOW_ENV)
        runs_started += 1
        c0 = committed(db)
        if point:
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                raise
        else:
            deadline = time.monotonic() + 120
            if mode == "startup":
                time.sleep(rng.uniform(0.0, 0.9))
            else:
                wait_for = c0 + (2 if mode == "first" else rng.randint(0, 2)) + (1 if mode == "after-commit" else 0)
                while committed(db) < wait_for and p.poll() is None:
                    assert time.monotonic() < deadline, "no progress"
                    time.sleep(0.002)
                if mode == "mid-tick":
                    time.sleep(rng.uniform(0.0, 0.08))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
        stderr = p.stderr.read() if p.stderr else ""
        if p.returncode == -signal.SIGKILL:
            kills[point or mode] += 1
        else:
            assert p.returncode == 0, (p.returncode, stderr)
        runs = db_runs(db)
        assert len(runs) <= 1, runs
        if runs:
            run_id = runs[0][0]
        now = committed(db)
        assert now >= last, f"committed ticks went back from {last} to {now}"
        last = now
        if now >= TICKS:
            break
        if runs_started % 10 == 0 and run_id:
            assert_prefix(export(db, run_id), ref, now)

    assert run_id is not None
    r = lemming("resume", run_id, "--db", db, "--org", root, e=SLOW_ENV)
    assert r.returncode == 0, r.stderr
    assert committed(db) == TICKS
    got = export(db, run_id)
    assert got == ref, _first_difference(got, ref)
    total = sum(kills.values())
    print(f"\n{total} SIGKILLs survived over one run of {TICKS} ticks in {time.monotonic() - t0:.0f}s: {dict(kills)}")
    assert total >= MIN_KILLS or last >= TICKS - 1
    assert len([m for m in kills if m in INTERNAL_POINTS]) >= 3, kills


def test_a_full_disk_mid_run_stops_at_a_tick_boundary_and_the_run_resumes(base: Path) -> None:
    root = demo_org(base)
    n = 60
    ref = reference(base, root, n)
    db = base / "full.db"
    p = start([*LEMMING, "run", "--headless", "--org", str(root), "--ticks", str(n), "--seed", str(SEED), "--db", str(db), "--no-watch"], SLOW_ENV)
    deadline = time.monotonic() + 120
    while committed(db) < 8:
        assert p.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    # No more room: every file the process writes may not grow past what it is now (+2 pages).
    sizes = [f.stat().st_size for f in (db, Path(f"{db}-wal")) if f.exists()]
    limit = max(sizes) + 8192
    resource.prlimit(p.pid, resource.RLIMIT_FSIZE, (limit, limit))
    p.wait(timeout=120)
    stderr = p.stderr.read()
    assert p.returncode == 1, (p.returncode, stderr)
    one_clear_line(stderr)
    assert "full" in stderr or "too large" in stderr or "disk" in stderr, stderr
    print(f"\ndisk full at tick {committed(db)}: {stderr.strip()}")
    stopped_at = committed(db)
    assert 8 <= stopped_at < n
    ((run, _),) = db_runs(db)
    assert_prefix(export(db, run), ref, stopped_at)
    # Space is back: the run resumes from its last committed tick and ends as if nothing happened.
    r = lemming("resume", run, "--db", db, "--org", root)
    assert r.returncode == 0, r.stderr
    assert f"resuming from tick {stopped_at}" in r.stdout
    got = export(db, run)
    assert got == ref, _first_difference(got, ref)


def _immutable(paths: list[Path], on: bool) -> None:
    for f in paths:
        if f.exists():
            subprocess.run(["chattr", "+i" if on else "-i", str(f)], check=True, capture_output=True)


def _read_only_method(probe: Path) -> str:
    """How to make a database read-only under a running writer, here.

    As root, permissions do not apply, but the immutable attribute does, and to open
    files as well: writes through the writer's own descriptors fail with EPERM, as on a
    file system remounted read-only. Otherwise chmod (which an open descriptor ignores).
    """
    if os.geteuid() != 0:
        return "chmod"
    probe.write_text("x")
    try:
        _immutable([probe], True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("running as root where chattr +i is not available: read-only cannot be simulated")
    _immutable([probe], False)
    probe.unlink()
    return "immutable"


def _make_read_only(method: str, db: Path, on: bool) -> None:
    files = [db, Path(f"{db}-wal")]
    if method == "immutable":
        _immutable(files, on)
    else:
        for f in files:
            if f.exists():
                f.chmod(0o444 if on else 0o644)
        db.parent.chmod(0o555 if on else 0o755)


def test_a_database_turned_read_only_mid_run_stops_it_in_one_line_and_it_resumes_once_writable(base: Path) -> None:
    root = demo_org(base)
    n = 40
    ref = reference(base, root, n)
    dbdir = base / "db"
    dbdir.mkdir()
    method = _read_only_method(dbdir / "probe")
    db = dbdir / "ro.db"
    p = start([*LEMMING, "run", "--headless", "--org", str(root), "--ticks", str(n), "--seed", str(SEED), "--db", str(db), "--no-watch"], SLOW_ENV)
    deadline = time.monotonic() + 120
    while committed(db) < 10:
        assert p.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    try:
        _make_read_only(method, db, True)
        if method == "immutable":
            # The next commit fails: the run stops at that tick boundary, in one line.
            p.wait(timeout=60)
            stderr = p.stderr.read()
            assert p.returncode == 1, (p.returncode, stderr)
            one_clear_line(stderr)
            print(f"\nread-only mid-run at tick {committed(db)}: {stderr.strip()}")
        else:
            # An open descriptor stays writable (POSIX): stop the writer at a boundary.
            time.sleep(0.3)
            p.send_signal(signal.SIGINT)
            p.wait(timeout=60)
            stderr = p.stderr.read()
            assert "Traceback" not in stderr, stderr
        stopped_at = committed(db)
        ((run, _),) = db_runs(db)
        assert 10 <= stopped_at < n
        assert_prefix(export(db, run), ref, stopped_at)
        # A new writer is refused in one clear line, and nothing changes.
        r = lemming("resume", run, "--db", db, "--org", root)
        assert r.returncode == 1, (r.stdout, r.stderr)
        one_clear_line(r.stderr)
        print(f"resume while read-only: {r.stderr.strip()}")
        assert "read-only" in r.stderr or "cannot" in r.stderr or "error" in r.stderr, r.stderr
        assert committed(db) == stopped_at
    finally:
        _make_read_only(method, db, False)
    # Writable again: it resumes and ends as the uninterrupted run did.
    r = lemming("resume", run, "--db", db, "--org", root)
    assert r.returncode == 0, r.stderr
    assert f"resuming from tick {stopped_at}" in r.stdout
    got = export(db, run)
    assert got == ref, _first_difference(got, ref)
