"""The built wheel, installed into a fresh virtual environment away from the source tree,
gives a working `lemming`: it validates and runs the demo organisation and opens the
control room; it installs the one import root `lemming` and nothing else."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO

ORG_FILES = ("models.json", "credits.json", "org.json")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:  # noqa: ANN003
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    return r


def _runtime_constraints(tmp: Path) -> Path:
    """requirements.lock without its hashes: the versions the wheel's dependencies resolve to."""
    lines = []
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("\\")[0].strip()
        if line and not line.startswith(("#", "--")):
            lines.append(line)
    path = tmp / "constraints.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the fresh venv's bin folder, a folder holding a copy of the demo organisation)."""
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    # Built from a copy of the sources, so that nothing of the build lands in the checkout.
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", ".lemming", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(dist), str(src)])
    wheels = list(dist.glob("lemming_control_room-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    _run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "-c", str(_runtime_constraints(tmp)), str(wheels[0])])
    org = tmp / "org"
    shutil.copytree(REPO / "agents", org / "agents")
    for name in ORG_FILES:
        shutil.copy(REPO / name, org / name)
    # The installed control room is what is checked here; the demo's MCP server (whose
    # start-up the first tick waits for) is checked by tests/test_mcp_engine.py.
    settings = json.loads((org / "org.json").read_text())
    settings.pop("mcp_servers", None)
    (org / "org.json").write_text(json.dumps(settings))
    for resume_path in (org / "agents").glob("*/resume.json"):
        resume = json.loads(resume_path.read_text())
        tools = resume.get("permissions", {}).get("tools", [])
        if any("/" in t for t in tools):
            resume["permissions"]["tools"] = [t for t in tools if "/" not in t]
            resume_path.write_text(json.dumps(resume))
    return bin_dir, org


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(NO_COLOR="1", COLUMNS="120")
    return env


def test_the_wheel_installs_one_import_root_and_ships_product_only(installed: tuple[Path, Path]) -> None:
    bin_dir, org = installed
    python = str(bin_dir / "python")
    where = _run([python, "-c", "import lemming.engine, lemming.tui, lemming.themes, sys; print(lemming.themes.LAYOUT_TCSS); print(*lemming.__path__)"], cwd=org, env=_clean_env())
    tcss, root = where.stdout.split()
    site = Path(root)
    assert Path(tcss).is_file() and Path(tcss).is_relative_to(site), tcss
    assert not Path(root).is_relative_to(REPO)
    for name in ("engine", "tui", "themes", "tests"):
        r = subprocess.run([python, "-c", f"import {name}"], cwd=org, env=_clean_env(), capture_output=True, text=True)
        assert r.returncode != 0 and "No module named" in r.stderr, name
    shipped = {p.relative_to(site).as_posix() for p in site.rglob("*.py")}
    assert "tui/bench/loopback.py" in shipped and "themes/palettes.py" in shipped
    assert not [p for p in shipped if "testing" in p or p.startswith("tests")], shipped


def test_the_installed_lemming_validates_and_runs_the_demo(installed: tuple[Path, Path]) -> None:
    bin_dir, org = installed
    lemming = str(bin_dir / "lemming")
    ok = _run([lemming, "validate"], cwd=org, env=_clean_env())
    assert ok.stdout.startswith("ok: 8 agents")
    run = _run([lemming, "run", "--headless", "--ticks", "3"], cwd=org, env=_clean_env())
    assert "run stopped at tick 3: completed" in run.stdout
    runs = _run([lemming, "runs", "--json"], cwd=org, env=_clean_env())
    assert '"ticks": 3' in runs.stdout


def test_the_installed_control_room_opens_steps_and_quits(installed: tuple[Path, Path]) -> None:
    """`lemming` in a 100×30 pseudo-terminal: the first frame shows the demo's agents, paused;
    `n` steps one tick; `q` quits with exit code 0 and the run's summary."""
    bin_dir, org = installed
    env = {**_clean_env(), "TERM": "xterm-256color", "LINES": "30", "COLUMNS": "100"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: the installed `lemming`, in the organisation's folder
        os.chdir(org)
        os.execve(str(bin_dir / "lemming"), [str(bin_dir / "lemming"), "--paused", "--no-watch", "--sim-tokens-per-s", "0"], env)
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    seen = bytearray()

    def read_until(predicate, timeout: float) -> bool:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(bytes(seen)):
                return True
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    return predicate(bytes(seen))
                if not chunk:
                    return predicate(bytes(seen))
                seen.extend(chunk)
        return predicate(bytes(seen))

    try:
        assert read_until(lambda s: b"PAUSED" in s and b"analyst" in s and b"researcher" in s, 60), bytes(seen[-2000:])
        painted = len(seen)
        os.write(fd, b"n")
        # the step's tick (instant sim replies) repaints the panes; q then stops the run
        assert read_until(lambda s: len(s) > painted + 2000, 30)
        time.sleep(1.0)
        os.write(fd, b"q")
        assert read_until(lambda s: b"ticks committed" in s, 30), bytes(seen[-2000:])
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0
        assert b"run " in seen and b": 1 ticks committed" in seen
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert (org / ".lemming" / "runs.db").is_file()
