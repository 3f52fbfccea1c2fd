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
