"""The engine's inline path (a provider that has its reply ready, `complete_now`: the sim
at full speed) gives the same events as the streamed path every remote provider takes."""

from __future__ import annotations

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
