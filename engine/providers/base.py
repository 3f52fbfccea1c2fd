"""The one provider protocol every model backend implements.

A provider is given a :class:`CompletionRequest` and streams :class:`TextDelta`
items, then exactly one :class:`Usage` item. Failures are raised as
:class:`ProviderError` with a ``kind`` that the retry loop understands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Literal, Mapping, Protocol, runtime_checkable

ErrorKind = Literal[
    "rate_limit",  # 429: retry after Retry-After
    "server",  # 5xx
    "connection",  # refused, reset, DNS
    "timeout",  # no answer within the per-call timeout
    "stream_cut",  # the stream ended before the provider said it was done
    "malformed",  # the provider sent something that is not its protocol
    "auth",  # wrong or missing key: retrying cannot help
    "bad_request",  # 4xx other than 429: retrying cannot help
    "config",  # our configuration is wrong (unknown model, missing key variable)
    "too_long",  # the reply ran past what max_tokens allows: the provider ignored it
    "process",  # a command-line agent's program failed (exit code, signal, died mid-turn)
]

RETRYABLE_KINDS: frozenset[str] = frozenset(
    {"rate_limit", "server", "connection", "timeout", "stream_cut", "malformed"}
)


@dataclass(slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(slots=True, frozen=True)
class ReplyFormat:
    """A JSON Schema the reply must follow, for a provider that can constrain decoding to it.

    Built by `lemming.engine.reply_schema`; the engine sets it on a request only when the
    model's `structured_output` setting is on for this run, so an adapter sends it whenever
    it is there, in its protocol's native form.
    """

    name: str
    schema: Mapping[str, Any] = field(repr=False)
    #: The schema fits OpenAI's strict subset (closed objects, typed values).
    strict: bool = False


@dataclass(slots=True)
class CompletionRequest:
    """What the engine asks of a model for one turn (made by position on the turn's path,
    `Engine._request`: a new field goes last, with a default)."""

    model: str  # the provider's own model name (not our model key)
    messages: list[ChatMessage]
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float = 60.0
    seed: int | None = None
    #: The reply schema to send as structured output (None: send none).
    reply_format: ReplyFormat | None = None
    #: Who asks and where (a command-line agent runs in the agent's workspace).
    agent: str = ""
    org_root: str | None = None


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False  # True when counted by us, not reported by the provider


StreamItem = TextDelta | Usage


class ProviderError(Exception):
    """A failed call, classified so the retry loop can decide what to do."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        partial_usage: Usage | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.retry_after = retry_after
        self.status = status
        self.partial_usage = partial_usage

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status else ""
        return f"{self.kind}{status}: {self.message}"


@dataclass(slots=True)
class ProbeResult:
    ok: bool
    detail: str
    latency_ms: float | None = None


@runtime_checkable
class Provider(Protocol):
    """A model backend. Implementations: sim, openai, anthropic, ollama."""

    name: str

    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamItem]:
        """Stream text deltas, then one Usage. Raise ProviderError on failure."""
        ...

    async def probe(self, model: str, timeout: float = 3.0) -> ProbeResult:
        """A cheap reachability check for `lemming models`."""
        ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class ProviderConfig:
    """Everything a provider adapter needs to be built, taken from a models.json entry."""

    provider: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never logged, never stored
    options: dict[str, Any] = field(default_factory=dict)
    #: sockets the adapter's HTTP client keeps (the calls that can be in flight to it at once)
    connections: int = 100
