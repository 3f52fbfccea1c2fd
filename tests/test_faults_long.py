"""A long run: the demo organisation headless for 100,000 ticks (LEMMING_LONG_TICKS),
recorded, then resumed and replayed at its end.

Measured while it runs, from outside: the process's resident memory, the database's
size, the tick rate. Asserted: memory flat after warm-up, the database growing no
faster than linearly, the rate not degrading with the run's length (it did: inboxes
used to scan the whole history), and at the end a resume that continues the run and a
full replay from the events that equals the snapshot-accelerated one.

Figures are printed (pytest -s) and written to LEMMING_LONG_REPORT if set.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lemming.engine.store import RunStore
from tests.conftest import REPO

TICKS = int(os.environ.get("LEMMING_LONG_TICKS", "100000"))
SEED = 3

pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(os.environ.get("LEMMING_LONG_TIMEOUT", "5400")))]


def _env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("LEMMING_")}
    e.update({"PYTHONPATH": str(REPO), "NO_COLOR": "1"})
    return e


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def committed(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("SELECT max(ticks) FROM runs").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return 0
    return (row[0] or 0) if row else 0


def db_bytes(db: Path) -> int:
    return sum(Path(f"{db}{s}").stat().st_size for s in ("", "-wal") if Path(f"{db}{s}").exists())


@pytest.fixture
def base() -> Path:
    d = Path(tempfile.mkdtemp(prefix="faults-long-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_a_hundred_thousand_ticks_of_the_demo_organisation(base: Path) -> None:
    root = base / "org"
    shutil.copytree(REPO / "agents", root / "agents")
    for f in ("models.json", "credits.json", "org.json"):
        if (REPO / f).exists():
            shutil.copy(REPO / f, root / f)
    db = base / "long.db"
    p = subprocess.Popen(
        [sys.executable, "-m", "lemming.tui.cli", "run", "--headless", "--org", str(root), "--ticks", str(TICKS),
         "--seed", str(SEED), "--db", str(db), "--no-watch"],
        cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    samples: list[tuple[float, int, float, int]] = []  # (seconds, tick, rss MB, db bytes)
    t0 = time.monotonic()
    while p.poll() is None:
        time.sleep(1.0)
        rss = rss_mb(p.pid)
        if rss is not None and db.exists():
            samples.append((time.monotonic() - t0, committed(db), rss, db_bytes(db)))
    elapsed = time.monotonic() - t0
    stderr = p.stderr.read() if p.stderr else ""
    assert p.returncode == 0, stderr[-2000:]
    assert committed(db) == TICKS
    samples = [s for s in samples if s[1] > 0]
    assert len(samples) >= 10, "the run was too short to measure"

    def at(fraction: float) -> tuple[float, int, float, int]:
        return min(samples, key=lambda s: abs(s[1] - fraction * TICKS))

    def rate(a: float, b: float) -> float:
        sa, sb = at(a), at(b)
        return (sb[1] - sa[1]) / max(1e-9, sb[0] - sa[0])

    start, warm, mid, end = samples[0], at(0.2), at(0.5), samples[-1]
    report = {
        "ticks": TICKS,
        "seconds": round(elapsed, 1),
        "ticks_per_s": round(TICKS / elapsed, 1),
        "rate_10_20": round(rate(0.1, 0.2), 1),
        "rate_80_100": round(rate(0.8, 1.0), 1),
        "rss_mb": {"first": round(start[2], 1), "at_20pct": round(warm[2], 1), "at_50pct": round(mid[2], 1),
                   "last": round(end[2], 1), "max": round(max(s[2] for s in samples), 1)},
        "db_mb": {"at_20pct": round(warm[3] / 2**20, 1), "at_50pct": round(mid[3] / 2**20, 1),
                  "end": round(db_bytes(db) / 2**20, 1)},
    }

    # Memory: flat after warm-up (the first fifth of the run).
    growth = end[2] - warm[2]
    assert growth <= max(25.0, 0.25 * warm[2]), f"memory grew {growth:.1f} MB after warm-up: {report}"
    # The database: linear or better (bytes per tick in the second half no more than in the first).
    first_half = mid[3] / max(1, mid[1])
    second_half = (end[3] - mid[3]) / max(1, end[1] - mid[1])
    assert second_half <= 1.5 * first_half, f"the database grows faster than linearly: {report}"
    # The rate does not decay with the length of the run.
    assert report["rate_80_100"] >= 0.5 * report["rate_10_20"], f"the tick rate decays: {report}"

    # Resume at the end: 100 more ticks from the last committed state.
    t1 = time.monotonic()
    runs = subprocess.run([sys.executable, "-m", "lemming.tui.cli", "runs", "--json", "--db", str(db)],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    run_id = json.loads(runs.stdout.splitlines()[0])["id"]
    r = subprocess.run(
        [sys.executable, "-m", "lemming.tui.cli", "resume", run_id, "--db", str(db), "--org", str(root), "--ticks", "100"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming from tick {TICKS}" in r.stdout
    assert committed(db) == TICKS + 100
    report["resume_100_ticks_s"] = round(time.monotonic() - t1, 1)

    # Replay at the end: the state folded from every event equals the snapshot-accelerated one.
    async def replay() -> tuple[float, float]:
        store = await RunStore.open(db, readonly=True)
        try:
            t = time.monotonic()
            fast = await store.state_at(run_id, prompts=False)
            t_fast = time.monotonic() - t
            t = time.monotonic()
            full = await store.state_at(run_id, use_snapshots=False, prompts=False)
            t_full = time.monotonic() - t
            assert fast.tick == full.tick == TICKS + 100
            assert fast.fingerprint() == full.fingerprint()
            mid_state = await store.state_at(run_id, tick=TICKS // 2, prompts=False)
            assert mid_state.tick == TICKS // 2
            return t_fast, t_full
        finally:
            await store.close()

    t_fast, t_full = asyncio.run(replay())
    report["replay_s"] = {"from_snapshot": round(t_fast, 2), "from_events": round(t_full, 1)}
    print("\nlong run:", json.dumps(report))
    out = os.environ.get("LEMMING_LONG_REPORT")
    if out:
        Path(out).write_text(json.dumps(report, indent=2))
