"""A lean model server on 127.0.0.1 for the provider benchmarks: one event loop, no threads.

It answers every chat request of one protocol (OpenAI chat completions SSE, Anthropic
messages SSE, Ollama /api/chat NDJSON) with the same streamed reply after a fixed
latency, over HTTP/1.1 keep-alive with chunked bodies. The frames are built once, so a
request costs the server little more than reading its headers and body: what a
benchmark then measures is the client (the SDK and the engine), not the server.

The protocol-faithful servers with failure modes that the tests use are in the test
suite; this one only has to be right for a well-behaved streamed reply with usage.

Run on its own (prints its base URL, serves until SIGTERM):
``python -m lemming.tui.bench.loopback openai --latency-ms 250``.
"""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

#: The reply every request gets: a LeMMing-style reply the engine parses as one message.
REPLY: str = json.dumps(
    {
        "outbox_entries": [{"kind": "message", "payload": {"text": "Status: all systems nominal. Proceeding with the plan."}, "recipients": []}],
        "memory_updates": [],
        "tool_calls": [],
        "notes": "replied from the benchmark server",
    }
)
#: Characters per streamed delta (about a token).
CHUNK_CHARS = 4
#: Usage reported with every reply (input tokens are not counted: the benchmark does not need them).
PROMPT_TOKENS = 100

PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "ollama": "/api/chat"}


def _deltas(text: str) -> list[str]:
    return [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)]


def _sse(data: Any, event: str | None = None) -> bytes:
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _openai_frames(deltas: list[str]) -> list[bytes]:
    def chunk(delta: dict, finish: str | None) -> dict:
        return {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "bench-model",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            "usage": None,
        }

    frames = [_sse(chunk({"role": "assistant", "content": ""}, None))]
    frames += [_sse(chunk({"content": d}, None)) for d in deltas]
    frames.append(_sse(chunk({}, "stop")))
    final = chunk({}, None)
    final["choices"] = []
    final["usage"] = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": len(deltas), "total_tokens": PROMPT_TOKENS + len(deltas)}
    frames.append(_sse(final))
    frames.append(b"data: [DONE]\n\n")
    return frames


def _anthropic_frames(deltas: list[str]) -> list[bytes]:
    usage = {"input_tokens": PROMPT_TOKENS, "output_tokens": 1}
    start = {"id": "msg_bench", "type": "message", "role": "assistant", "content": [], "model": "bench-model", "stop_reason": None, "stop_sequence": None, "usage": usage}
    frames = [
        _sse({"type": "message_start", "message": start}, "message_start"),
        _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}, "content_block_start"),
    ]
    frames += [_sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": d}}, "content_block_delta") for d in deltas]
    frames.append(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    frames.append(_sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": len(deltas)}}, "message_delta"))
    frames.append(_sse({"type": "message_stop"}, "message_stop"))
    return frames


def _ollama_frames(deltas: list[str]) -> list[bytes]:
    def line(d: dict) -> bytes:
        return (json.dumps(d, separators=(",", ":")) + "\n").encode()

    at = "2025-01-01T00:00:00Z"
    frames = [line({"model": "bench-model", "created_at": at, "message": {"role": "assistant", "content": d}, "done": False}) for d in deltas]
    frames.append(
        line(
            {
                "model": "bench-model", "created_at": at, "message": {"role": "assistant", "content": ""}, "done": True,
                "done_reason": "stop", "prompt_eval_count": PROMPT_TOKENS, "eval_count": len(deltas),
            }
        )
    )
    return frames


FRAMES = {"openai": _openai_frames, "anthropic": _anthropic_frames, "ollama": _ollama_frames}
CONTENT_TYPES = {"openai": b"text/event-stream", "anthropic": b"text/event-stream", "ollama": b"application/x-ndjson"}


def _chunked(frames: list[bytes]) -> bytes:
    """The frames as one HTTP/1.1 chunked body (each frame its own chunk), with its last chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(f), f) for f in frames) + b"0\r\n\r\n"


class LoopbackServer:
    """One protocol on 127.0.0.1 in the running event loop; `async with` starts and stops it."""

    def __init__(self, protocol: str, *, latency: float = 0.25, reply: str = REPLY) -> None:
        if protocol not in PATHS:
            raise ValueError(f"unknown protocol {protocol!r}; one of {', '.join(PATHS)}")
        self.protocol = protocol
        self.latency = latency
        self.requests = 0
        self._path = PATHS[protocol].encode()
        head = b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ntransfer-encoding: chunked\r\n\r\n" % CONTENT_TYPES[protocol]
        self._response = head + _chunked(FRAMES[protocol](_deltas(reply)))
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        """What a client of this protocol is given as its base URL."""
        root = f"http://127.0.0.1:{self.port}"
        return root + "/v1" if self.protocol == "openai" else root

    async def __aenter__(self) -> "LoopbackServer":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                path = head.split(b" ", 2)[1].split(b"?", 1)[0]
                if path != self._path:
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    continue
                self.requests += 1
                if self.latency:
                    await asyncio.sleep(self.latency)
                writer.write(self._response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass  # the server is stopping: end quietly (3.11's stream callback logs a cancelled handler)
        finally:
            writer.close()


async def _serve_forever(protocol: str, latency: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with LoopbackServer(protocol, latency=latency) as srv:
        print(srv.base_url, flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m lemming.tui.bench.loopback", description="A lean model server for benchmarks.")
    p.add_argument("protocol", choices=sorted(PATHS))
    p.add_argument("--latency-ms", type=float, default=250.0, help="delay before each reply (default 250)")
    args = p.parse_args(argv)
    asyncio.run(_serve_forever(args.protocol, args.latency_ms / 1000))


if __name__ == "__main__":
    main()
