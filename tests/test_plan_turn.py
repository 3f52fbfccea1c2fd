"""Planning a turn keeps what comes from the definitions with each agent (its system
message, its names' JSON, its model's spec and token cap): the prompts it writes must be
build_prompt's, byte for byte, and what changes — a hot reload of a résumé or of
models.json, the agent's memory, its balance — must show in the next prompt."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lemming.engine.engine import Engine
from lemming.engine.events import AgentSkipped, MemoryChanged
from lemming.engine.org import load_org
from lemming.engine.prompt import build_prompt
from tests.conftest import make_org, write_resume
from tests.support import scripted_provider as sp

MODELS = {**sp.SCRIPTED_MODELS, "capped": {**sp.SCRIPTED_MODELS["scripted"], "max_output_tokens": 300}}


def _org(tmp_path: Path) -> Path:
    return make_org(
        tmp_path / "o",
        {
            "ann": {"model": "scripted", "reads": ["bob", "cy"]},
            "bob": {"model": "capped", "reads": ["ann"]},
            "cy": {"model": "scripted", "reads": ["*"], "tools": ["clock"]},
        },
        models=MODELS,
    )


def _context(plan: dict) -> dict:
    return json.loads(plan["messages"][1]["content"].split("```json\n")[1].split("\n```")[0])


def _held_to_build_prompt(engine: Engine, name: str, t: int) -> dict:
    """engine._plan_turn(name, t), checked against build_prompt of the same inputs and
    prompt_hash's definition (sha256 of the messages' JSON)."""
    s = engine.state
    org = s.org
    plan = engine._plan_turn(name, t)
    assert isinstance(plan, dict)
    inbox = s.board.inbox(
        name, org.readable_by(name), t, s.cursors.get(name, 0),
        new_limit=org.settings.inbox_new_limit, context=org.settings.inbox_context,
    )
    expected = build_prompt(
        org.agents[name].resume, tick=t, inbox=inbox, memory=s.memory.get(name, {}), readers=org.readers_of(name),
        can_read=org.readable_by(name), tool_results=[], balance=s.credits[name], max_tokens=plan["max_tokens"],
        shell_allow=org.settings.shell_allow,
    )
    assert plan["messages"] == expected
    blob = json.dumps(plan["messages"], ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    assert plan["prompt_hash"] == hashlib.sha256(blob.encode()).hexdigest()
    assert engine._record(plan).prompt_hash == plan["prompt_hash"]
    return plan


async def test_planned_prompts_are_build_prompts(tmp_path: Path, monkeypatch) -> None:
    sp.install(monkeypatch)
    engine = Engine(load_org(_org(tmp_path)))
    for t in range(1, 5):
        for name in ("ann", "bob", "cy"):
            _held_to_build_prompt(engine, name, t)
        await engine.run(ticks=1)
    # What was recorded is what was planned.
    rec = engine.state.last_turn["ann"]
    blob = json.dumps(rec.prompt, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    assert rec.prompt_hash == hashlib.sha256(blob.encode()).hexdigest()
    assert _context({"messages": rec.prompt})["inbox"]["new"]  # (the inbox was not empty)


async def test_a_reloaded_resume_shows_in_the_next_prompt(tmp_path: Path, monkeypatch) -> None:
    sp.install(monkeypatch)
    root = _org(tmp_path)
    engine = Engine(load_org(root))
    await engine.run(ticks=2)
    before = _held_to_build_prompt(engine, "ann", 3)
    assert "You are ann." in before["messages"][0]["content"]
    assert _context(before)["you_read_outboxes_of"] == ["bob", "cy"]
    assert _context(_held_to_build_prompt(engine, "bob", 3))["your_outbox_is_read_by"] == ["ann", "cy"]
    write_resume(root, "ann", model="capped", reads=["cy"], title="Chief", instructions="Say little.")
    engine.reload(load_org(root))
    await engine.run(ticks=1)
    # The tick that applied the reload already ran on the new definitions.
    rec = engine.state.last_turn["ann"]
    assert rec.prompt[0]["content"].startswith("You are ann, Chief.") and "Say little." in rec.prompt[0]["content"]
    after = _held_to_build_prompt(engine, "ann", 4)
    assert after["messages"][0]["content"] == rec.prompt[0]["content"]
    ctx = _context(after)
    assert ctx["you_read_outboxes_of"] == ["cy"]
    assert {e["from"] for e in ctx["inbox"]["new"]} == {"cy"}
    assert after["key"] == "capped" and after["max_tokens"] == 300
    assert _context(_held_to_build_prompt(engine, "bob", 4))["your_outbox_is_read_by"] == ["cy"]
    # A removed agent's plan is not kept with the definitions it came from.
    (root / "agents" / "cy" / "resume.json").unlink()
    (root / "agents" / "cy").rmdir()
    engine.reload(load_org(root))
    await engine.run(ticks=1)
    assert "cy" not in engine.state.org.agents and set(engine._plans) == {"ann", "bob"}


async def test_a_reloaded_models_json_shows_in_the_next_turn(tmp_path: Path, monkeypatch) -> None:
    sp.install(monkeypatch)
    root = _org(tmp_path)
    engine = Engine(load_org(root))
    await engine.run(ticks=1)
    assert _held_to_build_prompt(engine, "bob", 2)["max_tokens"] == 300
    models = {**MODELS, "capped": {**MODELS["capped"], "max_output_tokens": 500, "model_name": "capped-2"}}
    (root / "models.json").write_text(json.dumps(models))
    engine.reload(load_org(root))
    await engine.run(ticks=1)
    rec = engine.state.last_turn["bob"]
    assert rec.max_tokens == 500 and rec.model_name == "capped-2"
    assert _held_to_build_prompt(engine, "bob", 3)["max_tokens"] == 500


async def test_memory_and_balance_show_in_the_next_prompt(tmp_path: Path, monkeypatch) -> None:
    sp.install(monkeypatch)
    sp.REPLIES["ann"] = lambda ctx: {"memory_updates": [{"op": "set", "key": "seen", "value": ctx["tick"]}]}
    engine = Engine(load_org(_org(tmp_path)))
    await engine.run(ticks=1)
    plan = _held_to_build_prompt(engine, "ann", 2)
    assert _context(plan)["memory"] == {"seen": 1}
    await engine.run(ticks=1)
    assert _context(_held_to_build_prompt(engine, "ann", 3))["memory"] == {"seen": 2}
    # Changed by the state's fold (the one place the state changes), between turns.
    engine.state.apply(MemoryChanged(2, "ann", "set", "note", "x"))
    assert _context(_held_to_build_prompt(engine, "ann", 3))["memory"] == {"note": "x", "seen": 2}
    balance = engine.state.credits["ann"]
    engine.top_up("ann", 2.5)
    await engine.run(ticks=1)
    charged = balance - engine.state.credits["ann"] + 2.5
    plan = _held_to_build_prompt(engine, "ann", 4)
    assert _context(plan)["credits_left"] == round(engine.state.credits["ann"], 6)
    assert 0 < charged < 1 and engine.state.credits["ann"] > balance


async def test_the_memorys_json_is_kept_until_the_fold_changes_the_memory(tmp_path: Path, monkeypatch) -> None:
    """The plan keeps the memory's JSON by the state's memory version: every change the
    fold makes shows in the next prompt, and so does a memory dict replaced as a whole."""
    sp.install(monkeypatch)
    engine = Engine(load_org(_org(tmp_path)))
    s = engine.state

    def memory() -> dict:
        return _context(_held_to_build_prompt(engine, "ann", 1))["memory"]

    assert memory() == {}
    s.apply(MemoryChanged(1, "ann", "set", "n", 1))
    assert memory() == {"n": 1}
    # Values Python holds equal are not the same JSON: each is a change.
    for value in (True, 1.0, "1", ["1"]):
        s.apply(MemoryChanged(1, "ann", "set", "n", value))
        assert memory() == {"n": value}
    # The same string set again changes nothing, not even the version.
    s.apply(MemoryChanged(1, "ann", "set", "status", "ok"))
    version = s.memory_version["ann"]
    s.apply(MemoryChanged(1, "ann", "set", "status", "ok"))
    assert s.memory_version["ann"] == version and memory() == {"n": ["1"], "status": "ok"}
    s.apply(MemoryChanged(1, "ann", "set", "status", "done"))
    assert s.memory_version["ann"] != version and memory() == {"n": ["1"], "status": "done"}
    s.apply(MemoryChanged(1, "ann", "delete", "n", None))
    assert memory() == {"status": "done"}
    # A state whose memory was replaced (a snapshot's, a replayed state's) is shown as it is.
    s.memory = {**s.memory, "ann": {"from": "snapshot"}}
    assert memory() == {"from": "snapshot"}
    s.memory["ann"] = {}
    assert memory() == {}


async def test_the_token_cap_follows_the_balance(tmp_path: Path, monkeypatch) -> None:
    sp.install(monkeypatch)
    root = make_org(
        tmp_path / "o", {"poor": {"model": {"key": "scripted", "max_tokens": 4000}, "credits": {"max_credits": 0.03}}},
        models=sp.SCRIPTED_MODELS,
    )
    engine = Engine(load_org(root))
    capped = _held_to_build_prompt(engine, "poor", 1)
    # What is left after the prompt, at 100 credits per million output tokens.
    assert capped["wanted"] == 4000 and capped["max_tokens"] < 4000 and capped["max_tokens"] * 100 / 1e6 <= 0.03
    assert _context(capped)["max_reply_tokens"] == capped["max_tokens"]
    engine.state.credits["poor"] = 1.0
    rich = _held_to_build_prompt(engine, "poor", 1)
    assert rich["max_tokens"] == 4000 and _context(rich)["max_reply_tokens"] == 4000
    assert _context(rich)["credits_left"] == 1.0
    engine.state.credits["poor"] = 1e-9
    broke = engine._plan_turn("poor", 1)
    assert isinstance(broke, AgentSkipped) and broke.reason == "broke"


def test_the_token_estimate_is_a_token_per_started_four_characters() -> None:
    from lemming.engine.providers.retry import estimate_tokens

    for n in range(0, 40):
        text = "é" * n
        assert estimate_tokens(text) == (max(1, -(-n // 4)) if text else 0)
