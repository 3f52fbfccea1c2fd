"""scripts/turn_floor.py (docs/performance.md's yardstick for the engine's cost per turn)
runs against today's code and prints its three parts and their sums."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "turn_floor.py"


def test_the_floor_script_runs_and_its_parts_add_up() -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "12", "4"], capture_output=True, text=True, timeout=60, check=True).stdout
    m = re.search(
        r"12 agents × 4 ticks, µs per turn: turn work ([\d.]+), pickle\+zstd ([\d.]+), SQLite ([\d.]+); "
        r"engine thread \(without SQLite\) ([\d.]+), all ([\d.]+)",
        out,
    )
    assert m, out
    work, encode, sql, thread, total = map(float, m.groups())
    assert work > 0 and encode > 0 and sql > 0
    assert abs(thread - (work + encode)) <= 0.11
    assert abs(total - (work + encode + sql)) <= 0.11
