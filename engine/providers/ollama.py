"""Ollama's native chat API (`/api/chat`, NDJSON) through the official `ollama` SDK.

Usage comes from the final `done` chunk (`prompt_eval_count`, `eval_count`);
Ollama leaves `prompt_eval_count` out when the whole prompt was cached, and
then the missing count is estimated. A stream that ends without `done: true`
is a cut stream.

The base_url is Ollama's host (``http://localhost:11434``), not ``.../v1`` — for
the OpenAI-compatible endpoint use the ``openai`` provider instead.

provider_config options (all optional): ``options`` (a dict of Ollama model
options such as ``num_ctx``), ``keep_alive`` (e.g. ``"10m"``), ``think``, ``transport``
(``"aiohttp"``, the default, or ``"httpx"``: the SDK's HTTP transport, see transport.py).
"""

from __future__ import annotations

import contextvars
import json
import time
from typing import Any, AsyncIterator

import httpx
import ollama
import pydantic

from lemming.engine.providers.base import (
    CompletionRequest,
    ProbeResult,
    ProviderConfig,
    ProviderError,
    StreamItem,
    TextDelta,
    Usage,
)
from lemming.engine.providers.errors import Redactor, kind_for_status, option, parse_retry_after, unclassified_error
from lemming.engine.providers.retry import estimate_tokens
from lemming.engine.providers.transport import KEEPALIVE_S, TRANSPORTS, httpx_aiohttp_transport

#: The ollama SDK's ResponseError keeps the status but drops the headers, so Retry-After
#: would be lost: an httpx response hook keeps the failed response's headers for the call
#: (the stream's task) that made it.
_failed_headers: contextvars.ContextVar[dict | None] = contextvars.ContextVar("ollama_failed_headers", default=None)


async def _keep_failed_headers(response: httpx.Response) -> None:
    box = _failed_headers.get()
    if box is not None and response.status_code >= 400:
        box["headers"] = dict(response.headers)


class OllamaProvider:
    """Streams chats from an Ollama server through the official `ollama` SDK."""

    name = "ollama"

    def __init__(self, config: ProviderConfig) -> None:
        opts = dict(config.options)
        self.host = config.base_url  # None: the SDK reads OLLAMA_HOST, then localhost:11434
        self._redact = Redactor(config.api_key)
        self._headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else None
        self._options: dict[str, Any] = dict(option(opts, "options", dict, {}, "ollama"))
        self._keep_alive = option(opts, "keep_alive", (str, int, float), None, "ollama")
        self._think = option(opts, "think", (bool, str), None, "ollama")
        # The SDK takes its timeout per client, not per call: one client per timeout in use.
        self._clients: dict[float | None, ollama.AsyncClient] = {}
        # The SDK's httpx client, on an aiohttp transport (or httpx's own), pooled like the others.
        self._transport_name = option(opts, "transport", str, "aiohttp", "ollama", choices=TRANSPORTS)
        self._connections = config.connections
        if self._transport_name == "aiohttp":
            httpx_aiohttp_transport(1)  # a missing package is a config error now, not at the first call

    def __repr__(self) -> str:  # never shows the key
        return f"OllamaProvider(host={self.host!r})"

    def _client(self, timeout: float | None) -> ollama.AsyncClient:
        client = self._clients.get(timeout)
        if client is None:
            client = self._clients[timeout] = ollama.AsyncClient(
                host=self.host, timeout=timeout, headers=self._headers,
                event_hooks={"response": [_keep_failed_headers]}, **self._transport_options(),
            )
        return client

    def _transport_options(self) -> dict[str, Any]:
        n = self._connections
        if self._transport_name == "aiohttp":
            return {"transport": httpx_aiohttp_transport(n)}
        return {"limits": httpx.Limits(max_connections=n, max_keepalive_connections=n, keepalive_expiry=KEEPALIVE_S)}

    def _params(self, request: CompletionRequest) -> dict[str, Any]:
        options = dict(self._options)
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.max_tokens is not None:
            options["num_predict"] = request.max_tokens
        if request.seed is not None:
            options["seed"] = request.seed
        params: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
            "options": options or None,
        }
        if self._keep_alive is not None:
            params["keep_alive"] = self._keep_alive
        if self._think is not None:
            params["think"] = self._think
        if request.reply_format is not None:
            params["format"] = request.reply_format.schema  # Ollama >= 0.5 takes a JSON Schema
        return params

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamItem]:
        parts: list[str] = []
        started = False
        done = None
        failed: dict = {}
        token = _failed_headers.set(failed)
        try:
            chunks = await self._client(request.timeout).chat(**self._params(request))
            async for chunk in chunks:
                started = True
                text = chunk.message.content if chunk.message is not None else None
                if text:
                    parts.append(text)
                    yield TextDelta(text)
                if chunk.done:
                    done = chunk
                    break
        except ProviderError:
            raise
        except Exception as e:
            # Ollama reports counts only at the end; retry.py estimates what a cut stream used.
            raise self._error(e, started, None, failed.get("headers")) from None
        finally:
            try:
                _failed_headers.reset(token)
            except ValueError:  # finalised in another context (an abandoned generator)
                pass
        if done is None:
            raise ProviderError(
                "stream_cut", f"stream ended without done:true after {len(parts)} deltas"
            )
        prompt, evals = done.prompt_eval_count, done.eval_count
        if prompt is not None and evals is not None:
            yield Usage(prompt, evals)
        else:
            yield Usage(
                prompt if prompt is not None else sum(estimate_tokens(m.content) for m in request.messages),
                evals if evals is not None else estimate_tokens("".join(parts)),
                estimated=True,
            )

    def _where(self) -> str:
        return self.host or "the Ollama host (OLLAMA_HOST or localhost:11434)"

    def _error(self, e: Exception, started: bool, usage: Usage | None, headers: dict | None = None) -> ProviderError:
        r = self._redact
        if isinstance(e, json.JSONDecodeError):
            return ProviderError("malformed", f"a stream line was not JSON: {r(str(e))}", partial_usage=usage)
        if isinstance(e, pydantic.ValidationError):
            return ProviderError("malformed", "a stream line is not an Ollama chat chunk", partial_usage=usage)
        if isinstance(e, ollama.ResponseError):
            message = r(str(e.error))
            if e.status_code == -1:
                # `{"error": ...}` inside a 200 stream: the model runner failed.
                return ProviderError("server", f"error in stream: {message}", partial_usage=usage)
            if e.status_code == 404 and "not found" in message:
                message += " (run `ollama pull <model>` on the server)"
            kind = kind_for_status(e.status_code)
            retry_after = parse_retry_after(headers) if headers and kind in ("rate_limit", "server") else None
            return ProviderError(kind, message, status=e.status_code, partial_usage=usage, retry_after=retry_after)
        if isinstance(e, httpx.TimeoutException):
            return ProviderError("timeout", "no answer within the request timeout", partial_usage=usage)
        if isinstance(e, (httpx.ConnectError, ConnectionError)):
            return ProviderError("connection", f"cannot reach {self._where()}: {r(str(e)) or type(e).__name__}")
        if isinstance(e, httpx.TransportError):
            if started:
                return ProviderError("stream_cut", f"connection lost mid-stream: {type(e).__name__}: {r(str(e))}", partial_usage=usage)
            return ProviderError("connection", f"{type(e).__name__} talking to {self._where()}: {r(str(e))}")
        return unclassified_error(e, started=started, usage=usage, redact=r, where=self._where())

    async def probe(self, model: str, timeout: float = 3.0) -> ProbeResult:
        """List the pulled models (`/api/tags`) and check that `model` is among them."""
        t0 = time.perf_counter()
        try:
            listing = await self._client(timeout).list()
        except Exception as e:
            return ProbeResult(False, str(self._error(e, False, None)), (time.perf_counter() - t0) * 1000)
        ms = (time.perf_counter() - t0) * 1000
        names = [m.model for m in listing.models if m.model]
        wanted = model if ":" in model else f"{model}:latest"
        if model in names or wanted in names:
            return ProbeResult(True, f"ok: {model} pulled ({len(names)} models)", ms)
        shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
        return ProbeResult(
            False, f"reachable, but {model!r} is not pulled (has: {shown or 'none'}); run `ollama pull {model}`", ms
        )

    async def aclose(self) -> None:
        # One client at a time, forgotten once closed: called again after a cancellation
        # cut it short (the registry does), it closes the ones still open.
        while self._clients:
            timeout, c = next(iter(self._clients.items()))
            close = getattr(c, "close", None)  # public since ollama 0.4.x; else the httpx client
            try:
                await (close() if close is not None else c._client.aclose())
            finally:
                self._clients.pop(timeout, None)
