"""The `lemming` command on bad input and broken files: one clear line, the right exit
code, and the read-only commands still showing a recorded run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import demo_copy
from tests.test_cli import lemming


@pytest.fixture
def org(tmp_path: Path) -> Path:
    """A copy of the demo with a short recorded run in its .lemming/runs.db."""
    org = demo_copy(tmp_path / "demo")
    r = lemming("run", "--headless", "--ticks", "4", "--no-serve", "--no-watch", "--org", str(org))
    assert r.returncode == 0, r.stderr
    return org


def _only_a_line(r, message: str) -> None:  # noqa: ANN001
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("command", [["status"], ["logs", "manager"], ["inspect", "manager"]])
def test_a_corrupt_database_is_one_line_for_the_agent_commands(org: Path, command: list[str]) -> None:
    db = org / ".lemming" / "runs.db"
    with open(db, "r+b") as f:
        f.seek(5000)
        f.write(b"\xff" * 8000)
    _only_a_line(lemming(*command, "--org", str(org)), "is corrupt or not a LeMMing run database")
    db.write_text("hello, I am not a database\n")
    _only_a_line(lemming(*command, "--org", str(org)), "is corrupt or not a LeMMing run database")


@pytest.mark.parametrize("command", [["status"], ["logs", "manager"], ["runs"], ["search", "budget"]])
def test_a_database_that_is_a_folder_says_so(tmp_path: Path, command: list[str]) -> None:
    folder = tmp_path / "runs.db"
    folder.mkdir()
    r = lemming(*command, "--db", str(folder))
    _only_a_line(r, f"{folder} is a folder, not a run database; move it away or choose another --db")


def test_runs_on_an_empty_database_file_is_no_runs_as_on_a_missing_one(tmp_path: Path) -> None:
    empty = tmp_path / "runs.db"
    empty.touch()
    r = lemming("runs", "--db", str(empty))
    assert r.returncode == 0 and "no runs recorded yet" in r.stdout and "is empty" in r.stdout, r.stderr
    r = lemming("runs", "--db", str(tmp_path / "none.db"))
    assert r.returncode == 0 and "no runs recorded yet" in r.stdout and "does not exist" in r.stdout
    for command in (["status"], ["logs", "qa"]):  # the same for the agent commands
        r = lemming(*command, "--db", str(empty))
        assert r.returncode == 0 and "no recorded run yet" in r.stdout, (command, r.stderr)


def test_the_read_only_commands_show_the_run_when_another_file_is_broken(org: Path) -> None:
    (org / "agents" / "qa" / "resume.json").write_text("{broken\n")
    r = lemming("logs", "manager", "--org", str(org), "--lines", "5")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n[") >= 4 and "warning: agents/qa/resume.json" in r.stderr
    r = lemming("logs", "qa", "--org", str(org), "--lines", "5")  # its recorded turns are still there
    assert r.returncode == 0 and "[" in r.stdout, r.stderr
    r = lemming("status", "--org", str(org), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["run"]["ticks"] == 4 and "manager" in json.loads(r.stdout)["agents"]
    r = lemming("inspect", "manager", "--org", str(org))
    assert r.returncode == 0 and "in run" in r.stdout, r.stderr
    r = lemming("inspect", "qa", "--org", str(org))
    assert r.returncode == 1 and "agents/qa/resume.json does not load" in r.stderr
    # A model entry that needs a variable this machine does not have: a warning too.
    models = json.loads((org / "models.json").read_text())
    models["tool"] = {"provider": "cli", "model_name": "echo", "provider_config": {"command": ["echo"], "env": {"K": "${env.LEMMING_TEST_UNSET}"}}}
    (org / "models.json").write_text(json.dumps(models))
    r = lemming("logs", "manager", "--org", str(org), "--lines", "5")
    assert r.returncode == 0 and r.stdout.strip() and "LEMMING_TEST_UNSET" in r.stderr, r.stderr
    # run still refuses the organisation
    r = lemming("run-once", "--org", str(org), "--no-record")
    assert r.returncode == 1 and "problem(s)" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--headless", "--ticks", "-1"], "argument --ticks: -1 is not at least 1"),
        (["run", "--headless", "--ticks", "0"], "argument --ticks: 0 is not at least 1"),
        (["run", "--headless", "--concurrency", "0"], "argument --concurrency: 0 is not at least 1"),
        (["run", "--headless", "--interval", "-1"], "argument --interval: -1 is not between 0 and 3600 seconds"),
        (["tui", "--interval", "-1"], "argument --interval: -1 is not between 0 and 3600 seconds"),
        (["replay", "x", "--interval", "nan"], "argument --interval: nan is not between 0 and 3600 seconds"),
        (["resume", "x", "--ticks", "-5"], "argument --ticks: -5 is not at least 1"),
        (["fork", "x", "--at", "3", "--ticks", "0"], "argument --ticks: 0 is not at least 1"),
        (["logs", "qa", "--lines", "-3"], "argument --lines: -3 is not at least 1"),
    ],
)
def test_counts_and_intervals_out_of_range_are_argument_errors(tmp_path: Path, args: list[str], message: str) -> None:
    r = lemming(*args, "--db", str(tmp_path / "none.db"))
    assert r.returncode == 2 and message in r.stderr, r.stderr


def _run_id(org: Path) -> str:
    r = lemming("runs", "--json", "--db", str(org / ".lemming" / "runs.db"))
    return json.loads(r.stdout.splitlines()[-1])["id"]


def test_search_for_an_agent_the_run_does_not_have_says_so(org: Path) -> None:
    db = str(org / ".lemming" / "runs.db")
    r = lemming("search", "budget", "--agent", "nobody", "--db", db)
    assert r.returncode == 2 and "no match" not in r.stdout, (r.stdout, r.stderr)
    assert f"run {_run_id(org)} has no agent 'nobody'; its agents: analyst, ceo," in r.stderr
    r = lemming("search", "zzzunsaid", "--agent", "qa", "--db", db)  # a real agent that did not say it
    assert r.returncode == 1 and "no match for zzzunsaid" in r.stdout


@pytest.mark.parametrize("at", ["999", "-1"])
def test_replay_at_a_tick_the_run_does_not_have_is_refused_as_fork_does(org: Path, at: str) -> None:
    db = str(org / ".lemming" / "runs.db")
    run = _run_id(org)
    r = lemming("replay", run, "--at", at, "--db", db, timeout=20)
    assert r.returncode == 1 and f"run {run} has committed ticks up to 4; cannot replay it at tick {at}" in r.stderr


def test_a_fork_that_would_run_without_end_asks_for_ticks(org: Path) -> None:
    import asyncio

    from lemming.engine.store import RunStore

    db = org / ".lemming" / "runs.db"
    run = _run_id(org)
    r = lemming("fork", run, "--at", "4", "--db", str(db), timeout=20)  # the parent ends at tick 4
    assert r.returncode == 1, r.stdout
    assert f"run {run} ends at tick 4, so a fork at tick 4 would run without end: give it --ticks N" in r.stderr

    async def forget_target() -> None:  # as a run started in the control room: no tick count
        async with await RunStore.open(db) as store:
            await store.set_target(run, None)

    asyncio.run(forget_target())
    r = lemming("fork", run, "--at", "2", "--db", str(db), timeout=20)
    assert r.returncode == 1 and "was started without a tick count, so a fork at tick 2 would run without end" in r.stderr
    assert len(lemming("runs", "--json", "--db", str(db)).stdout.splitlines()) == 1  # nothing recorded
    r = lemming("fork", run, "--at", "2", "--ticks", "2", "--db", str(db), timeout=30)
    assert r.returncode == 0 and "to tick 4" in r.stdout and "run stopped at tick 4: completed" in r.stdout, r.stderr


@pytest.mark.parametrize("as_json", [False, True])
def test_a_run_whose_reader_goes_away_stops_cleanly(tmp_path: Path, as_json: bool) -> None:
    """`lemming run --headless | head -1`: the run stops at a tick boundary and exits 141
    (it used to hang for ever after a traceback-less SystemExit in its printer)."""
    import os
    import subprocess

    from tests.test_cli import LEMMING

    org = demo_copy(tmp_path / "demo")
    db = tmp_path / "runs.db"
    argv = [*LEMMING, "run", "--headless", "--ticks", "500", "--no-serve", "--no-watch", "--org", str(org), "--db", str(db)]
    proc = subprocess.Popen([*argv, *(["--json"] if as_json else [])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "NO_COLOR": "1"})
    assert proc.stdout.readline()
    proc.stdout.close()  # the reader goes away
    try:
        code = proc.wait(30)
    finally:
        proc.kill()
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert code == 141 and "Traceback" not in stderr, stderr
    [run] = [json.loads(line) for line in lemming("runs", "--json", "--db", str(db)).stdout.splitlines()]
    assert run["status"] == "stopped" and run["ticks"] < 500


@pytest.mark.parametrize("url", ["not a url", "localhost:8000/v1", "ftp://gpu-box/v1", "http://"])
def test_validate_refuses_a_base_url_that_is_no_url(tmp_path: Path, url: str) -> None:
    from tests.conftest import make_org

    models = {"local": {"provider": "openai", "model_name": "m", "base_url": url},
              "fine": {"provider": "openai", "model_name": "m", "base_url": "http://gpu-box:8000/v1"}}
    org = make_org(tmp_path / "o", {"a": {"model": "local"}}, models=models)
    r = lemming("validate", "--org", str(org))
    assert r.returncode == 1, r.stdout
    assert r.stdout.strip() == f"models.json: local.base_url: {url!r} is not a URL; give http://HOST:PORT/... or https://... (docs/models.md lists each server's)"
