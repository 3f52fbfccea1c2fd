"""Pydantic models for everything an organisation folder holds.

`resume.json` is LeMMing's published ABI and loads unchanged: `model` may be a
string key or `{key, temperature, max_tokens}`, `read_outboxes` may be `["*"]`,
unknown legacy fields (`send_outboxes`, ...) are kept, not rejected.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from lemming.engine.mcp.config import SERVER_NAME_RE, McpServerSpec
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

#: Agent names become folder names, outbox authors and prompt text: keep them plain.
AGENT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")  # \Z: `$` would let "name\n" through
RESERVED_NAMES = frozenset({"operator", "engine", "all", "*", "none", "agent_template"})
#: The model key that marks a seat that never calls a model (LeMMing's `human`).
NO_MODEL_KEY = "none"


def _finite(value: float | None, what: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    return value


class ModelRef(BaseModel):
    """Which model an agent runs on, with its per-agent sampling settings."""

    model_config = ConfigDict(extra="allow")

    key: str = Field(min_length=1, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=5)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)

    @field_validator("temperature")
    @classmethod
    def _temperature_finite(cls, v: float | None) -> float | None:
        return _finite(v, "temperature")


class Schedule(BaseModel):
    model_config = ConfigDict(extra="allow")

    run_every_n_ticks: int = Field(default=1, ge=1, le=10_000_000)
    phase_offset: int = Field(default=0, ge=-10_000_000, le=10_000_000)

    def fires_at(self, tick: int) -> bool:
        n = self.run_every_n_ticks
        return tick % n == self.phase_offset % n

    @property
    def fire_point(self) -> float:
        """Where in a period the agent fires, in [0, 1): orders agents within a tick."""
        n = self.run_every_n_ticks
        return (self.phase_offset % n) / n


class Permissions(BaseModel):
    model_config = ConfigDict(extra="allow")

    read_outboxes: list[str] = Field(default_factory=list, max_length=10_000)
    tools: list[str] = Field(default_factory=list, max_length=1_000)

    @field_validator("read_outboxes")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if name != "*" and not AGENT_NAME_RE.match(name):
                shown = repr(name) if len(name) <= 60 else repr(name[:57]) + "..."
                raise ValueError(
                    f"{shown} is not an agent name (letters, digits, _ . -; or \"*\" for everyone)"
                )
        return v

    def can_read(self, author: str) -> bool:
        return "*" in self.read_outboxes or author in self.read_outboxes


class ResumeCredits(BaseModel):
    model_config = ConfigDict(extra="allow")

    max_credits: float = Field(ge=0, le=1e12)
    soft_cap: float | None = Field(default=None, ge=0, le=1e12)
    cost_per_action: float | None = Field(default=None, ge=0, le=1e9)

    @field_validator("max_credits", "soft_cap", "cost_per_action")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        return _finite(v, "credits")


class Resume(BaseModel):
    """One agent's definition: `agents/<name>/resume.json`."""

    model_config = ConfigDict(extra="allow")

    name: str
    title: str = Field(default="", max_length=500)
    short_description: str = Field(default="", max_length=5_000)
    workflow_description: str = Field(default="", max_length=50_000)
    instructions: str = Field(default="", max_length=200_000)
    model: ModelRef
    permissions: Permissions = Field(default_factory=Permissions)
    schedule: Schedule = Field(default_factory=Schedule)
    credits: ResumeCredits | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _model_as_string(cls, v: Any) -> Any:
        # LeMMing allows `"model": "gpt-4.1-mini"` as well as the object form.
        if isinstance(v, str):
            return {"key": v}
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not AGENT_NAME_RE.match(v):
            raise ValueError(
                "must be 1-64 characters: letters, digits, '_', '.', '-', starting with a letter or digit"
            )
        if v.lower() in RESERVED_NAMES:
            raise ValueError(f"{v!r} is reserved; choose another name")
        return v

    @property
    def calls_model(self) -> bool:
        return self.model.key != NO_MODEL_KEY


class Prices(BaseModel):
    """Prices per million tokens, in credits."""

    model_config = ConfigDict(extra="forbid")

    input_per_mtok: float = Field(default=0.0, ge=0, le=1e6)
    output_per_mtok: float = Field(default=0.0, ge=0, le=1e6)

    @field_validator("input_per_mtok", "output_per_mtok")
    @classmethod
    def _finite(cls, v: float) -> float:
        return _finite(v, "price")  # type: ignore[return-value]


class ModelSpec(BaseModel):
    """One entry of models.json. LeMMing's `{provider, model_name, provider_config}` loads as is."""

    model_config = ConfigDict(extra="allow")

    provider: str = Field(min_length=1)
    model_name: str = Field(min_length=1, max_length=500)
    base_url: str | None = None
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)
    prices: Prices = Field(default_factory=Prices)
    context_window: int | None = Field(default=None, ge=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    concurrency: int | None = Field(default=None, ge=1, le=10_000)
    timeout: float = Field(default=60.0, gt=0, le=3600)
    max_attempts: int = Field(default=4, ge=1, le=20)
    #: Send the reply schema as the provider's structured output: true, false or "auto"
    #: (on where the protocol is known to take one; see engine/providers/structured.py).
    structured_output: bool | str = "auto"
    provider_config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("structured_output", mode="before")
    @classmethod
    def _structured_output(cls, v: Any) -> Any:
        if v is True or v is False or v == "auto":
            return v
        shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
        raise ValueError(f'must be true, false or "auto", not {shown}')
    @model_validator(mode="before")
    @classmethod
    def _cli_defaults(cls, data: Any) -> Any:
        # An entry keeps the fields it does not know (LeMMing's), so a key written beside
        # the known ones would be kept and recorded with the definitions: refuse it here.
        if isinstance(data, dict):
            _refuse_inline_keys(data)
        # LeMMing's cli entries name no model; a command is not retried by default.
        if isinstance(data, dict) and data.get("provider") == "cli":
            from lemming.engine.providers.cli import spec_defaults

            return spec_defaults(data)
        return data

    @model_validator(mode="after")
    def _base_url_from_config(self) -> "ModelSpec":
        # LeMMing puts base_url inside provider_config; we accept it at either level.
        if self.base_url is None and isinstance(self.provider_config.get("base_url"), str):
            self.base_url = self.provider_config["base_url"]
        if self.api_key_env is None and isinstance(self.provider_config.get("api_key_env"), str):
            name = self.provider_config["api_key_env"]
            if len(name) > 200 or not _ENV_NAME_RE.match(name):
                raise ValueError("provider_config.api_key_env must name an environment variable (letters, digits, _)")
            self.api_key_env = name
        return self

    @field_validator("provider_config")
    @classmethod
    def _no_inline_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        _refuse_inline_keys(v)
        return v


#: Field names that hold a secret when written into models.json (compared lower-case).
_SECRET_FIELDS = frozenset({"api_key", "apikey", "api_token", "access_token", "token", "secret", "password", "authorization"})


def _refuse_inline_keys(fields: dict[str, Any]) -> None:
    for name in fields:
        if isinstance(name, str) and name.lower() in _SECRET_FIELDS:
            raise ValueError(
                f"{name!r} holds a key: API keys do not belong in models.json; name an environment variable with api_key_env"
            )


class CreditsEntry(BaseModel):
    """One entry of LeMMing's credits.json."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    cost_per_action: float = Field(default=0.0, ge=0, le=1e9)
    credits_left: float | None = Field(default=None, ge=-1e12, le=1e12)
    max_credits: float | None = Field(default=None, ge=0, le=1e12)
    soft_cap: float | None = Field(default=None, ge=0, le=1e12)

    @field_validator("cost_per_action", "credits_left", "max_credits", "soft_cap")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        return _finite(v, "credits")


class OrgSettings(BaseModel):
    """org.json (or LeMMing's lemming/config/org_config.json): organisation-wide settings."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    default_credits: float = Field(default=100.0, ge=0, le=1e12)
    inbox_new_limit: int = Field(default=50, ge=1, le=10_000)
    inbox_context: int = Field(default=5, ge=0, le=1_000)
    max_concurrency: int = Field(default=16, ge=1, le=10_000)
    #: Tool rounds in one turn: the model is asked again with its tools' results at most
    #: this many times (0: tool calls are answered with an error and never run).
    max_tool_rounds: int = Field(default=4, ge=0, le=50)
    #: How `shell` is confined: "bwrap" (bubblewrap) or, as an explicit opt-in, "none".
    sandbox: Literal["bwrap", "none"] = "bwrap"
    #: Programs a `shell` command may run (LeMMing's list); ["*"] allows any.
    shell_allow: list[str] = Field(default_factory=lambda: list(DEFAULT_SHELL_ALLOW), max_length=1_000)
    shell_timeout_s: float = Field(default=10.0, gt=0, le=3_600)
    shell_output_bytes: int = Field(default=16_384, ge=256, le=1_048_576)
    #: Whether a sandboxed command may use the network (never by default).
    shell_network: bool = False
    #: SDK clients in N worker processes (0: in the engine's process; "auto": one per core
    #: for a model that 64 or more calls can be in flight to). See docs/scaling.md.
    provider_workers: Annotated[int, Field(ge=0, le=256)] | Literal["auto"] = "auto"
    #: Sockets each adapter's HTTP client keeps; default: the model's concurrency.
    provider_connections: int | None = Field(default=None, ge=1, le=100_000)
    #: MCP servers agents may be granted tools of (`permissions.tools`: "<server>/<tool>").
    mcp_servers: dict[str, McpServerSpec] = Field(default_factory=dict, max_length=100)

    @field_validator("mcp_servers")
    @classmethod
    def _server_names(cls, v: dict[str, McpServerSpec]) -> dict[str, McpServerSpec]:
        for name in v:
            if not SERVER_NAME_RE.match(name):
                raise ValueError(f"{shown_key(name)} is not a server name (letters, digits, _ . -)")
        return v

    @field_validator("shell_allow")
    @classmethod
    def _programs(cls, v: list[str]) -> list[str]:
        for name in v:
            if name != "*" and not _PROGRAM_RE.match(name):
                raise ValueError(f"{name[:60]!r} is not a program name (letters, digits, _ . + -)")
        return v


#: LeMMing's shell allow-list.
DEFAULT_SHELL_ALLOW = ("grep", "ls", "cat", "echo", "head", "tail", "jq")
_PROGRAM_RE = re.compile(r"^[A-Za-z0-9_.+-]{1,64}\Z")


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_PLAIN_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/@+-]{0,99}\Z")


def shown_key(key: str) -> str:
    """A models.json / credits.json key as it appears in a message: plain keys as they
    are; any other (empty, spaces, control characters, huge) quoted, escaped, bounded."""
    if _PLAIN_KEY_RE.match(key):
        return key
    return repr(key) if len(key) <= 60 else repr(key[:57]) + "..."


def format_validation_error(file: str, err: ValidationError, prefix: str = "") -> list[str]:
    """Turn a pydantic error into lines `file: field: message` a person can act on."""
    lines = []
    for e in err.errors():
        # Field names are plain; a key a file made up (an unknown field) is quoted and bounded.
        parts = [shown_key(p) if isinstance(p, str) else str(p) for p in e["loc"]]
        loc = ".".join(p for p in (prefix, *parts) if p != "")
        msg = e["msg"]
        if e["type"] == "missing":
            msg = "is required"
        elif e["type"] == "extra_forbidden":
            msg = "is not a known field"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        got = e.get("input")
        if e["type"] not in ("missing",) and not isinstance(got, (dict, list)):
            shown = repr(got)
            if len(shown) > 60:
                shown = shown[:57] + "..."
            msg = f"{msg} (got {shown})"
        lines.append(f"{file}: {loc or '(root)'}: {msg}")
    return lines
