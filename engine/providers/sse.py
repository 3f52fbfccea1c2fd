"""A small Server-Sent Events decoder over an async iterator of lines (WHATWG rules that matter here)."""

from __future__ import annotations

from typing import AsyncIterator, NamedTuple


class SSEEvent(NamedTuple):
    event: str | None
    data: str


async def iter_sse(lines: AsyncIterator[str]) -> AsyncIterator[SSEEvent]:
    """Yield one event per blank-line-terminated block that carried data.

    Multiple ``data:`` lines join with newlines; ``:`` lines are comments; one
    space after the colon is dropped. An unterminated block at EOF is dropped,
    as the spec says — a cut stream must not look like a complete event.
    """
    event: str | None = None
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield SSEEvent(event, "\n".join(data))
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value or None
