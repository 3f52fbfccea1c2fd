"""Protocol-faithful local model servers: OpenAI chat-completions SSE, Anthropic messages SSE, Ollama NDJSON.

They exist so that the provider adapters can be exercised through the official
SDKs with no network and no key: the tests, the benchmark (`python -m
lemming.tui.bench.providers`) and anyone who wants to watch the control room drive
"real" providers on a laptop use them.

Each server runs its own asyncio loop in a daemon thread (stdlib only: asyncio
streams and a hand-written HTTP/1.1 with keep-alive and chunked bodies), listens
on 127.0.0.1 with an ephemeral port, records every request, and answers chat
requests from a script of :class:`Behaviour` items, one per request, falling back
to a normal streamed reply when the script is empty::

    with OpenAIServer(api_key="sk-test") as srv:
        srv.script(Behaviour.rate_limit(retry_after="0.05"), Behaviour.ok())
        client = AsyncOpenAI(base_url=srv.base_url, api_key="sk-test")
        ...
        assert srv.requests[0].json["stream_options"] == {"include_usage": True}

Failure modes: HTTP status (500, 401, 400 ...), 429 with Retry-After (seconds or
HTTP date) and retry-after-ms, a hang before the headers or mid-stream, a stream
cut mid-way (abruptly inside a chunked body, or cleanly at a frame boundary
without the done marker), a malformed chunk, an in-stream error event, and a
done chunk without usage. Connection refused is :func:`closed_port`.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import json
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import urlsplit

#: A reply every LeMMing agent turn parses: one broadcast message, nothing else.
DEFAULT_REPLY: str = json.dumps(
    {
        "outbox_entries": [
            {
                "kind": "message",
                "payload": {"text": "Status: all systems nominal. Proceeding with the plan."},
                "tags": [],
                "recipients": [],
            }
        ],
        "memory_updates": [],
        "tool_calls": [],
        "notes": "replied from a local protocol server",
    }
)

BehaviourKind = Literal[
    "ok", "status", "rate_limit", "hang", "cut", "malformed", "error_event"
]


@dataclass(slots=True)
class Behaviour:
    """What the server does with one request. Build with the class methods."""

    kind: BehaviourKind = "ok"
    status: int = 200
    #: Extra response headers (Retry-After, retry-after-ms ...).
    headers: dict[str, str] = field(default_factory=dict)
    #: For cut / malformed / error_event / hang mid-stream: frames sent before it happens.
    after: int = 2
    #: cut: True closes at a frame boundary (clean EOF, no done marker); False aborts a chunked body.
    clean: bool = False
    #: hang: how long to stay silent; mid_stream: hang after `after` frames instead of before headers.
    seconds: float = 30.0
    mid_stream: bool = False
    #: ok: reply text (None = the server's reply_text) and whether usage is reported.
    text: str | None = None
    usage: bool = True
    #: Which request path this behaviour is for (None: the server's chat endpoint).
    path: str | None = None
    message: str | None = None

    @classmethod
    def ok(cls, text: str | None = None, *, usage: bool = True) -> "Behaviour":
        return cls("ok", text=text, usage=usage)

    @classmethod
    def no_usage(cls, text: str | None = None) -> "Behaviour":
        return cls("ok", text=text, usage=False)

    @classmethod
    def http_status(
        cls, status: int, message: str | None = None, *, path: str | None = None, headers: dict[str, str] | None = None
    ) -> "Behaviour":
        return cls("status", status=status, message=message, path=path, headers=dict(headers or {}))

    @classmethod
    def rate_limit(
        cls,
        retry_after: str | float | None = None,
        *,
        retry_after_ms: str | float | None = None,
        path: str | None = None,
    ) -> "Behaviour":
        headers = {}
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(retry_after_ms)
        return cls("rate_limit", status=429, headers=headers, path=path)

    @classmethod
    def hang(
        cls, seconds: float = 30.0, *, mid_stream: bool = False, after: int = 2, path: str | None = None
    ) -> "Behaviour":
        return cls("hang", seconds=seconds, mid_stream=mid_stream, after=after, path=path)

    @classmethod
    def cut(cls, after: int = 3, *, clean: bool = False) -> "Behaviour":
        return cls("cut", after=after, clean=clean)

    @classmethod
    def malformed(cls, after: int = 2) -> "Behaviour":
        return cls("malformed", after=after)

    @classmethod
    def error_event(cls, after: int = 2, message: str | None = None) -> "Behaviour":
        return cls("error_event", after=after, message=message)


@dataclass(slots=True)
class RecordedRequest:
    """One request as the server saw it, and what it answered."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any = None
    behaviour: str = ""
    status: int = 0
    #: (input, output) tokens the server reported for this request, if it reported any.
    usage: tuple[int, int] | None = None
    #: The text deltas the server streamed (complete or not).
    deltas: list[str] = field(default_factory=list)
    at: float = 0.0


def closed_port() -> int:
    """A localhost port with nothing listening on it: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def split_text(text: str, size: int) -> list[str]:
    """Cut reply text into delta-sized pieces (a stand-in for tokens)."""
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def count_prompt_tokens(texts: list[str]) -> int:
    """The server's deterministic token count of a prompt: ~4 characters a token."""
    return max(1, sum(len(t) for t in texts) // 4)


class _Disconnect(Exception):
    pass


class ProtocolServer:
    """Base: HTTP/1.1 server in a background thread with scripted behaviours."""

    protocol: str = "base"
    chat_path: str = "/"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        latency: float = 0.0,
        chunk_delay: float = 0.0,
        reply_text: str = DEFAULT_REPLY,
        chunk_chars: int = 4,
        models: tuple[str, ...] = (),
        record: bool = True,
        structured_output: bool = True,
        loose_reply: str | None = None,
    ) -> None:
        #: When set, requests must carry this key (each protocol's own header) or get 401.
        self.api_key = api_key
        #: Seconds before the response headers of a chat request (time to first byte).
        self.latency = latency
        #: Seconds between streamed frames.
        self.chunk_delay = chunk_delay
        self.reply_text = reply_text
        self.chunk_chars = chunk_chars
        self.models = models or self.default_models
        self.record = record
        #: False: the server does not know the protocol's structured-output field and
        #: refuses a request that carries it with 400, as such a server does.
        self.structured_output = structured_output
        #: What the "model" writes when no schema constrains it (None: reply_text): a
        #: small model's prose, to show what structured output changes.
        self.loose_reply = loose_reply
        self.requests: list[RecordedRequest] = []
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task] = set()
        #: TCP connections accepted so far (a pooled, kept-alive client opens few).
        self.connections_opened = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.port: int = 0

    default_models: tuple[str, ...] = ("test-model",)

    # --- scripting ----------------------------------------------------------------

    def script(self, *behaviours: Behaviour) -> "ProtocolServer":
        """Queue behaviours; each is used by the next matching request."""
        with self._lock:
            self._script.extend(behaviours)
        return self

    def clear(self) -> None:
        with self._lock:
            self._script.clear()
        self.requests.clear()

    def _next_behaviour(self, path: str) -> Behaviour:
        with self._lock:
            for i, b in enumerate(self._script):
                if (b.path or self.chat_path) == path:
                    del self._script[i]
                    return b
        return Behaviour.ok()

    @property
    def pending(self) -> int:
        """Scripted behaviours not used yet."""
        with self._lock:
            return len(self._script)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == self.chat_path]

    # --- lifecycle ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What an SDK's base_url should be set to."""
        return self.url

    def start(self) -> "ProtocolServer":
        if self._thread is not None:
            return self
        self._thread = threading.Thread(
            target=self._run, name=f"{self.protocol}-protocol-server", daemon=True
        )
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError(f"{self.protocol} server failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop, stop = self._loop, self._stop
        if stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> "ProtocolServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> "ProtocolServer":
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # surfaced by start()
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._server = await asyncio.start_server(
            self._on_connection, "127.0.0.1", 0, limit=1 << 20, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        self._server.close()
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)

    # --- HTTP ---------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self.connections_opened += 1
        try:
            while True:
                req = await self._read_request(reader)
                if req is None:
                    break
                keep_alive = await self._dispatch(req, writer)
                if not keep_alive or req.headers.get("connection", "").lower() == "close":
                    break
        except (_Disconnect, ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(task)
            try:
                writer.close()
            except Exception:
                pass

    async def _read_request(self, reader: asyncio.StreamReader) -> RecordedRequest | None:
        line = await reader.readline()
        if not line or not line.strip():
            return None
        try:
            method, target, _version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        except ValueError:
            return None
        headers: dict[str, str] = {}
        while True:
            h = await reader.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    await reader.readline()
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readline()
            body = b"".join(chunks)
        parts = urlsplit(target)
        parsed = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        req = RecordedRequest(
            method, parts.path, parts.query, headers, body, parsed, at=time.monotonic()
        )
        if self.record:
            self.requests.append(req)
        return req

    async def _dispatch(self, req: RecordedRequest, w: asyncio.StreamWriter) -> bool:
        if self.api_key is not None and not self.authorized(req.headers):
            return await self._status_response(
                w, req, 401, self.error_body(401, self.auth_error_message(req.headers)), {}
            )
        if req.path == self.chat_path and req.method == "POST":
            return await self._chat(req, w)
        behaviour = None
        with self._lock:
            for i, b in enumerate(self._script):
                if b.path == req.path:
                    behaviour = b
                    del self._script[i]
                    break
        if behaviour is not None and behaviour.kind in ("status", "rate_limit"):
            return await self._status_response(
                w, req, behaviour.status, self.error_body(behaviour.status, behaviour.message), behaviour.headers
            )
        if behaviour is not None and behaviour.kind == "hang":
            await asyncio.sleep(behaviour.seconds)
            return False
        found = self.other_route(req)
        if found is None:
            return await self._status_response(
                w, req, 404, self.error_body(404, f"no route for {req.method} {req.path}"), {}
            )
        status, obj = found
        return await self._json_response(w, req, status, obj, {})

    async def _chat(self, req: RecordedRequest, w: asyncio.StreamWriter) -> bool:
        body = req.json if isinstance(req.json, dict) else {}
        # The real APIs validate a request before anything else: a refused one uses no script.
        invalid = self.invalid_request(body)
        if invalid is not None:
            req.behaviour = "invalid"
            return await self._status_response(w, req, 400, self.error_body(400, invalid), {})
        b = self._next_behaviour(req.path)
        req.behaviour = b.kind
        if self.latency:
            await asyncio.sleep(self.latency)
        if b.kind in ("status", "rate_limit"):
            return await self._status_response(
                w, req, b.status, self.error_body(b.status, b.message), b.headers
            )
        if b.kind == "hang" and not b.mid_stream:
            req.status = 0
            await asyncio.sleep(b.seconds)
            return False
        text = b.text if b.text is not None else self.reply_text
        if b.text is None and self.loose_reply is not None and self.reply_schema(body) is None:
            text = self.loose_reply
        deltas = split_text(text, self.chunk_chars)
        usage = (self.prompt_tokens(body), len(deltas)) if b.usage else None
        if not self.wants_stream(body):
            req.deltas = list(deltas)
            req.usage = usage
            return await self._json_response(w, req, 200, self.complete_body(body, text, usage), {})
        frames = self.stream_frames(body, deltas, usage)
        # frames: list of (bytes, delta_text_or_None, usage_or_None)
        stop_at = len(frames)
        if b.kind in ("cut", "malformed", "error_event") or (b.kind == "hang" and b.mid_stream):
            stop_at = min(b.after, len(frames))
        clean_close = b.kind == "cut" and b.clean
        req.status = 200
        head = ["HTTP/1.1 200 OK", f"Content-Type: {self.stream_content_type}"]
        if clean_close:
            head.append("Connection: close")  # body ends at EOF: a clean close looks complete
        else:
            head.append("Transfer-Encoding: chunked")
        head.extend(self.response_headers())
        w.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        for i, (frame, delta, frame_usage) in enumerate(frames[:stop_at]):
            if self.chunk_delay and i:
                await asyncio.sleep(self.chunk_delay)
            # Record before writing: the server may run on its own thread, and a client that
            # reads the last frame must find it already recorded.
            if delta:
                req.deltas.append(delta)
            if frame_usage is not None:
                req.usage = frame_usage
            self._write_body(w, frame, chunked=not clean_close)
            await w.drain()
        if b.kind == "ok":
            self._write_body(w, b"", chunked=True, last=True)
            await w.drain()
            return True
        if b.kind == "cut":
            if clean_close:
                await w.drain()
                w.close()
            else:
                w.transport.abort()  # mid chunked body: the client sees an incomplete read
            return False
        if b.kind == "malformed":
            self._write_body(w, self.malformed_frame(), chunked=True)
            self._write_body(w, b"", chunked=True, last=True)
            await w.drain()
            return True
        if b.kind == "error_event":
            self._write_body(w, self.error_frame(b.message), chunked=True)
            self._write_body(w, b"", chunked=True, last=True)
            await w.drain()
            return True
        # hang mid-stream
        await asyncio.sleep(b.seconds)
        return False

    @staticmethod
    def _write_body(w: asyncio.StreamWriter, data: bytes, *, chunked: bool, last: bool = False) -> None:
        if not chunked:
            w.write(data)
            return
        if data:
            w.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        if last:
            w.write(b"0\r\n\r\n")

    async def _json_response(
        self, w: asyncio.StreamWriter, req: RecordedRequest, status: int, obj: Any, headers: dict[str, str]
    ) -> bool:
        req.status = status
        data = json.dumps(obj).encode()
        reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Status"
        head = [
            f"HTTP/1.1 {status} {reason}",
            "Content-Type: application/json",
            f"Content-Length: {len(data)}",
            *self.response_headers(),
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        w.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
        await w.drain()
        return True

    async def _status_response(
        self, w: asyncio.StreamWriter, req: RecordedRequest, status: int, obj: Any, headers: dict[str, str]
    ) -> bool:
        req.behaviour = req.behaviour or ("status" if status != 429 else "rate_limit")
        return await self._json_response(w, req, status, obj, headers)

    # --- protocol hooks -------------------------------------------------------------

    stream_content_type = "text/event-stream"

    def response_headers(self) -> list[str]:
        return []

    def authorized(self, headers: dict[str, str]) -> bool:
        return headers.get("authorization") == f"Bearer {self.api_key}"

    def auth_error_message(self, headers: dict[str, str]) -> str:
        return "invalid api key"

    def wants_stream(self, body: dict) -> bool:
        return bool(body.get("stream"))

    def prompt_tokens(self, body: dict) -> int:
        texts = [str(m.get("content", "")) for m in body.get("messages", []) if isinstance(m, dict)]
        if isinstance(body.get("system"), str):
            texts.append(body["system"])
        return count_prompt_tokens(texts)

    def next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    def stream_frames(
        self, body: dict, deltas: list[str], usage: tuple[int, int] | None
    ) -> list[tuple[bytes, str | None, tuple[int, int] | None]]:
        raise NotImplementedError

    def complete_body(self, body: dict, text: str, usage: tuple[int, int] | None) -> Any:
        raise NotImplementedError

    def malformed_frame(self) -> bytes:
        raise NotImplementedError

    def error_frame(self, message: str | None) -> bytes:
        raise NotImplementedError

    def error_body(self, status: int, message: str | None) -> Any:
        raise NotImplementedError

    def other_route(self, req: RecordedRequest) -> tuple[int, Any] | None:
        return None

    def reply_schema(self, body: dict) -> Any:
        """The JSON Schema the request asks the reply to follow (None: no structured output)."""
        return None

    def invalid_request(self, body: dict) -> str | None:
        """Why the real API would refuse this request with 400 (None: it would take it)."""
        return None


def closed_schema_problem(schema: Any, path: tuple[str, ...] = ()) -> str | None:
    """Where `schema` breaks the strict-mode rule both OpenAI (strict json_schema) and
    Anthropic (strict tools) enforce: every object lists its properties, requires all of
    them and sets additionalProperties false; every value has a type. Said as OpenAI says it."""
    where = f"In context={path!r}"
    if not isinstance(schema, dict):
        return f"{where}, schema must be a JSON object"
    if "anyOf" in schema:
        for i, sub in enumerate(schema["anyOf"]):
            problem = closed_schema_problem(sub, (*path, "anyOf", str(i)))
            if problem:
                return problem
        return None
    if "enum" in schema or "const" in schema:
        return None
    t = schema.get("type")
    if t is None:
        return f"{where}, schema must have a 'type' key"
    if t == "object":
        if schema.get("additionalProperties") is not False:
            return f"{where}, 'additionalProperties' is required to be supplied and to be false"
        props = schema.get("properties") or {}
        missing = [p for p in props if p not in (schema.get("required") or [])]
        if missing:
            return f"{where}, 'required' is required to be supplied and to be an array including every key in properties. Missing '{missing[0]}'"
        for name, sub in props.items():
            problem = closed_schema_problem(sub, (*path, "properties", name))
            if problem:
                return problem
    if t == "array":
        return closed_schema_problem(schema.get("items"), (*path, "items"))
    return None


def _sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {payload}\n\n".encode()


class OpenAIServer(ProtocolServer):
    """`POST /v1/chat/completions` as OpenAI (and vLLM, llama.cpp, LM Studio, Ollama /v1) speak it."""

    protocol = "openai"
    chat_path = "/v1/chat/completions"
    default_models = ("gpt-test", "test-model")

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def response_headers(self) -> list[str]:
        return ["openai-processing-ms: 1", "x-request-id: req_local"]

    def auth_error_message(self, headers: dict[str, str]) -> str:
        got = headers.get("authorization", "").removeprefix("Bearer ")
        # OpenAI echoes (a masked form of) the key; echo it whole to prove adapters redact it.
        return f"Incorrect API key provided: {got}. You can find your API key at https://platform.openai.com/account/api-keys."

    def stream_frames(self, body, deltas, usage):
        cid = self.next_id("chatcmpl-")
        model = body.get("model", "test-model")
        created = int(time.time())
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict, finish: str | None, **extra: Any) -> dict:
            d = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_local",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                d["usage"] = None
            d.update(extra)
            return d

        frames: list[tuple[bytes, str | None, tuple[int, int] | None]] = [
            (_sse(chunk({"role": "assistant", "content": "", "refusal": None}, None)), None, None)
        ]
        frames += [(_sse(chunk({"content": t}, None)), t, None) for t in deltas]
        frames.append((_sse(chunk({}, "stop")), None, None))
        if include_usage and usage is not None:
            u = {
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
                "total_tokens": usage[0] + usage[1],
            }
            final = chunk({}, None)
            final["choices"] = []
            final["usage"] = u
            frames.append((_sse(final), None, usage))
        frames.append((b"data: [DONE]\n\n", None, None))
        return frames

    def complete_body(self, body, text, usage):
        u = usage or (0, 0)
        return {
            "id": self.next_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "test-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": u[0], "completion_tokens": u[1], "total_tokens": sum(u)},
        }

    def malformed_frame(self) -> bytes:
        return b'data: {"id": "chatcmpl-x", "choices": [{"delta": {"content": "oops\n\n'

    def error_frame(self, message: str | None) -> bytes:
        return _sse({"error": {"message": message or "The server had an error while processing your request.", "type": "server_error", "param": None, "code": None}})

    def error_body(self, status: int, message: str | None) -> Any:
        kinds = {
            400: ("invalid_request_error", None),
            401: ("invalid_request_error", "invalid_api_key"),
            403: ("invalid_request_error", "unsupported_country_region_territory"),
            404: ("invalid_request_error", "model_not_found"),
            429: ("requests", "rate_limit_exceeded"),
        }
        etype, code = kinds.get(status, ("server_error", None))
        default = {
            429: "Rate limit reached for requests. Please try again later.",
            404: "The model does not exist or you do not have access to it.",
        }.get(status, "The server had an error while processing your request." if status >= 500 else "Bad request.")
        return {"error": {"message": message or default, "type": etype, "param": None, "code": code}}

    def reply_schema(self, body: dict) -> Any:
        rf = body.get("response_format")
        if isinstance(rf, dict) and rf.get("type") == "json_schema" and isinstance(rf.get("json_schema"), dict):
            return rf["json_schema"].get("schema")
        return None

    def invalid_request(self, body: dict) -> str | None:
        if "response_format" not in body:
            return None
        if not self.structured_output:
            # What a server that predates structured output (or a strict proxy) answers.
            return "Unrecognized request argument supplied: response_format"
        rf = body["response_format"]
        if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema"):
            return "Invalid value for 'response_format.type': expected one of 'text', 'json_object', 'json_schema'."
        if rf["type"] != "json_schema":
            return None
        js = rf.get("json_schema")
        if not isinstance(js, dict):
            return "Missing required parameter: 'response_format.json_schema'."
        name = js.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name):
            return "Invalid 'response_format.json_schema.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'."
        schema = js.get("schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            got = schema.get("type") if isinstance(schema, dict) else type(schema).__name__
            return f"Invalid schema for response_format '{name}': schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{got}\"'."
        if js.get("strict"):
            problem = closed_schema_problem(schema)
            if problem:
                return f"Invalid schema for response_format '{name}': {problem}."
        return None

    def other_route(self, req):
        if req.method == "GET" and req.path == "/v1/models":
            return 200, {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 1700000000, "owned_by": "local"}
                    for m in self.models
                ],
            }
        if req.method == "GET" and req.path.startswith("/v1/models/"):
            name = req.path.removeprefix("/v1/models/")
            if name in self.models:
                return 200, {"id": name, "object": "model", "created": 1700000000, "owned_by": "local"}
            return 404, self.error_body(404, f"The model '{name}' does not exist")
        return None


class AnthropicServer(ProtocolServer):
    """`POST /v1/messages` with Anthropic's named SSE events."""

    protocol = "anthropic"
    chat_path = "/v1/messages"
    default_models = ("claude-test", "test-model")

    def response_headers(self) -> list[str]:
        return ["request-id: req_local", "anthropic-organization-id: local"]

    def authorized(self, headers: dict[str, str]) -> bool:
        # SDK 0.x sends x-api-key; the 2.x line sends the key as a Bearer token.
        return self.api_key in (headers.get("x-api-key"), headers.get("authorization", "").removeprefix("Bearer "))

    def auth_error_message(self, headers: dict[str, str]) -> str:
        got = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
        return f"invalid x-api-key {got}"

    #: The fields a custom tool may have (the API refuses any other: "Extra inputs are not permitted").
    TOOL_FIELDS = frozenset(
        {"name", "description", "input_schema", "cache_control", "strict", "eager_input_streaming",
         "type", "input_examples", "defer_loading", "allowed_callers"}
    )

    def _forced_tool(self, body: dict) -> dict | None:
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and choice.get("type") == "tool":
            for t in body.get("tools") or []:
                if isinstance(t, dict) and t.get("name") == choice.get("name"):
                    return t
        return None

    def reply_schema(self, body: dict) -> Any:
        tool = self._forced_tool(body)
        return tool.get("input_schema") if tool is not None else None

    def invalid_request(self, body: dict) -> str | None:
        if "tools" not in body and "tool_choice" not in body:
            return None
        if not self.structured_output:
            # An Anthropic-compatible proxy without tool support.
            return "tools: Extra inputs are not permitted"
        tools = body.get("tools", [])
        if not isinstance(tools, list):
            return "tools: Input should be a valid list"
        names = []
        for i, t in enumerate(tools):
            if not isinstance(t, dict):
                return f"tools.{i}: Input should be a valid dictionary"
            extra = sorted(set(t) - self.TOOL_FIELDS)
            if extra:
                return f"tools.{i}.custom.{extra[0]}: Extra inputs are not permitted"
            name = t.get("name")
            if not isinstance(name, str) or not re.fullmatch(r"[a-zA-Z0-9_-]{1,128}", name):
                return f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
            schema = t.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                return f"tools.{i}.custom.input_schema.type: Input should be 'object'"
            if t.get("strict"):
                problem = closed_schema_problem(schema)
                if problem:
                    return f"tools.{i}.custom.input_schema: {problem}"
            names.append(name)
        if len(set(names)) != len(names):
            return "tools: Tool names must be unique."
        choice = body.get("tool_choice")
        if choice is not None:
            if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
                return "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'"
            if choice["type"] == "tool" and choice.get("name") not in names:
                return f"tool_choice.name: Tool '{choice.get('name')}' not found in tools"
            thinking = body.get("thinking")
            if choice["type"] in ("any", "tool") and isinstance(thinking, dict) and thinking.get("type") == "enabled":
                return "Thinking may not be enabled when tool_choice forces tool use."
        return None

    def stream_frames(self, body, deltas, usage):
        mid = self.next_id("msg_")
        model = body.get("model", "claude-test")
        tool = self._forced_tool(body)
        if tool is not None:
            # A forced tool: its input streams as JSON fragments, and the turn ends in tool_use.
            block: dict[str, Any] = {"type": "tool_use", "id": self.next_id("toolu_"), "name": tool["name"], "input": {}}
            stop_reason = "tool_use"

            def delta(t: str) -> dict:
                return {"type": "input_json_delta", "partial_json": t}
        else:
            block, stop_reason = {"type": "text", "text": ""}, "end_turn"

            def delta(t: str) -> dict:
                return {"type": "text_delta", "text": t}

        in_tok = usage[0] if usage else self.prompt_tokens(body)
        out_tok = usage[1] if usage else len(deltas)
        frames: list[tuple[bytes, str | None, tuple[int, int] | None]] = [
            (
                _sse(
                    {
                        "type": "message_start",
                        "message": {
                            "id": mid,
                            "type": "message",
                            "role": "assistant",
                            "content": [],
                            "model": model,
                            "stop_reason": None,
                            "stop_sequence": None,
                            "usage": {
                                "input_tokens": in_tok,
                                "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 0,
                                "output_tokens": 1,
                            },
                        },
                    },
                    "message_start",
                ),
                None,
                (in_tok, 1),
            ),
            (
                _sse(
                    {"type": "content_block_start", "index": 0, "content_block": block},
                    "content_block_start",
                ),
                None,
                None,
            ),
            (_sse({"type": "ping"}, "ping"), None, None),
        ]
        frames += [
            (
                _sse(
                    {"type": "content_block_delta", "index": 0, "delta": delta(t)},
                    "content_block_delta",
                ),
                t,
                None,
            )
            for t in deltas
        ]
        frames.append((_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"), None, None))
        frames.append(
            (
                _sse(
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                        "usage": {"output_tokens": out_tok},
                    },
                    "message_delta",
                ),
                None,
                (in_tok, out_tok),
            )
        )
        frames.append((_sse({"type": "message_stop"}, "message_stop"), None, None))
        return frames

    def complete_body(self, body, text, usage):
        u = usage or (0, 0)
        return {
            "id": self.next_id("msg_"),
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": text}],
            "model": body.get("model", "claude-test"),
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": u[0], "output_tokens": u[1]},
        }

    def malformed_frame(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": {"text": "oo\n\n'

    def error_frame(self, message: str | None) -> bytes:
        return _sse(
            {"type": "error", "error": {"type": "overloaded_error", "message": message or "Overloaded"}},
            "error",
        )

    def error_body(self, status: int, message: str | None) -> Any:
        etype = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            413: "request_too_large",
            429: "rate_limit_error",
            529: "overloaded_error",
        }.get(status, "api_error")
        default = {
            429: "Number of request tokens has exceeded your per-minute rate limit",
            529: "Overloaded",
        }.get(status, "Internal server error" if status >= 500 else "invalid request")
        return {"type": "error", "error": {"type": etype, "message": message or default}}

    def other_route(self, req):
        def model_obj(m: str) -> dict:
            return {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}

        if req.method == "GET" and req.path == "/v1/models":
            data = [model_obj(m) for m in self.models]
            return 200, {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        if req.method == "GET" and req.path.startswith("/v1/models/"):
            name = req.path.removeprefix("/v1/models/")
            if name in self.models:
                return 200, model_obj(name)
            return 404, self.error_body(404, f"model: {name}")
        return None


class OllamaServer(ProtocolServer):
    """Ollama's native API: `POST /api/chat` streaming NDJSON, `GET /api/tags`, `/api/version`."""

    protocol = "ollama"
    chat_path = "/api/chat"
    stream_content_type = "application/x-ndjson"
    default_models = ("llama3.2:latest", "test-model:latest")

    def authorized(self, headers: dict[str, str]) -> bool:
        return headers.get("authorization") == f"Bearer {self.api_key}"

    def wants_stream(self, body: dict) -> bool:
        return body.get("stream", True) is not False  # Ollama streams unless told not to

    @staticmethod
    def _now() -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())

    def stream_frames(self, body, deltas, usage):
        model = body.get("model", "test-model")

        def line(obj: dict) -> bytes:
            return (json.dumps(obj, separators=(",", ":")) + "\n").encode()

        frames: list[tuple[bytes, str | None, tuple[int, int] | None]] = [
            (
                line(
                    {
                        "model": model,
                        "created_at": self._now(),
                        "message": {"role": "assistant", "content": t},
                        "done": False,
                    }
                ),
                t,
                None,
            )
            for t in deltas
        ]
        done: dict[str, Any] = {
            "model": model,
            "created_at": self._now(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "total_duration": 1_000_000,
            "load_duration": 1_000,
        }
        if usage is not None:
            done.update(
                prompt_eval_count=usage[0],
                prompt_eval_duration=1_000,
                eval_count=usage[1],
                eval_duration=1_000,
            )
        frames.append((line(done), None, usage))
        return frames

    def complete_body(self, body, text, usage):
        d: dict[str, Any] = {
            "model": body.get("model", "test-model"),
            "created_at": self._now(),
            "message": {"role": "assistant", "content": text},
            "done": True,
            "done_reason": "stop",
        }
        if usage is not None:
            d.update(prompt_eval_count=usage[0], eval_count=usage[1])
        return d

    def malformed_frame(self) -> bytes:
        return b'{"model": "test-model", "message": {"content": "oo\n'

    def error_frame(self, message: str | None) -> bytes:
        return (json.dumps({"error": message or "an error was encountered while running the model"}) + "\n").encode()

    def reply_schema(self, body: dict) -> Any:
        f = body.get("format")
        return f if isinstance(f, dict) else None

    def invalid_request(self, body: dict) -> str | None:
        f = body.get("format")
        if f in (None, "", "json"):
            return None
        if not self.structured_output:
            return 'invalid format: expected "json" or a JSON schema'  # Ollama before 0.5
        if not isinstance(f, dict) or not ({"type", "properties", "anyOf", "$ref"} & f.keys()):
            return "invalid JSON schema in format"
        return None

    def error_body(self, status: int, message: str | None) -> Any:
        default = {
            404: 'model "test-model" not found, try pulling it first',
            401: "unauthorized",
            429: "too many requests",
        }.get(status, "internal server error")
        return {"error": message or default}

    def other_route(self, req):
        if req.method == "GET" and req.path == "/api/tags":
            return 200, {
                "models": [
                    {
                        "name": m,
                        "model": m,
                        "modified_at": "2025-01-01T00:00:00Z",
                        "size": 2_000_000_000,
                        "digest": "0" * 64,
                        "details": {
                            "parent_model": "",
                            "format": "gguf",
                            "family": "llama",
                            "families": ["llama"],
                            "parameter_size": "3.2B",
                            "quantization_level": "Q4_K_M",
                        },
                    }
                    for m in self.models
                ]
            }
        if req.method == "GET" and req.path == "/api/version":
            return 200, {"version": "0.0.0-local"}
        if req.method == "GET" and req.path == "/":
            return 200, "Ollama is running"
        return None


def http_date(seconds_from_now: float) -> str:
    """A Retry-After value in HTTP-date form."""
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


SERVERS: dict[str, type[ProtocolServer]] = {
    "openai": OpenAIServer,
    "anthropic": AnthropicServer,
    "ollama": OllamaServer,
}


def main(argv: list[str] | None = None) -> None:
    """Serve one protocol until interrupted: ``python -m tests.support.servers openai``."""
    import argparse
    import signal

    p = argparse.ArgumentParser(description="A local model server speaking one provider protocol (for demos and benchmarks).")
    p.add_argument("protocol", choices=sorted(SERVERS))
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before each reply's first byte")
    p.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between streamed chunks")
    p.add_argument("--api-key", default=None, help="require this key (default: accept any)")
    p.add_argument("--no-structured-output", action="store_true",
                   help="refuse the structured-output field with 400, as a server that predates it does")
    p.add_argument("--loose-reply", default=None, metavar="TEXT",
                   help="what the 'model' writes when no reply schema constrains it (a small model's prose)")
    args = p.parse_args(argv)
    srv = SERVERS[args.protocol](
        api_key=args.api_key, latency=args.latency_ms / 1000, chunk_delay=args.chunk_delay_ms / 1000, record=False,
        structured_output=not args.no_structured_output, loose_reply=args.loose_reply,
    )
    srv.start()
    print(srv.base_url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    srv.stop()


if __name__ == "__main__":
    main()
