"""The reply schema as each provider's structured output.

The schema is generated from the parser's pydantic model; each adapter sends it in
its protocol's native form through the official SDK, to protocol servers that
validate the field as the real APIs do; `structured_output` true / false / auto
decides per model; a server that refuses the field is asked once more without it
and the model is remembered for the run; the sim writes no broken reply under it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lemming.engine.engine import Engine
from lemming.engine.events import TurnFinished
from lemming.engine.org import load_org
from lemming.engine.prompt import AgentReply, parse_reply
from lemming.engine.providers.anthropic import AnthropicProvider
from lemming.engine.providers.base import ChatMessage, CompletionRequest, ProviderConfig, ProviderError, ReplyFormat, TextDelta
from lemming.engine.providers.ollama import OllamaProvider
from lemming.engine.providers.openai import OpenAIProvider
from lemming.engine.providers.registry import ProviderRegistry
from lemming.engine.providers.retry import RetryPolicy
from lemming.engine.providers.sim import SimProvider
from lemming.engine.reply_schema import SCHEMA_NAME, reply_format, reply_schema, strict_compatible
from tests.conftest import make_org
from tests.support.servers import DEFAULT_REPLY, AnthropicServer, Behaviour, OllamaServer, OpenAIServer

PROSE = "Sure! I think we should ship it."  # what a small model writes unconstrained


def conforms(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """A small JSON Schema check (the keywords reply_schema uses), written apart from the product."""
    if "anyOf" in schema:
        if any(not conforms(value, s, path) for s in schema["anyOf"]):
            return []
        return [f"{path}: matches none of anyOf"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} not in {schema['enum']}"]
    t = schema.get("type")
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    if t in kinds and not isinstance(value, kinds[t]):
        return [f"{path}: not {t}"]
    problems: list[str] = []
    if t == "string":
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1 << 30):
            problems.append(f"{path}: length out of bounds")
    if t == "array":
        if len(value) > schema.get("maxItems", 1 << 30):
            problems.append(f"{path}: more than {schema['maxItems']} items")
        for i, item in enumerate(value):
            problems += conforms(item, schema.get("items", {}), f"{path}[{i}]")
    if t == "object":
        props = schema.get("properties", {})
        problems += [f"{path}: missing {k}" for k in schema.get("required", []) if k not in value]
        if schema.get("additionalProperties") is False:
            problems += [f"{path}: extra {k}" for k in value if k not in props]
        for k, v in value.items():
            if k in props:
                problems += conforms(v, props[k], f"{path}.{k}")
    return problems


# --- the schema --------------------------------------------------------------------------


def test_schema_comes_from_the_parser_model_and_closes_its_objects():
    schema = reply_schema()
    assert set(schema["properties"]) == set(AgentReply.model_fields)
    assert schema["required"] == list(AgentReply.model_fields) and schema["additionalProperties"] is False
    entry = schema["properties"]["outbox_entries"]["items"]
    assert set(entry["required"]) == {"kind", "payload", "tags", "recipients"}
    assert "type" not in entry["properties"]["payload"]  # any JSON value, as the contract allows
    assert schema["properties"]["memory_updates"]["items"]["properties"]["op"]["enum"] == ["set", "append", "merge", "delete"]
    assert schema["properties"]["outbox_entries"]["maxItems"] == 20
    # Bounds a grammar would unroll a thousand times are left to the parser.
    assert "maxItems" not in entry["properties"]["recipients"]
    assert "maxLength" not in schema["properties"]["notes"]
    assert "$defs" not in json.dumps(schema) and "title" not in schema
    assert conforms(json.loads(DEFAULT_REPLY), schema) == []
    # Free-form payloads cannot be strict (OpenAI strict / Anthropic strict tools need closed objects).
    fmt = reply_format()
    assert fmt.name == SCHEMA_NAME and fmt.strict is False and fmt.schema is schema


def test_tools_constrain_tool_call_names_and_arguments():
    names = reply_schema(["memory_read", "clock"])["properties"]["tool_calls"]
    assert names["items"]["properties"]["tool"] == {"type": "string", "enum": ["memory_read", "clock"]}
    assert conforms({"tool_calls": [{"tool": "clock", "args": {}}]} | _empty(), reply_schema(["clock"])) == []
    assert conforms({"tool_calls": [{"tool": "shell", "args": {}}]} | _empty(), reply_schema(["clock"])) != []
    assert reply_schema([])["properties"]["tool_calls"]["maxItems"] == 0  # no tools held: no tool calls
    shell = {"name": "shell", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}},
                                             "required": ["cmd"], "additionalProperties": False}}
    spec = reply_schema([shell, {"name": "fs/read", "input_schema": {"type": "object"}}])
    variants = spec["properties"]["tool_calls"]["items"]["anyOf"]
    assert [v["properties"]["tool"]["enum"] for v in variants] == [["shell"], ["fs/read"]]
    assert variants[0]["properties"]["args"] == shell["parameters"]
    good = {"tool_calls": [{"tool": "shell", "args": {"cmd": "ls"}}]} | _empty()
    assert conforms(good, spec) == []
    assert conforms({"tool_calls": [{"tool": "shell", "args": {}}]} | _empty(), spec) != []
    assert reply_schema(None) is reply_schema(None)  # cached: asked every turn
    with pytest.raises(ValueError, match="name"):
        reply_schema([{"parameters": {}}])


def _empty() -> dict[str, Any]:
    return {"outbox_entries": [], "memory_updates": [], "notes": ""}


def test_strict_compatible_needs_closed_typed_objects():
    closed = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": False}
    assert strict_compatible(closed)
    assert not strict_compatible({**closed, "required": []})
    assert not strict_compatible({**closed, "additionalProperties": True})
    assert not strict_compatible({**closed, "properties": {"a": {}}})  # a free-form value
    assert not strict_compatible({**closed, "properties": {"a": {"type": "string", "maxLength": 3}}})


# --- what each adapter sends -------------------------------------------------------------


def request(fmt: ReplyFormat | None) -> CompletionRequest:
    return CompletionRequest(
        model="test-model", messages=[ChatMessage("system", "You plan."), ChatMessage("user", "Tick 1.")],
        max_tokens=256, timeout=5.0, reply_format=fmt,
    )


async def collect(provider, req: CompletionRequest) -> tuple[str, int]:
    parts = [item.text async for item in provider.stream(req) if isinstance(item, TextDelta)]
    return "".join(parts), len(parts)


async def with_and_without(server_cls, adapter_cls, provider: str, fmt: ReplyFormat):
    """One call with the schema and one without, through the adapter's SDK: the two requests
    the server recorded, and the text and delta count of the call with the schema."""
    with server_cls() as srv:
        p = adapter_cls(ProviderConfig(provider, srv.base_url, None))
        try:
            text, n = await collect(p, request(fmt))
            plain, _ = await collect(p, request(None))
        finally:
            await p.aclose()
    with_schema, without = srv.chat_requests
    assert plain == DEFAULT_REPLY
    return with_schema, without, text, n


async def test_openai_sends_response_format_json_schema():
    fmt = reply_format(["clock"])
    with_schema, without, text, n = await with_and_without(OpenAIServer, OpenAIProvider, "openai", fmt)
    assert with_schema.json["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "agent_reply", "schema": fmt.schema, "strict": False},
    }
    assert "response_format" not in without.json
    assert with_schema.json["stream"] is True and text == DEFAULT_REPLY and n > 1  # still streamed


async def test_openai_strict_only_where_the_schema_allows_and_the_server_checks_it():
    closed = {"type": "object", "properties": {"notes": {"type": "string"}}, "required": ["notes"], "additionalProperties": False}
    with OpenAIServer() as srv:
        p = OpenAIProvider(ProviderConfig("openai", srv.base_url, None))
        try:
            await collect(p, request(ReplyFormat("agent_reply", closed, strict=True)))
            # A strict claim on the open reply schema is refused as OpenAI refuses it.
            with pytest.raises(ProviderError) as err:
                await collect(p, request(ReplyFormat("agent_reply", reply_schema(), strict=True)))
        finally:
            await p.aclose()
    assert srv.chat_requests[0].json["response_format"]["json_schema"]["strict"] is True
    assert err.value.kind == "bad_request" and err.value.status == 400
    assert "'additionalProperties' is required to be supplied and to be false" in str(err.value) or "'type' key" in str(err.value)


async def test_ollama_sends_the_schema_as_format():
    fmt = reply_format()
    with_schema, without, text, n = await with_and_without(OllamaServer, OllamaProvider, "ollama", fmt)
    assert with_schema.json["format"] == fmt.schema and "format" not in without.json
    assert text == DEFAULT_REPLY and n > 1


async def test_anthropic_forces_the_reply_tool_and_streams_its_input_as_the_reply():
    fmt = reply_format(["clock"])
    with_schema, without, text, n = await with_and_without(AnthropicServer, AnthropicProvider, "anthropic", fmt)
    (tool,) = with_schema.json["tools"]
    assert tool["name"] == "agent_reply" and tool["input_schema"] == fmt.schema
    assert tool["eager_input_streaming"] is True and "strict" not in tool  # the open schema cannot be strict
    assert with_schema.json["tool_choice"] == {"type": "tool", "name": "agent_reply", "disable_parallel_tool_use": True}
    assert "tools" not in without.json and "tool_choice" not in without.json
    # The server streamed input_json_delta fragments; the adapter yields them as the reply text.
    assert text == DEFAULT_REPLY and n > 1
    assert parse_reply(text).entries


# --- through the engine: the setting, the fallback, the memory ------------------------------


SERVERS = {"openai": OpenAIServer, "anthropic": AnthropicServer, "ollama": OllamaServer}
FIELD = {"openai": "response_format", "anthropic": "tool_choice", "ollama": "format"}


def org_for(root: Path, provider: str, srv, setting: Any) -> Engine:
    model: dict[str, Any] = {"provider": provider, "model_name": "test-model", "base_url": srv.base_url, "timeout": 15}
    if setting is not None:
        model["structured_output"] = setting
    make_org(root, {"alice": {"model": "m", "reads": ["bob"], "tools": ["clock"]}, "bob": {"model": "m", "reads": ["alice"]}},
             models={"m": model})
    org = load_org(root)
    registry = ProviderRegistry(org.models, env={"ANTHROPIC_API_KEY": "sk-test-0123456789", "OPENAI_API_KEY": "sk-x"})
    return Engine(org, seed=1, registry=registry, retry_policy=RetryPolicy(base_delay=0.01, max_delay=0.02))


async def run_turns(engine: Engine, ticks: int) -> list:
    sub = engine.subscribe(tokens=False)
    assert await engine.run(ticks=ticks) == "completed"
    return [e.record for e in sub.drain() if isinstance(e, TurnFinished)]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama"])
@pytest.mark.parametrize("setting", [True, False, "auto", None])
async def test_setting_on_off_auto_decides_what_is_sent(tmp_path, provider, setting):
    with SERVERS[provider](loose_reply=PROSE) as srv:
        records = await run_turns(org_for(tmp_path, provider, srv, setting), 1)
    sent = setting is not False  # auto (and no setting: auto) is on for every shipped protocol
    assert len(srv.chat_requests) == 2
    for req in srv.chat_requests:
        assert (FIELD[provider] in req.json) is sent
    for rec in records:
        assert rec.reply_schema == ("sent" if sent else "")
        # The small model's prose is a contract violation only when nothing constrained it.
        assert rec.status == ("ok" if sent else "contract"), rec.error
    if sent and provider == "openai":
        by_agent = {json.dumps(r.json["response_format"]["json_schema"]["schema"]["properties"]["tool_calls"]) for r in srv.chat_requests}
        assert any('"enum": ["clock"]' in s for s in by_agent)  # alice's tools constrain her tool calls
        assert any('"maxItems": 0' in s for s in by_agent)  # bob holds none


@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama"])
async def test_a_server_that_refuses_the_field_is_asked_again_without_it_and_remembered(tmp_path, provider):
    with SERVERS[provider](structured_output=False) as srv:
        engine = org_for(tmp_path, provider, srv, True)
        first = await run_turns(engine, 1)
        later = await run_turns(engine, 2)
    reqs = srv.chat_requests
    refused = [r for r in reqs if r.status == 400]
    # Tick 1: each of the two agents' calls was refused once (they ran concurrently), then taken without.
    assert len(refused) == 2 and all(FIELD[provider] in r.json for r in refused)
    assert all(r.status == 200 and FIELD[provider] not in r.json for r in reqs if r not in refused)
    for rec in first:
        assert rec.status == "ok" and rec.reply_schema == "refused" and rec.attempts == 2
        assert "retrying without the reply schema" in rec.retries[0] and "bad_request (HTTP 400)" in rec.retries[0]
    assert list(engine.structured.refused) == ["m"]
    # The rest of the run never sends it again: no more refusals, one call a turn.
    assert len(reqs) == 2 * 2 + 2 * 2
    assert all(rec.reply_schema == "dropped" and rec.attempts == 1 for rec in later)


async def test_a_bad_request_for_another_reason_does_not_mark_the_model(tmp_path):
    with OpenAIServer() as srv:
        # Context too long: refused with the field and without it alike.
        srv.script(*[Behaviour.http_status(400, "This model's maximum context length is 8192 tokens")] * 4)
        engine = org_for(tmp_path, "openai", srv, True)
        records = await run_turns(engine, 1)
    assert [r.status for r in records] == ["provider", "provider"]
    assert all(r.reply_schema == "" for r in records)
    assert engine.structured.refused == {}  # the field was not the cause
    assert len(srv.chat_requests) == 4  # once with the field, once without, per agent; no more


# --- the sim ---------------------------------------------------------------------------------


@pytest.mark.parametrize("setting, broken", [(False, True), (True, False), ("auto", False)])
async def test_sim_writes_no_broken_reply_under_the_schema(tmp_path, setting, broken):
    make_org(tmp_path, {n: {"reads": ["*"]} for n in ("a", "b", "c")},
             models={"sim": {"provider": "sim", "model_name": "sim-1", "structured_output": setting,
                             "provider_config": {"malformed_rate": 1.0}}})
    engine = Engine(load_org(tmp_path), seed=5)
    records = await run_turns(engine, 4)
    statuses = {r.status for r in records}
    if broken:
        assert statuses <= {"contract", "ok"} and sum(r.status == "contract" or bool(r.violations) for r in records) == len(records)
    else:
        assert statuses == {"ok"}
        for r in records:
            assert r.reply_schema == "sent" and conforms(json.loads(r.raw_output), reply_schema([])) == []


def test_sim_replies_conform_to_the_schema_and_match_the_unconstrained_ones():
    sim = SimProvider(ProviderConfig("sim", options={"malformed_rate": 0.3}))
    fmt = reply_format([])
    same = 0
    for i in range(60):
        messages = [ChatMessage("system", "s"), ChatMessage("user", f'Tick {i}.\n```json\n{{"tick": {i}, "your_outbox_is_read_by": ["x"]}}\n```')]
        loose = sim.compose(CompletionRequest("sim-1", messages, seed=i))
        tight = sim.compose(CompletionRequest("sim-1", messages, seed=i, reply_format=fmt))
        assert conforms(json.loads(tight), fmt.schema) == []
        same += loose == tight
    assert 20 < same < 60  # the unbroken ones are the same reply; the broken ones are not broken


def test_models_json_setting_is_validated(tmp_path):
    from lemming.engine.org import load_models

    (tmp_path / "models.json").write_text(json.dumps({"m": {"provider": "sim", "model_name": "s", "structured_output": "yes"}}))
    problems: list[str] = []
    load_models(tmp_path, problems)
    assert any('structured_output: must be true, false or "auto"' in p for p in problems), problems


def test_lemming_models_shows_the_setting_and_what_the_last_run_found(tmp_path, capsys):
    import argparse
    import os
    import subprocess
    import sys

    from lemming.tui.cli.models import models_command
    from tests.conftest import REPO

    with OpenAIServer(structured_output=False) as srv:
        make_org(tmp_path, {"alice": {"model": "m", "reads": ["bob"]}, "bob": {"model": "m", "reads": ["alice"]}},
                 models={"m": {"provider": "openai", "model_name": "test-model", "base_url": srv.base_url, "timeout": 15},
                         "off": {"provider": "ollama", "model_name": "x", "structured_output": False}})
        p = subprocess.run([sys.executable, "-m", "lemming.tui.cli", "run", "--headless", "--ticks", "2", "--no-watch", "--org", str(tmp_path)],
                           cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})
        assert p.returncode == 0, p.stderr
    assert sum(r.status == 400 for r in srv.chat_requests) == 2  # refused once per agent, then never again
    args = argparse.Namespace(org=tmp_path, no_probe=True, json=True, keys=[], timeout=1.0)
    assert models_command(args, env={}) == 0
    rows = {r["key"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["m"]["structured_output"] == "auto" and rows["m"]["structured_output_on"] is True
    refused = rows["m"]["structured_output_refused"]
    assert refused["tick"] == 1 and "Unrecognized request argument supplied: response_format" in refused["reason"]
    assert rows["off"]["structured_output_on"] is False and rows["off"]["structured_output_refused"] is None
    assert rows["sim"]["structured_output_on"] is True


async def test_the_retry_without_the_schema_is_outside_the_attempt_budget(tmp_path):
    with OllamaServer(structured_output=False) as srv:
        make_org(tmp_path, {"alice": {"model": "m"}},
                 models={"m": {"provider": "ollama", "model_name": "test-model", "base_url": srv.base_url, "max_attempts": 1}})
        org = load_org(tmp_path)
        engine = Engine(org, seed=1, registry=ProviderRegistry(org.models, env={}))
        (rec,) = await run_turns(engine, 1)
    assert rec.status == "ok" and rec.reply_schema == "refused" and rec.attempts == 2
    assert [r.status for r in srv.chat_requests] == [400, 200]
