"""Shared test helpers: build organisation folders on disk, as users do."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


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
