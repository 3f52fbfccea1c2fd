"""`lemming bench --quick --json`: every line parses and carries the documented fields."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

REQUIRED = {
    "engine": {"agents", "ticks", "us_per_turn", "turns_per_s", "persist"},
    "concurrency": {"agents", "latency_ms", "limit", "efficiency"},
    "store": {"events_per_s", "bytes_per_turn", "seek_ms_p95"},
    "ui": {"tokens_per_s", "lag_ms_p50", "lag_ms_p95", "cpu_share", "rss_growth_mb"},
    "attach": {"lag_ms_p50", "lag_ms_p95", "embedded_lag_ms_p50", "embedded_lag_ms_p95", "ms_per_tick_0", "ms_per_tick_n"},
    "replay": {"open_ms", "step_ms_p95"},
    "startup": {"first_paint_ms"},
    "providers": {"agents", "latency_ms", "wall_per_tick_s", "ideal_s", "efficiency", "cpu_ms_per_call", "failed"},
    "graph": {"layout_ms_40", "layout_ms_100", "draw_ms_40"},
    "search": {"search_ms_p50", "search_ms_p95", "search_ms_first", "indexed_rows", "catch_up_s"},
    "memory": {"rss_mb_first", "rss_mb_middle", "rss_mb_last", "rss_growth_mb", "ticks_per_s"},
    "tools": {"file_read_us", "file_write_us", "shell_echo_ms", "bwrap_startup_ms", "process_ms"},
    "structured": {"turns", "contract_rate_off", "contract_rate_on", "repaired_rate_off", "repaired_rate_on",
                   "schema_sent_rate_on", "us_per_turn_off", "us_per_turn_on"},
    "cli": {"agents", "per_turn_tick_ms", "per_turn_turn_ms", "stateful_tick_ms", "stateful_turn_ms"},
    "mcp": {"calls", "start_s", "call_ms_p50", "call_ms_p95", "first_tick_s", "first_tick_wait_s"},
}


@pytest.mark.timeout(600)  # every benchmark, each in its own process, on a shared 2-core machine
def test_bench_quick_json_lines_carry_their_fields() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "lemming.tui.cli", "bench", "--quick", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
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
    assert sorted((x["path"], x["agents"], x["persist"]) for x in by_name["engine"]) == [
        ("fixed-reply", 100, True), ("fixed-reply", 200, True), ("sim", 200, False), ("sim", 200, True)
    ]
    paths = {(x["protocol"], x["path"]) for x in by_name["providers"]}
    for protocol in ("openai", "anthropic", "ollama"):
        assert {(protocol, "sdk"), (protocol, "engine"), (protocol, "engine+workers")} <= paths
    assert all(x["failed"] == 0 for x in by_name["providers"]), by_name["providers"]
    assert all(x["worker_cpu_ms_per_call"] > 0 for x in by_name["providers"] if x["path"] == "engine+workers")
    (structured,) = by_name["structured"]
    assert structured["contract_rate_off"] > 0 and structured["contract_rate_on"] == 0
    assert structured["schema_sent_rate_on"] == 1 and structured["schema_sent_rate_off"] == 0


def test_bench_profile_writes_a_pyinstrument_report_of_the_startup_child(tmp_path) -> None:
    """`--profile DIR`: the startup child runs under pyinstrument and its report names our code."""
    p = subprocess.run(
        [sys.executable, "-m", "lemming.tui.cli", "bench", "--json", "--profile", str(tmp_path), "startup"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert p.returncode == 0, p.stderr
    (line,) = [json.loads(x) for x in p.stdout.splitlines()]
    assert line["profiled"] is True and line["first_paint_ms"] > 0, line
    report = (tmp_path / "startup.txt").read_text()
    assert "tui/app.py" in report and "Samples:" in report
    assert (tmp_path / "startup.html").stat().st_size > 0
