"""OpenAI chat completions, and every server that speaks them (vLLM, llama.cpp, LM Studio, Ollama /v1).

Built on `openai.AsyncOpenAI` with the SDK's own retries off: the retry loop in
retry.py is the only one. Streams with `stream_options.include_usage` so the
provider reports the tokens it bills.

provider_config options (all optional):

- ``max_tokens_param``: ``"max_tokens"`` or ``"max_completion_tokens"``. Default:
  ``max_completion_tokens`` on api.openai.com (its reasoning models refuse the
  other), ``max_tokens`` on any other base_url (what local servers understand).
- ``include_usage``: send ``stream_options`` (default true; turn off for an old
  server that rejects it — usage is then estimated).
- ``send_seed``: pass the engine's seed through (default true).
- ``stream_parser``: ``"json"`` (default: the SDK's stream yields each chunk as the
  plain dict it decoded, 25x cheaper per token than the SDK's typed chunk objects)
  or ``"sdk"`` (``chat.completions.create`` and its typed ``ChatCompletionChunk``s).
- ``extra_body``: a dict merged into the request body (e.g. vLLM's ``top_k``).
- ``organization``, ``project``, ``default_headers``.
- ``transport``: ``"aiohttp"`` (default) or ``"httpx"``: the SDK's HTTP client (transport.py).
"""

from __future__ import annotations

import json
import time
from typing import Any, AsyncIterator

import openai

from lemming.engine.providers.base import (
    CompletionRequest,
    ProbeResult,
    ProviderConfig,
    ProviderError,
    StreamItem,
    TextDelta,
    Usage,
)
from lemming.engine.providers.errors import Redactor, not_an_api, option, status_error, unclassified_error
from lemming.engine.providers.retry import estimate_tokens
from lemming.engine.providers.transport import TRANSPORTS, sdk_http_client

#: What a local server that checks no key is given (the SDK insists on some key).
NO_KEY = "not-needed"


class OpenAIProvider:
    """Streams chat completions through the official `openai` SDK."""

    name = "openai"

    def __init__(self, config: ProviderConfig) -> None:
        opts = dict(config.options)
        self.base_url = config.base_url
        self._redact = Redactor(config.api_key)
        official = not config.base_url or "api.openai.com" in config.base_url
        default_param = "max_completion_tokens" if official else "max_tokens"
        self._max_tokens_param = option(
            opts, "max_tokens_param", str, default_param, "openai", choices=("max_tokens", "max_completion_tokens")
        )
        self._include_usage = option(opts, "include_usage", bool, True, "openai")
        self._send_seed = option(opts, "send_seed", bool, True, "openai")
        self._parser = option(opts, "stream_parser", str, "json", "openai", choices=("json", "sdk"))
        self._extra_body = option(opts, "extra_body", dict, None, "openai")
        timeout = option(opts, "timeout", (int, float), 60.0, "openai")
        transport = option(opts, "transport", str, "aiohttp", "openai", choices=TRANSPORTS)
        try:
            self._client = openai.AsyncOpenAI(
                api_key=config.api_key or NO_KEY,
                base_url=config.base_url or None,
                organization=option(opts, "organization", str, None, "openai"),
                project=option(opts, "project", str, None, "openai"),
                default_headers=option(opts, "default_headers", dict, None, "openai"),
                max_retries=0,
                timeout=timeout,
                # One pooled keep-alive client for the adapter's life (transport.py).
                http_client=sdk_http_client(openai, transport, config.connections, timeout),
            )
        except ProviderError:
            raise
        except Exception as e:
            raise ProviderError("config", f"cannot build the openai client: {type(e).__name__}: {self._redact(str(e))}") from None

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIProvider(base_url={self.base_url!r})"

    def _body(self, request: CompletionRequest) -> dict[str, Any]:
        """The request body, already plain JSON: nothing in it needs the SDK's transform."""
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
        }
        if self._include_usage:
            body["stream_options"] = {"include_usage": True}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body[self._max_tokens_param] = request.max_tokens
        if request.seed is not None and self._send_seed:
            body["seed"] = request.seed
        if request.reply_format is not None:
            fmt = request.reply_format
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": fmt.name, "schema": fmt.schema, "strict": fmt.strict},
            }
        if self._extra_body:
            body.update(self._extra_body)
        return body

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamItem]:
        parts: list[str] = []
        st = _StreamState()
        chunks = self._sdk_chunks if self._parser == "sdk" else self._json_chunks
        try:
            async for text in chunks(self._body(request), request.timeout, st):
                parts.append(text)
                yield TextDelta(text)
        except ProviderError:
            raise
        except Exception as e:
            raise self._error(e, st.started, st.usage) from None
        if not st.finished:
            raise ProviderError(
                "stream_cut",
                f"stream ended without a finish_reason after {len(parts)} deltas",
                partial_usage=st.usage,
            )
        usage = st.usage
        if usage is None:
            # Server ignored stream_options (or include_usage is off): count it ourselves.
            usage = Usage(
                sum(estimate_tokens(m.content) for m in request.messages),
                estimate_tokens("".join(parts)),
                estimated=True,
            )
        yield usage

    async def _json_chunks(self, body: dict[str, Any], timeout: float, st: "_StreamState") -> AsyncIterator[str]:
        """The SDK's call and its stream, with the chunks left as the dicts the SDK decoded.

        ``chat.completions.create`` is the SDK's ``post("/chat/completions", body=
        transform(params), stream_cls=AsyncStream[ChatCompletionChunk])``. Here the same
        client ``post`` gets a body that is plain JSON already, so the SDK's transform (a
        walk of every message against the typed params, ~0.6 ms a call) has nothing to
        do, and ``AsyncStream[object]``, so the SDK's SSE decoder, its ``[DONE]``
        handling and its in-stream error check run but no typed chunk object (~100 us
        each) is built. Auth, timeouts, status errors and the stream are the SDK's.
        """
        stream = await self._client.post(
            "/chat/completions",
            body=body,
            cast_to=object,
            options={"timeout": timeout},
            stream=True,
            stream_cls=openai.AsyncStream[object],
        )
        st.started = True
        async with stream:
            async for obj in stream:
                if not isinstance(obj, dict):
                    raise ProviderError("malformed", "a stream chunk is not a JSON object", partial_usage=st.usage)
                u = obj.get("usage")
                if u and type(u) is dict:
                    st.usage = Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))
                for choice in obj.get("choices") or ():
                    if type(choice) is not dict:
                        continue
                    delta = choice.get("delta")
                    text = delta.get("content") if type(delta) is dict else None
                    if text and isinstance(text, str):
                        yield text
                    if choice.get("finish_reason"):
                        st.finished = True
        # The SDK ends quietly at [DONE] and at EOF alike: only finish_reason tells them apart.

    async def _sdk_chunks(self, body: dict[str, Any], timeout: float, st: "_StreamState") -> AsyncIterator[str]:
        """The SDK's own stream of typed ChatCompletionChunk objects (`stream_parser: "sdk"`)."""
        params = dict(body)
        extra = {k: params.pop(k) for k in list(params) if k in (self._extra_body or {})}
        stream = await self._client.chat.completions.create(**params, timeout=timeout, extra_body=extra or None)
        st.started = True
        async with stream:
            async for chunk in stream:
                u = getattr(chunk, "usage", None)
                if u is not None:
                    st.usage = Usage(
                        int(getattr(u, "prompt_tokens", 0) or 0),
                        int(getattr(u, "completion_tokens", 0) or 0),
                    )
                for choice in getattr(chunk, "choices", None) or ():
                    delta = getattr(choice, "delta", None)
                    text = getattr(delta, "content", None) if delta is not None else None
                    if text:
                        yield text
                    if getattr(choice, "finish_reason", None):
                        st.finished = True

    def _error(self, e: Exception, started: bool, usage: Usage | None) -> ProviderError:
        r = self._redact
        if isinstance(e, json.JSONDecodeError):
            return ProviderError("malformed", f"a stream chunk was not JSON: {r(str(e))}", partial_usage=usage)
        if isinstance(e, openai.APITimeoutError):
            return ProviderError("timeout", "no answer within the request timeout", partial_usage=usage)
        if isinstance(e, openai.APIConnectionError):
            if started:
                return ProviderError("stream_cut", f"connection lost mid-stream: {_cause(e, r)}", partial_usage=usage)
            return ProviderError("connection", f"cannot reach {self.base_url or 'api.openai.com'}: {_cause(e, r)}")
        if isinstance(e, openai.APIStatusError):
            return status_error(e.status_code, _body_message(e), e.response.headers, r, partial_usage=usage)
        if isinstance(e, openai.APIError):
            # An error object inside a 200 stream.
            return ProviderError("server", f"error in stream: {_body_message(e)}", partial_usage=usage)
        return unclassified_error(e, started=started, usage=usage, redact=r, where=self.base_url or 'api.openai.com')

    async def probe(self, model: str, timeout: float = 3.0) -> ProbeResult:
        """List the server's models and check that `model` is among them."""
        t0 = time.perf_counter()
        try:
            raw = await self._client.models.with_raw_response.list(timeout=timeout)
            # A web page or a proxy's answer is no model listing: the SDK cannot parse it.
            wrong = not_an_api(self.base_url or "api.openai.com", "an OpenAI-compatible API",
                               raw.headers.get("content-type"), raw.http_response.content)
            if wrong:
                return ProbeResult(False, wrong, (time.perf_counter() - t0) * 1000)
            page = raw.parse()
            ids = [m.id for m in page.data]
        except Exception as e:
            err = self._error(e, False, None)
            return ProbeResult(False, str(err), (time.perf_counter() - t0) * 1000)
        ms = (time.perf_counter() - t0) * 1000
        if model in ids:
            return ProbeResult(True, f"ok: {model} served ({len(ids)} models)", ms)
        shown = ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
        return ProbeResult(False, f"reachable, but {model!r} is not served (has: {shown or 'none'})", ms)

    async def aclose(self) -> None:
        await self._client.close()


class _StreamState:
    __slots__ = ("started", "finished", "usage")

    def __init__(self) -> None:
        self.started = False  # the server answered 200 and the body is streaming
        self.finished = False  # a choice carried finish_reason
        self.usage: Usage | None = None


def _body_message(e: Any) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return str(getattr(e, "message", "") or e)


def _cause(e: BaseException, redact: Redactor) -> str:
    cause = e.__cause__ or e.__context__
    return redact(f"{type(cause).__name__}: {cause}" if cause else str(e))
