"""The reply contract as a JSON Schema, for the providers that can constrain decoding to one.

One schema, generated from the pydantic model the parser validates against
(`lemming.engine.prompt.AgentReply`), so the two cannot drift apart. Each
adapter sends it in its own protocol's native form (see docs/models.md):
OpenAI-compatible ``response_format: {"type": "json_schema"}``, Ollama's
``format``, Anthropic's forced tool. The parser and its repair stay as they are:
a server that ignores the schema is read exactly as before.

Generation is cached: the engine asks once per turn, the answer only changes
with the agent's tools.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any, Mapping, Sequence

from lemming.engine.prompt import AgentReply
from lemming.engine.providers.base import ReplyFormat

#: The name the schema goes by (OpenAI's json_schema.name, Anthropic's tool name).
SCHEMA_NAME = "agent_reply"

#: Bounds above this are left to the parser (which keeps the first N items and says so):
#: grammar-based servers (llama.cpp, Ollama, vLLM's xgrammar) unroll a bound into that many
#: optional rules, so `maxItems: 1000` makes a grammar that costs more than it saves.
MAX_GRAMMAR_BOUND = 64

#: Keywords OpenAI's strict mode accepts (docs: "Supported schemas"); anything else, or a
#: free-form value, or an open object, means the schema cannot be sent as strict.
_STRICT_KEYWORDS = frozenset(
    {"type", "properties", "required", "additionalProperties", "items", "enum", "const", "anyOf",
     "description", "minItems", "maxItems", "pattern", "format", "minimum", "maximum",
     "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
)

_DESCRIPTIONS = {
    "payload": 'the message body: any JSON value, usually {"text": "..."}',
    "value": "the value to set, append or merge (any JSON value; null for delete)",
    "recipients": "agent names; [] = whoever may read your outbox",
    "args": "the tool's arguments",
    "notes": "a short note for the operator",
}


ToolSpec = str | Mapping[str, Any]


def reply_schema(tools: Sequence[ToolSpec] | None = None) -> dict[str, Any]:
    """The JSON Schema of a reply. Shared and cached: do not modify what it returns.

    `tools`: None leaves `tool_calls[].tool` any name. Otherwise the tools the agent
    holds: names (`"memory_read"`, `"fs/read"`), or specs `{"name": ..., "parameters":
    {...}}` (also `input_schema` / `inputSchema`, as Anthropic and MCP spell it) whose
    argument schema then constrains that tool's `args`. An empty list allows no tool call.
    """
    return _schema(_tools_key(tools))


def reply_format(tools: Sequence[ToolSpec] | None = None) -> ReplyFormat:
    """The schema with what an adapter needs to send it: its name and whether it can be strict."""
    if tools is None:
        return _format(None)
    try:
        return _format_of_names(tuple(tools))  # asked every turn: tool names hash as they are
    except TypeError:  # specs (dicts) do not hash
        return _format(_tools_key(tools))


@lru_cache(maxsize=1024)
def _format_of_names(names: tuple) -> ReplyFormat:
    return _format(_tools_key(names))


def strict_compatible(schema: Any) -> bool:
    """Whether `schema` fits OpenAI's strict subset: every object closed (properties given,
    all of them required, additionalProperties false), every value typed, known keywords only."""
    if not isinstance(schema, dict):
        return False
    if set(schema) - _STRICT_KEYWORDS:
        return False
    if "anyOf" in schema:
        return all(strict_compatible(s) for s in schema["anyOf"])
    if "enum" in schema or "const" in schema:
        return True
    t = schema.get("type")
    if t is None:
        return False  # a free-form value
    types = t if isinstance(t, list) else [t]
    if "object" in types:
        props = schema.get("properties")
        if not isinstance(props, dict) or schema.get("additionalProperties") is not False:
            return False
        if sorted(schema.get("required", [])) != sorted(props):
            return False
        if not all(strict_compatible(p) for p in props.values()):
            return False
    if "array" in types and not strict_compatible(schema.get("items")):
        return False
    return True


# --- generation ----------------------------------------------------------------------


def _tools_key(tools: Sequence[ToolSpec] | None) -> tuple | None:
    if tools is None:
        return None
    key = []
    for t in tools:
        if isinstance(t, str):
            key.append((t, None))
            continue
        if not isinstance(t, Mapping) or not isinstance(t.get("name"), str):
            raise ValueError(f"a tool spec needs a string name, not {str(t)[:60]!r}")
        params = t.get("parameters", t.get("input_schema", t.get("inputSchema")))
        key.append((t["name"], json.dumps(params, sort_keys=True) if params is not None else None))
    return tuple(dict.fromkeys(key))  # first of repeats, order kept


@lru_cache(maxsize=256)
def _format(tools_key: tuple | None) -> ReplyFormat:
    schema = _schema(tools_key)
    return ReplyFormat(SCHEMA_NAME, schema, strict_compatible(schema))


@lru_cache(maxsize=256)
def _schema(tools_key: tuple | None) -> dict[str, Any]:
    raw = AgentReply.model_json_schema()
    defs = raw.pop("$defs", {})
    schema = _normalise(raw, defs)
    schema["description"] = "your reply for this turn: one JSON object"  # (not the class docstring)
    if tools_key is not None:
        calls = schema["properties"]["tool_calls"]
        if not tools_key:
            calls["maxItems"] = 0
        elif all(params is None for _, params in tools_key):
            calls["items"]["properties"]["tool"] = {"type": "string", "enum": [name for name, _ in tools_key]}
        else:
            calls["items"] = {"anyOf": [_tool_call_schema(name, params, calls["items"]) for name, params in tools_key]}
    return schema


def _tool_call_schema(name: str, params: str | None, generic: dict[str, Any]) -> dict[str, Any]:
    item = copy.deepcopy(generic)
    item["properties"]["tool"] = {"type": "string", "enum": [name]}
    if params is not None:
        args = json.loads(params)
        if not isinstance(args, dict):
            raise ValueError(f"tool {name!r}: its argument schema must be a JSON object")
        item["properties"]["args"] = args
    return item


def _normalise(node: Any, defs: Mapping[str, Any], name: str | None = None) -> Any:
    """Inline $refs, drop titles and defaults, close our own objects, keep bounds a grammar can afford."""
    if isinstance(node, list):
        return [_normalise(x, defs) for x in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _normalise(defs[ref.removeprefix("#/$defs/")], defs, name)
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k in ("title", "default"):
            continue
        if k in ("maxItems", "maxLength") and isinstance(v, int) and v > MAX_GRAMMAR_BOUND:
            continue
        if k == "properties":
            out[k] = {p: _normalise(s, defs, p) for p, s in v.items()}
        else:
            out[k] = _normalise(v, defs)
    if name in _DESCRIPTIONS:
        out.setdefault("description", _DESCRIPTIONS[name])
    if out.get("type") == "object" and "properties" in out:
        # Our reply objects: every field written (a grammar then has one path), nothing else.
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
    return out

