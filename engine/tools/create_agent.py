"""`create_agent`: a new agent folder made from `agents/agent_template/` (LeMMing's rule).

The new résumé is validated as any resume.json is; the creator can only grant what it
holds itself (tools it holds; outboxes it may read, and its own). The folder is written
when the tick commits, and the agent joins through the hot-reload path at the next
tick boundary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lemming.engine.org import Org, read_json
from lemming.engine.resume import AGENT_NAME_RE, RESERVED_NAMES, Resume, format_validation_error

TEMPLATE = "agent_template"
AGENTS_AREA = "agents"


class CreateRefused(ValueError):
    """Why an agent cannot be created (one line)."""


def _template(org: Org) -> dict[str, Any]:
    path = Path(org.root) / "agents" / TEMPLATE / "resume.json"
    if not path.is_file():
        return {}
    problems: list[str] = []
    data = read_json(path, Path(org.root), problems)
    if problems or not isinstance(data, dict):
        raise CreateRefused(f"agents/{TEMPLATE}/resume.json cannot be used: {'; '.join(problems) or 'not an object'}")
    return data


def build_resume(org: Org, creator: str, args: dict[str, Any], *, pending: set[str]) -> dict[str, Any]:
    """The resume.json (as a dict) for the new agent, or CreateRefused."""
    name = args["name"]
    if not AGENT_NAME_RE.match(name):
        raise CreateRefused("name: 1-64 characters: letters, digits, '_', '.', '-', starting with a letter or digit")
    if name.lower() in RESERVED_NAMES:
        raise CreateRefused(f"name: {name!r} is reserved; choose another")
    if name in org.agents or name in pending or (Path(org.root) / "agents" / name).exists():
        raise CreateRefused(f"name: an agent (or folder) {name!r} already exists")
    me = org.agents[creator].resume
    data = dict(_template(org))
    data.pop("_comment", None)
    data["name"] = name
    for key in ("title", "short_description", "instructions"):
        if args.get(key) is not None:
            data[key] = args[key]
    model = args.get("model") or data.get("model") or me.model.key
    if isinstance(model, str):
        from lemming.engine.providers.registry import BUILTIN_MODELS

        if model != "none" and model not in org.models and model not in BUILTIN_MODELS:
            raise CreateRefused(f"model: unknown model key {model!r}; known: {', '.join(sorted(org.models)) or 'sim'}")
    data["model"] = model
    perms = dict(data.get("permissions") or {})
    readable = set(org.readable_by(creator)) | {creator}
    reads = args.get("read_outboxes")
    if reads is None:
        reads = [r for r in perms.get("read_outboxes", [creator]) if r in readable] or [creator]
    elif "*" in reads or not set(reads) <= readable:
        raise CreateRefused(
            "read_outboxes: you may grant only outboxes you read yourself, and yours: " + ", ".join(sorted(readable))
        )
    tools = args.get("tools")
    if tools is None:
        tools = [t for t in perms.get("tools", []) if t in me.permissions.tools]
    elif not set(tools) <= set(me.permissions.tools):
        extra = sorted(set(tools) - set(me.permissions.tools))
        raise CreateRefused(f"tools: you cannot grant tools you do not hold: {', '.join(extra)}")
    perms["read_outboxes"] = list(reads)
    perms["tools"] = list(tools)
    data["permissions"] = perms
    if args.get("run_every_n_ticks") is not None:
        data["schedule"] = {**dict(data.get("schedule") or {}), "run_every_n_ticks": args["run_every_n_ticks"]}
    try:
        Resume.model_validate(data)
    except ValidationError as e:
        raise CreateRefused("; ".join(format_validation_error(f"agents/{name}/resume.json", e))) from None
    return data


def change_record(name: str, resume: dict[str, Any]) -> dict[str, Any]:
    """The turn record's entry for a created agent (applied when the tick commits)."""
    text = json.dumps(resume, indent=2, ensure_ascii=False) + "\n"
    return {"path": f"agents/{name}/resume.json", "area": AGENTS_AREA, "rel": f"{name}/resume.json", "op": "create",
            "encoding": "utf-8", "content": text, "size": len(text.encode())}


def apply_created(org_root: Path, change: dict[str, Any]) -> str | None:
    """Write a created agent's folder (never over an existing one). A problem line, or None."""
    name = change["rel"].split("/", 1)[0]
    folder = Path(org_root) / "agents" / name
    path = folder / "resume.json"
    if path.exists():
        if path.read_text(encoding="utf-8", errors="replace") == change["content"]:
            return None  # applied already (a resume applies its last tick again)
        return f"agents/{name}: exists already; the agent was not created"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".resume.json.lemming-tmp"
        tmp.write_text(change["content"], encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        return f"agents/{name}: cannot be written: {e.strerror or e}"
    return None
