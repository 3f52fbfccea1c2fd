"""Model keys → provider adapters, built lazily, one per (provider, base_url, key variable).

Keys are read from the environment only, at the moment an adapter is built, and
are never copied anywhere else.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from typing import Any, Mapping

from lemming.engine.resume import ModelSpec
from lemming.engine.slots import Slots
from lemming.engine.providers.base import Provider, ProviderConfig, ProviderError
from lemming.engine.providers.transport import ProviderSettings, pool_size

#: provider name → (module, class). Adapters import their SDK only when first used.
ADAPTERS: dict[str, tuple[str, str]] = {
    "sim": ("lemming.engine.providers.sim", "SimProvider"),
    "openai": ("lemming.engine.providers.openai", "OpenAIProvider"),
    "anthropic": ("lemming.engine.providers.anthropic", "AnthropicProvider"),
    "ollama": ("lemming.engine.providers.ollama", "OllamaProvider"),
    "cli": ("lemming.engine.providers.cli", "CliProvider"),
}

#: The environment variable holding each provider's key when models.json names none.
DEFAULT_KEY_ENV: dict[str, str | None] = {
    "sim": None,
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "ollama": None,
    "cli": None,  # a command-line agent gets no key unless its entry's env names one
}

#: Models every organisation has, even without a models.json.
BUILTIN_MODELS: dict[str, ModelSpec] = {
    "sim": ModelSpec(
        provider="sim",
        model_name="sim-1",
        prices={"input_per_mtok": 1.0, "output_per_mtok": 4.0},
    ),
}

DEFAULT_CONCURRENCY = {"sim": 1_000, "openai": 32, "anthropic": 16, "ollama": 4, "cli": 8}

#: Providers whose calls can run in worker processes (`provider_workers` in org.json).
POOLABLE = frozenset({"openai", "anthropic", "ollama"})


def unknown_provider(name: str) -> str:
    """The one line for a provider name no adapter has (a made-up name is quoted and bounded)."""
    shown = repr(name) if len(name) <= 60 else repr(name[:57]) + "..."
    return f"unknown provider {shown}; known: {', '.join(sorted(ADAPTERS))}"


class ProviderRegistry:
    """Resolves model keys to ready adapters and per-provider concurrency limits."""

    def __init__(
        self,
        models: Mapping[str, ModelSpec],
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, object] | None = None,
    ) -> None:
        self.models: dict[str, ModelSpec] = {**BUILTIN_MODELS, **models}
        self._env = env if env is not None else os.environ
        #: Extra adapter options applied to every adapter of a provider (e.g. sim speed from the CLI).
        self._overrides = dict(overrides or {})
        self._adapters: dict[tuple, Provider] = {}
        self._limits: dict[tuple, Slots] = {}
        #: model key -> (adapter, spec) once resolved: every turn asks, the answer only
        #: changes with the models
        self._resolved: dict[str, tuple[Provider, ModelSpec]] = {}
        self.settings = ProviderSettings()
        self._pool = None  # workers.WorkerPool once a pooled adapter is built

    def use_settings(self, settings: object) -> None:
        """Take org.json's provider settings (`provider_workers`, `provider_connections`);
        adapters built from now on follow them. Called by the engine before a run."""
        self.settings = ProviderSettings.from_org(settings)

    async def wait_ready(self) -> None:
        """Start the worker processes and open the adapters built so far in each, so that
        neither a process start nor an SDK import lands in a tick. A no-op without workers;
        an adapter that cannot be built is left to fail its turns as a config error."""
        if self._pool is not None:
            try:
                await self._pool.start()
            except ProviderError:
                pass

    def update_models(self, models: Mapping[str, ModelSpec]) -> None:
        self.models = {**BUILTIN_MODELS, **models}
        self._resolved.clear()

    def spec(self, key: str) -> ModelSpec:
        try:
            return self.models[key]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise ProviderError(
                "config", f"unknown model key {key!r}; models.json defines: {known}"
            ) from None

    def key_env(self, spec: ModelSpec) -> str | None:
        return spec.api_key_env or DEFAULT_KEY_ENV.get(spec.provider)

    def _cache_key(self, spec: ModelSpec) -> tuple:
        return (spec.provider, spec.base_url, self.key_env(spec), _freeze(spec.provider_config))

    def resolve(self, key: str) -> tuple[Provider, ModelSpec]:
        """The adapter and spec for a model key; ProviderError(kind="config") if unusable."""
        hit = self._resolved.get(key)
        if hit is not None:
            return hit
        spec = self.spec(key)
        ck = self._cache_key(spec)
        adapter = self._adapters.get(ck)
        if adapter is None:
            adapter = self._build(spec)
            self._adapters[ck] = adapter
        self._resolved[key] = (adapter, spec)
        return adapter, spec

    def _build(self, spec: ModelSpec) -> Provider:
        if spec.provider not in ADAPTERS:
            raise ProviderError(
                "config",
                unknown_provider(spec.provider),
            )
        env_name = self.key_env(spec)
        api_key = None
        if env_name:
            api_key = self._env.get(env_name)
            # Local OpenAI-compatible servers (vLLM, llama.cpp, LM Studio) need no key.
            if not api_key and not (spec.provider == "openai" and spec.base_url):
                raise ProviderError(
                    "config",
                    f"{env_name} is not set; export it to run {spec.provider} models",
                )
        base_url = spec.base_url
        if spec.provider == "ollama" and base_url is None:
            base_url = self._env.get("OLLAMA_HOST")
        options = {**spec.provider_config, **self._overrides.get(spec.provider, {})}  # type: ignore[dict-item]
        options.pop("base_url", None)
        options.pop("api_key_env", None)
        connections = pool_size(self.settings.connections, self._limit(spec))
        workers = self._workers_for(spec) if spec.provider in POOLABLE else 0
        if workers:
            from lemming.engine.providers.workers import PooledProvider, WorkerPool

            if self._pool is None:
                self._pool = WorkerPool(workers)
            # Each worker holds its share of the sockets.
            return PooledProvider(self._pool, spec.provider, base_url, api_key, options, -(-connections // workers))
        module_name, class_name = ADAPTERS[spec.provider]
        cls = getattr(importlib.import_module(module_name), class_name)
        return cls(ProviderConfig(spec.provider, base_url, api_key, options, connections))

    def _workers_for(self, spec: ModelSpec) -> int:
        """Workers for one model's calls: what org.json says; with "auto", one per core
        once enough calls can be in flight to that model for one loop to be the limit."""
        if self.settings.workers is not None:
            return self.settings.workers
        from lemming.engine.providers.workers import SPREAD_AT, default_workers

        in_flight = self._limit(spec)
        if self.settings.max_concurrency:
            in_flight = min(in_flight, self.settings.max_concurrency)
        return default_workers() if in_flight >= SPREAD_AT else 0

    def _limit(self, spec: ModelSpec) -> int:
        return spec.concurrency or DEFAULT_CONCURRENCY.get(spec.provider, 8)

    def semaphore(self, key: str) -> Slots:
        spec = self.spec(key)
        ck = (spec.provider, spec.base_url)
        sem = self._limits.get(ck)
        if sem is None:
            sem = self._limits[ck] = Slots(self._limit(spec))
        return sem

    async def aclose(self) -> None:
        """Close every adapter built (their HTTP clients and sockets) and the worker pool.

        Runs to its end even when cancelled meanwhile, then re-raises the cancellation. A
        run whose app shuts down is cancelled, then cancelled again while it closes, and
        asyncio.run's own shutdown cancels every task left, the closing one included: an
        adapter skipped then keeps its HTTP session until the interpreter exits, which
        prints "Unclosed client session" / "Unclosed connector" over the terminal."""
        adapters = list(self._adapters.values())
        self._adapters.clear()
        self._resolved.clear()
        pool, self._pool = self._pool, None
        if pool is not None:
            adapters.append(pool)
        if not adapters:
            return
        me = asyncio.current_task()
        requests = me.cancelling() if me is not None else 0
        for _ in range(CLOSE_ATTEMPTS):
            # In a task of its own: this one may be cancelled any number of times meanwhile.
            closing = asyncio.ensure_future(_close_all(adapters))
            while not closing.done():
                try:
                    await asyncio.shield(closing)
                except asyncio.CancelledError:
                    pass  # this task's own cancellation is raised below, once all are closed
            if not closing.cancelled():
                break
            # cancelled before it began (asyncio.run's last pass cancels every task): again
        if me is not None and me.cancelling() > requests:
            raise asyncio.CancelledError


#: Attempts at closing one adapter when a cancellation cuts its close short.
CLOSE_ATTEMPTS = 3


async def _close_all(closables: list[Any]) -> None:
    """Close each in turn. A failure never skips the others; a cancellation (asyncio.run
    cancels every task once at its end, this one included) cuts one close short, which is
    then finished: every aclose here can be called again, and closes what is still open."""
    for closable in closables:
        for _ in range(CLOSE_ATTEMPTS):
            try:
                await closable.aclose()
            except asyncio.CancelledError:
                continue
            except Exception:  # closing must never fail a shutdown
                pass
            break


def check_spec(spec: ModelSpec, env: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """What makes a models.json entry unusable, as (field, message): an unknown provider;
    for a cli entry a missing command, a program not on PATH, an unset `${env.NAME}`."""
    if spec.provider not in ADAPTERS:
        return [("provider", unknown_provider(spec.provider))]
    if spec.base_url is not None and spec.provider in ("openai", "anthropic", "ollama"):
        from urllib.parse import urlsplit

        url = urlsplit(spec.base_url.strip())
        if url.scheme not in ("http", "https") or not url.netloc or " " in url.netloc:
            return [("base_url", f"{spec.base_url!r} is not a URL; give http://HOST:PORT/... or https://..."
                     " (docs/models.md lists each server's)")]
    if spec.provider == "cli":
        from lemming.engine.providers.cli import check_config

        return check_config(spec.provider_config, env)
    return []


def _freeze(v: object) -> object:
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v
