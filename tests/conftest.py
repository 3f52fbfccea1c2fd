"""Shared test helpers: build organisation folders on disk, as users do."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

#: Provider variables a test session never runs with: the SDKs' own, and their base URLs.
PROVIDER_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "OLLAMA_HOST")


def _api_key_env_names() -> set[str]:
    """Every `api_key_env` that a models.json (or example) in the repository names."""
    names: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "api_key_env" and isinstance(v, str):
                    names.add(v)
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for path in REPO.rglob("models*.json"):
        if ".venv" in path.parts or ".git" in path.parts:
            continue
        try:
            walk(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return names


def pytest_configure(config: pytest.Config) -> None:
    # The session and every process it starts run without real keys: no test can reach a
    # paid API or leak a key into a database, a snapshot or a log. Tests that need a key set
    # a fake one themselves.
    for var in {*PROVIDER_VARIABLES, *_api_key_env_names()}:
        os.environ.pop(var, None)
    for var in [v for v in os.environ if v.endswith(("_API_KEY", "_API_TOKEN"))]:
        os.environ.pop(var)


def demo_copy(dest: Path | None = None) -> Path:
    """A fresh copy of the demo organisation (without workspaces): its agents' tools write
    files, and a run starts from the files its folder holds."""
    import shutil
    import tempfile

    org = dest if dest is not None else Path(tempfile.mkdtemp(prefix="lemming-demo-")) / "org"
    shutil.copytree(REPO / "agents", org / "agents", ignore=shutil.ignore_patterns("workspace"))
    for f in ("models.json", "credits.json", "org.json"):
        if (REPO / f).exists():
            shutil.copy(REPO / f, org / f)
    return org


def write_resume(root: Path, name: str, **fields: Any) -> Path:
    data: dict[str, Any] = {
        "name": name,
        "title": fields.pop("title", name.title()),
        "short_description": fields.pop("short_description", f"{name} agent"),
        "workflow_description": "",
        "model": fields.pop("model", "sim"),
        "permissions": {
            "read_outboxes": fields.pop("reads", []),
            "tools": fields.pop("tools", []),
        },
        "schedule": {
            "run_every_n_ticks": fields.pop("every", 1),
            "phase_offset": fields.pop("offset", 0),
        },
        "instructions": fields.pop("instructions", f"You are {name}."),
    }
    data.update(fields)
    path = root / "agents" / name / "resume.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def make_org(root: Path, agents: dict[str, dict[str, Any]], models: dict | None = None, credits: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "agents").mkdir(exist_ok=True)
    for name, fields in agents.items():
        write_resume(root, name, **dict(fields))
    if models is not None:
        (root / "models.json").write_text(json.dumps(models, indent=2))
    if credits is not None:
        (root / "credits.json").write_text(json.dumps(credits, indent=2))
    return root


@pytest.fixture
def org_dir(tmp_path: Path) -> Path:
    """A small four-agent organisation on the sim."""
    return make_org(
        tmp_path / "org",
        {
            "alice": {"reads": ["bob"], "credits": {"max_credits": 10.0, "soft_cap": 5.0}},
            "bob": {"reads": ["alice", "carol"]},
            "carol": {"reads": ["*"], "every": 2, "offset": 1},
            "dave": {"reads": ["carol"], "every": 3},
        },
    )


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Tests never read the developer's keys, config or sim settings.
    for var in list(os.environ):
        if var.startswith("LEMMING_SIM_"):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
