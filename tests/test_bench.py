"""`lemming bench --quick --json`: every line parses and carries the documented fields."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO

REQUIRED = {
    "engine": {"agents", "ticks", "us_per_turn", "turns_per_s", "persist"},
    "concurrency": {"agents", "latency_ms", "limit", "efficiency"},
    "store": {"events_per_s", "bytes_per_turn", "seek_ms_p95"},
    "ui": {"tokens_per_s", "lag_ms_p50", "lag_ms_p95", "cpu_share", "rss_growth_mb"},
    "replay": {"open_ms", "step_ms_p95"},
    "startup": {"first_paint_ms"},
}


def test_bench_quick_json_lines_carry_their_fields() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "tui.cli", "bench", "--quick", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    by_name: dict[str, list[dict]] = {}
    for line in lines:
        by_name.setdefault(line["bench"], []).append(line)
        assert line["quick"] is True
        assert "error" not in line and "not_landed" not in line, line
        missing = REQUIRED[line["bench"]] - line.keys()
        assert not missing, (line["bench"], missing)
        for k in REQUIRED[line["bench"]]:
            v = line[k]
            assert isinstance(v, (int, float)) and v == v, (k, v)  # a number, not NaN
    assert set(by_name) == set(REQUIRED)
    assert sorted(x["persist"] for x in by_name["engine"]) == [False, True]
