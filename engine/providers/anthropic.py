"""Anthropic's Messages API through the official `anthropic` SDK, streamed.

System messages go into `system=`; the rest are merged so that roles alternate
and the conversation opens with the user, as the API requires. Usage comes
from `message_start` (input) and `message_delta` (output, cumulative); a stream
that ends without `message_stop` is a cut stream.

The call is the SDK's: ``messages.create`` is the client's ``post("/v1/messages",
body=..., stream_cls=AsyncStream[RawMessageStreamEvent])``; the adapter calls the same
``post`` with ``AsyncStream[object]``, so the SDK's SSE decoder, its ``ping`` and
``error`` event handling and its errors all run, and each event is the dict the SDK
decoded rather than a typed event object (~40 us each, 60 a reply).

provider_config options (all optional):

- ``default_max_tokens``: when the agent sets none (the API requires one), default 4096.
- ``send_temperature``: SDK releases whose ``messages.create`` no longer takes
  ``temperature`` (the 2.x line) get it dropped; set true to send it in the body anyway.
- ``extra_body``, ``default_headers``.
- ``transport``: ``"aiohttp"`` (default) or ``"httpx"``: the SDK's HTTP client (transport.py).
"""

from __future__ import annotations

import inspect
import json
import time
from typing import Any, AsyncIterator

import anthropic

from lemming.engine.providers.base import (
    CompletionRequest,
    ProbeResult,
    ProviderConfig,
    ProviderError,
    StreamItem,
    TextDelta,
    Usage,
)
from lemming.engine.providers.errors import Redactor, option, parse_retry_after, status_error, unclassified_error
from lemming.engine.providers.retry import estimate_tokens
from lemming.engine.providers.transport import TRANSPORTS, sdk_http_client

#: In-stream error event types and how they are retried.
STREAM_ERROR_KINDS = {
    "overloaded_error": "server",
    "api_error": "server",
    "rate_limit_error": "rate_limit",
    "authentication_error": "auth",
    "permission_error": "auth",
    "invalid_request_error": "bad_request",
    "request_too_large": "bad_request",
    "not_found_error": "bad_request",
}


class AnthropicProvider:
    """Streams Claude messages through the official `anthropic` SDK."""

    name = "anthropic"

    def __init__(self, config: ProviderConfig) -> None:
        opts = dict(config.options)
        self.base_url = config.base_url
        self._redact = Redactor(config.api_key)
        self._default_max_tokens = option(opts, "default_max_tokens", int, 4096, "anthropic")
        if self._default_max_tokens < 1:
            raise ProviderError("config", "anthropic provider_config.default_max_tokens: must be at least 1")
        self._extra_body = option(opts, "extra_body", dict, None, "anthropic")
        self._send_temperature = option(opts, "send_temperature", bool, False, "anthropic")
        timeout = option(opts, "timeout", (int, float), 60.0, "anthropic")
        transport = option(opts, "transport", str, "aiohttp", "anthropic", choices=TRANSPORTS)
        try:
            self._client = anthropic.AsyncAnthropic(
                api_key=config.api_key or "not-needed",
                base_url=config.base_url or None,
                default_headers=option(opts, "default_headers", dict, None, "anthropic"),
                max_retries=0,
                timeout=timeout,
                # One pooled keep-alive client for the adapter's life (transport.py).
                http_client=sdk_http_client(anthropic, transport, config.connections, timeout),
            )
        except ProviderError:
            raise
        except Exception as e:
            raise ProviderError("config", f"cannot build the anthropic client: {type(e).__name__}: {self._redact(str(e))}") from None

    def __repr__(self) -> str:  # never shows the key
        return f"AnthropicProvider(base_url={self.base_url!r})"

    def _body(self, request: CompletionRequest) -> dict[str, Any]:
        """The request body as plain JSON (what ``messages.create`` would post, with
        ``extra_body`` merged in)."""
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        messages: list[dict[str, str]] = []
        for m in request.messages:
            if m.role == "system":
                continue
            if messages and messages[-1]["role"] == m.role:
                messages[-1]["content"] += "\n\n" + m.content
            else:
                messages.append({"role": m.role, "content": m.content})
        if not messages or messages[0]["role"] != "user":
            messages.insert(0, {"role": "user", "content": "Begin."})
        params: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "max_tokens": request.max_tokens or self._default_max_tokens,
            "stream": True,
        }
        if system:
            params["system"] = system
        extra_body = dict(self._extra_body or {})
        if request.temperature is not None:
            temperature = min(1.0, max(0.0, request.temperature))  # the API takes 0..1
            if _CREATE_TAKES_TEMPERATURE:
                params["temperature"] = temperature
            elif self._send_temperature:
                extra_body["temperature"] = temperature
        if request.reply_format is not None:
            # Structured output as a forced tool: its input is the reply object (see
            # docs/models.md for why not output_config.format).
            fmt = request.reply_format
            tool: dict[str, Any] = {
                "name": fmt.name,
                "description": "Give your reply for this turn.",
                "input_schema": fmt.schema,
                "eager_input_streaming": True,  # stream the reply as it is written
            }
            if fmt.strict:
                tool["strict"] = True
            params["tools"] = [tool]
            params["tool_choice"] = {"type": "tool", "name": fmt.name, "disable_parallel_tool_use": True}
        if extra_body:
            params.update(extra_body)
        return params

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamItem]:
        parts: list[str] = []
        input_tokens: int | None = None
        output_tokens: int | None = None
        stopped = False
        started = False

        def partial() -> Usage | None:
            if input_tokens is None and not parts:
                return None
            return Usage(
                input_tokens or 0,
                max(output_tokens or 0, estimate_tokens("".join(parts))),
                estimated=True,
            )

        try:
            stream = await self._client.post(
                "/v1/messages",
                body=self._body(request),
                cast_to=object,
                options={"timeout": request.timeout},
                stream=True,
                stream_cls=anthropic.AsyncStream[object],
            )
            started = True
            async with stream:
                async for event in stream:
                    if type(event) is not dict:
                        raise ProviderError("malformed", "a stream event is not a JSON object", partial_usage=partial())
                    etype = event.get("type")
                    if etype == "content_block_delta":
                        delta = event.get("delta")
                        if type(delta) is not dict:
                            continue
                        dtype = delta.get("type")
                        if dtype == "text_delta":
                            text = delta.get("text")
                        elif dtype == "input_json_delta":
                            # The forced reply tool's input, streamed: the reply's JSON text.
                            text = delta.get("partial_json")
                        else:
                            continue
                        if text and type(text) is str:
                            parts.append(text)
                            yield TextDelta(text)
                    elif etype == "message_start":
                        message = event.get("message")
                        u = message.get("usage") if type(message) is dict else None
                        if type(u) is dict:
                            input_tokens = _input_tokens(u)
                            output_tokens = _int(u.get("output_tokens"))
                    elif etype == "message_delta":
                        u = event.get("usage")
                        if type(u) is dict:
                            if u.get("output_tokens") is not None:
                                output_tokens = _int(u["output_tokens"])
                            # Newer API versions repeat (final) input counts here.
                            if u.get("input_tokens") is not None:
                                input_tokens = _input_tokens(u)
                    elif etype == "message_stop":
                        stopped = True
        except ProviderError:
            raise
        except Exception as e:
            raise self._error(e, started, partial()) from None
        if not stopped:
            raise ProviderError(
                "stream_cut",
                f"stream ended without message_stop after {len(parts)} deltas",
                partial_usage=partial(),
            )
        if input_tokens is None or output_tokens is None:
            yield Usage(
                input_tokens
                if input_tokens is not None
                else sum(estimate_tokens(m.content) for m in request.messages),
                output_tokens if output_tokens is not None else estimate_tokens("".join(parts)),
                estimated=True,
            )
        else:
            yield Usage(input_tokens, output_tokens)

    def _error(self, e: Exception, started: bool, usage: Usage | None) -> ProviderError:
        r = self._redact
        if isinstance(e, json.JSONDecodeError):
            return ProviderError("malformed", f"a stream event was not JSON: {r(str(e))}", partial_usage=usage)
        if isinstance(e, anthropic.APITimeoutError):
            return ProviderError("timeout", "no answer within the request timeout", partial_usage=usage)
        if isinstance(e, anthropic.APIConnectionError):
            if started:
                return ProviderError("stream_cut", f"connection lost mid-stream: {_cause(e, r)}", partial_usage=usage)
            return ProviderError("connection", f"cannot reach {self.base_url or 'api.anthropic.com'}: {_cause(e, r)}")
        if isinstance(e, anthropic.APIStatusError):
            etype, message = _error_body(e)
            if e.status_code < 400:
                # An `event: error` inside a 200 stream (e.g. overloaded_error).
                kind = STREAM_ERROR_KINDS.get(etype or "", "server")
                return ProviderError(
                    kind,  # type: ignore[arg-type]
                    f"{etype or 'error'} in stream: {r(message)}",
                    retry_after=parse_retry_after(e.response.headers) if kind == "rate_limit" else None,
                    partial_usage=usage,
                )
            return status_error(e.status_code, f"{etype}: {message}" if etype else message, e.response.headers, r, partial_usage=usage)
        if isinstance(e, anthropic.APIError):
            return ProviderError("server", f"error in stream: {r(str(e))}", partial_usage=usage)
        return unclassified_error(e, started=started, usage=usage, redact=r, where=self.base_url or 'api.anthropic.com')

    async def probe(self, model: str, timeout: float = 3.0) -> ProbeResult:
        """Ask the Models API about `model` (ids and aliases both resolve)."""
        t0 = time.perf_counter()
        try:
            info = await self._client.models.retrieve(model, timeout=timeout)
        except anthropic.NotFoundError:
            return ProbeResult(False, f"reachable, but {model!r} is not a known model", (time.perf_counter() - t0) * 1000)
        except Exception as e:
            return ProbeResult(False, str(self._error(e, False, None)), (time.perf_counter() - t0) * 1000)
        return ProbeResult(True, f"ok: {info.id}", (time.perf_counter() - t0) * 1000)

    async def aclose(self) -> None:
        await self._client.close()


def _takes(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True


#: Whether this SDK release still has a `temperature` argument on messages.create.
_CREATE_TAKES_TEMPERATURE = _takes(anthropic.resources.messages.AsyncMessages.create, "temperature")


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        raise ProviderError("malformed", f"a token count is not a number: {str(value)[:40]!r}") from None


def _input_tokens(u: dict) -> int:
    # Cache writes and reads are input the provider bills (at its own rates); count them as input.
    return _int(u.get("input_tokens")) + _int(u.get("cache_creation_input_tokens")) + _int(u.get("cache_read_input_tokens"))


def _error_body(e: Any) -> tuple[str | None, str]:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            etype = err.get("type")
            return (etype if isinstance(etype, str) else None), err["message"]
    return None, str(getattr(e, "message", "") or e)


def _cause(e: BaseException, redact: Redactor) -> str:
    cause = e.__cause__ or e.__context__
    return redact(f"{type(cause).__name__}: {cause}" if cause else str(e))

