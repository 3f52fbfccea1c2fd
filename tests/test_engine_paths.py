"""The engine's inline path (a provider that has its reply ready, `complete_now`: the sim
at full speed) gives the same events as the streamed path every remote provider takes."""

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


class _StreamOnly:
    """The sim adapter without `complete_now`: its turns are streamed."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name = inner.name

    def stream(self, request: Any) -> Any:
        return self._inner.stream(request)

    async def probe(self, model: str, timeout: float = 3.0) -> Any:
        return await self._inner.probe(model, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _StreamingRegistry(ProviderRegistry):
    def resolve(self, key: str) -> tuple[Any, Any]:
        adapter, spec = super().resolve(key)
        return _StreamOnly(adapter), spec


class _Waiting(_StreamOnly):
    """The sim adapter whose stream waits on the event loop before each item: its turns
    go on in tasks of their own, with the call's timeout armed (the eager path's other
    side, engine/eager.py)."""

    async def stream(self, request: Any) -> Any:
        await asyncio.sleep(0)
        async for item in self._inner.stream(request):
            await asyncio.sleep(0)
            yield item


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


async def test_the_inline_path_gives_the_events_of_the_streamed_one() -> None:
    inline, n = await _run(ProviderRegistry, 60)
    streamed, _ = await _run(_StreamingRegistry, 60)
    assert n > 500  # the demo organisation did plenty in 60 ticks
    # The same events; within a tick, a turn that calls tools may publish them in another
    # order on each path (the inline path defers its tool calls to the streamed turn).
    assert sorted(inline) == sorted(streamed)


async def test_turns_that_wait_give_the_events_of_turns_run_at_once() -> None:
    """A turn whose provider never waits runs eagerly, without a task or a timer; one that
    waits goes on in a task: the same events either way."""
    eager, n = await _run(_StreamingRegistry, 40)
    waiting, _ = await _run(_WaitingRegistry, 40)
    assert n > 300
    assert sorted(eager) == sorted(waiting)
