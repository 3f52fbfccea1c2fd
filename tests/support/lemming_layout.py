"""An organisation laid out as LeMMing publishes its own: `agents/<name>/resume.json`
(with `agent_template/` and a `human` seat), and `lemming/config/` holding models.json,
credits.json and org_config.json. The shapes are LeMMing's (object `model`, legacy
`send_outboxes`, `"*"` readers, `credits` in resumes and in credits.json, models with no
prices, and the published `cli-echo` entry); the texts are our own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: LeMMing's published models.json has these providers; `cli-echo` is its entry verbatim.
MODELS: dict[str, Any] = {
    "gpt-4.1": {"provider": "openai", "model_name": "gpt-4.1"},
    "gpt-4.1-mini": {"provider": "openai", "model_name": "gpt-4.1-mini"},
    "gpt-4o": {"provider": "openai", "model_name": "gpt-4o"},
    "gpt-4o-mini": {"provider": "openai", "model_name": "gpt-4o-mini"},
    "o3-mini": {"provider": "openai", "model_name": "o3-mini"},
    "claude-3-5-sonnet": {"provider": "anthropic", "model_name": "claude-3-5-sonnet-latest"},
    "claude-3-haiku": {"provider": "anthropic", "model_name": "claude-3-haiku-20240307"},
    "llama3": {"provider": "ollama", "model_name": "llama3", "provider_config": {"base_url": "http://localhost:11434"}},
    "qwen-local": {"provider": "openai", "model_name": "qwen2.5", "provider_config": {"base_url": "http://localhost:8000/v1"}},
    "cli-echo": {"provider": "cli", "provider_config": {"command": ["echo"]}},
}

CREDITS: dict[str, Any] = {
    "manager": {"model": "gpt-4.1-mini", "cost_per_action": 0.01, "credits_left": 100.0},
    "planner": {"model": "gpt-4.1-mini", "cost_per_action": 0.01, "credits_left": 100.0},
    "hr": {"model": "gpt-4.1-mini", "cost_per_action": 0.01, "credits_left": 100.0},
    "coder_01": {"model": "gpt-4.1", "cost_per_action": 0.03, "credits_left": 200.0},
    "janitor": {"model": "gpt-4.1-mini", "cost_per_action": 0.005, "credits_left": 50.0},
}


def _resume(name: str, title: str, model: Any, reads: list[str], *, every: int = 1, offset: int = 0, tools: list[str] | None = None, credits: dict | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "title": title,
        "short_description": f"The {title.lower()} of the organisation.",
        "workflow_description": "",
        "instructions": f"You are {name}. Reply with JSON: {{\"messages\": [{{\"to\": \"...\", \"content\": \"...\"}}], \"notes\": \"...\"}}",
        "model": model,
        "permissions": {"read_outboxes": reads, "send_outboxes": ["*"], "tools": tools or []},
        "schedule": {"run_every_n_ticks": every, "phase_offset": offset},
    }
    if credits is not None:
        data["credits"] = credits
    return data


AGENTS: dict[str, dict[str, Any]] = {
    "manager": _resume("manager", "Organisation manager", {"key": "gpt-4.1-mini", "temperature": 0.2, "max_tokens": 2048}, ["planner", "hr", "coder_01", "janitor"], tools=["memory_read", "memory_write"]),
    "manager_cli": _resume("manager_cli", "CLI manager", {"key": "gpt-4.1-mini", "temperature": 0.2, "max_tokens": 2048}, ["echo_cli", "human", "manager"], credits={"max_credits": 1000.0, "soft_cap": 500.0}),
    "planner": _resume("planner", "Planner", {"key": "gpt-4.1-mini", "temperature": 0.2, "max_tokens": 2048}, ["manager"], every=2),
    "hr": _resume("hr", "HR", "gpt-4.1-mini", ["manager", "planner"], every=4, offset=1),
    "coder_01": _resume("coder_01", "Coder", {"key": "gpt-4.1", "temperature": 0.1, "max_tokens": 4096}, ["planner", "manager"], every=2, offset=1),
    "janitor": _resume("janitor", "Janitor", "gpt-4.1-mini", ["*"], every=5),
    "echo_cli": _resume("echo_cli", "Echo runner", {"key": "cli-echo", "temperature": 0.0, "max_tokens": 4096}, ["manager_cli", "manager", "human"], credits={"max_credits": 1000.0, "soft_cap": 500.0}),
    "human": _resume("human", "Human operator", {"key": "none", "temperature": 0}, ["*"], every=999999, credits={"max_credits": 999999, "soft_cap": 999999}),
}


def write_lemming_org(root: Path, *, models: dict[str, Any] | None = None) -> Path:
    """Write the organisation at `root` and return it."""
    for name, data in AGENTS.items():
        folder = root / "agents" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "resume.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    template = root / "agents" / "agent_template"
    template.mkdir(parents=True, exist_ok=True)
    (template / "resume.json").write_text(json.dumps({"name": "agent_template", "model": "gpt-4.1-mini"}), encoding="utf-8")
    config = root / "lemming" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "models.json").write_text(json.dumps(models if models is not None else MODELS, indent=2), encoding="utf-8")
    (config / "credits.json").write_text(json.dumps(CREDITS, indent=2), encoding="utf-8")
    (config / "org_config.json").write_text(json.dumps({"name": "lemming-published"}), encoding="utf-8")
    return root
