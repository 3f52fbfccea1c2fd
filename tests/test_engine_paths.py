"""A turn whose provider never waits (the sim at full speed, an instant model) runs
eagerly, without a task or a timer (engine/eager.py); one whose provider waits goes on
in a task of its own, with its call's timeout armed: both give the same events."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.conftest import demo_copy
from lemming.engine.engine import Engine
from lemming.engine.org import load_org
from lemming.engine.providers.registry import ProviderRegistry
from lemming.engine.replay import canonical
from tests.conftest import REPO


class _Waiting:
    """The sim adapter whose stream waits on the event loop before each item: its turns
    go on in tasks of their own, with the call's timeout armed (the eager path's other
    side)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name = inner.name

    async def stream(self, request: Any) -> Any:
        await asyncio.sleep(0)
        async for item in self._inner.stream(request):
            await asyncio.sleep(0)
            yield item

    async def probe(self, model: str, timeout: float = 3.0) -> Any:
        return await self._inner.probe(model, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()
class _WaitingRegistry(ProviderRegistry):
    def resolve(self, key: str) -> tuple[Any, Any]:
        adapter, spec = super().resolve(key)
        return _Waiting(adapter), spec


async def _run(registry_cls: type[ProviderRegistry], ticks: int) -> tuple[list[str], int]:
    org = load_org(demo_copy())  # the demo's tools write files: each run starts from the same ones
    engine = Engine(org, seed=11, registry=registry_cls(org.models))
    sub = engine.subscribe(tokens=False)
    await engine.run(ticks=ticks)
    events = [e for e in sub.drain() if e.persistent]
    return [json.dumps(canonical(e.to_dict()), sort_keys=True) for e in events], len(events)


async def test_turns_that_wait_give_the_events_of_turns_run_at_once() -> None:
    """A turn whose provider never waits runs eagerly, without a task or a timer; one that
    waits goes on in a task: the same events either way."""
    eager, n = await _run(ProviderRegistry, 60)
    waiting, _ = await _run(_WaitingRegistry, 60)
    assert n > 500  # the demo organisation did plenty in 60 ticks
    assert sorted(eager) == sorted(waiting)


# --- one call's stream and retries ---------------------------------------------------


class _Stream:
    """An async iterator over `items` that counts its closings; `wait` makes each item wait
    on the event loop first."""

    def __init__(self, items: list[Any], wait: bool = False) -> None:
        self.items = list(items)
        self.wait = wait
        self.closed = 0

    def __aiter__(self) -> "_Stream":
        return self

    async def __anext__(self) -> Any:
        if self.wait:
            await asyncio.sleep(0)
        if not self.items:
            raise StopAsyncIteration
        return self.items.pop(0)

    async def aclose(self) -> None:
        self.closed += 1


class _OneStream:
    name = "one-stream"

    def __init__(self, stream: _Stream) -> None:
        self.stream_ = stream

    def stream(self, request: Any) -> _Stream:
        return self.stream_


async def test_a_stream_read_to_its_end_is_left_as_it_ended_and_one_cut_off_is_closed() -> None:
    """An instant call's stream, read to its end, has ended (an async generator that
    returned has nothing left to close): it is not closed again. One cut off (a reply past
    the cap) is closed, whether it was read at once or had to wait."""
    from lemming.engine.providers.base import ChatMessage, CompletionRequest, TextDelta, Usage
    from lemming.engine.providers.retry import RetryPolicy, stream_with_retries

    request = CompletionRequest("m", [ChatMessage("user", "hi")], max_tokens=10, timeout=5)
    policy = RetryPolicy(max_attempts=2, min_reply_chars=4, chars_per_token=0)
    for wait in (False, True):
        whole = _Stream([TextDelta("abc"), Usage(3, 1)], wait)
        result = await stream_with_retries(_OneStream(whole), request, lambda t, r: None, policy=policy)  # type: ignore[arg-type]
        assert (result.text, result.attempts, result.error, whole.closed) == ("abc", 1, None, 0)
        assert (result.billed.input_tokens, result.billed.output_tokens) == (3, 1)
        cut = _Stream([TextDelta("abc"), TextDelta("def"), Usage(3, 2)], wait)
        result = await stream_with_retries(_OneStream(cut), request, lambda t, r: None, policy=policy)  # type: ignore[arg-type]
        assert result.error is not None and result.error.kind == "too_long" and result.attempts == 1
        assert cut.closed == 1 and result.text == "abc"


def test_a_calls_retry_jitter_is_seeded_by_the_run_seed_the_agent_the_tick_and_the_round() -> None:
    """The jitter of a seeded run's retries: "seed:agent:tick", ":round" after a turn's
    first call (the seed string is only written when a retry needs it)."""
    import random

    from lemming.engine.engine import _RetryJitter

    assert _RetryJitter(7, "a00001", 12, 1).seed == "7:a00001:12"
    assert _RetryJitter(7, "a00001", 12, 3).seed == "7:a00001:12:3"
    jitter = _RetryJitter(7, "a00001", 12, 2)
    want = random.Random("7:a00001:12:2")
    assert [jitter.uniform(0, 1) for _ in range(3)] == [want.uniform(0, 1) for _ in range(3)]
