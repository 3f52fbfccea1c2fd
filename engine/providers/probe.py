"""Probing models: every model key of an organisation, and whether it answers (`lemming models`).

Probes run concurrently, each bounded by a timeout; a probe is a cheap listing
call (`/v1/models`, `/v1/models/{id}`, `/api/tags`), never a completion, so it
costs nothing. Keys are read from the environment and never printed: the table
says only whether the variable is set.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Mapping

from lemming.engine.resume import ModelSpec
from lemming.engine.providers.base import ProbeResult, ProviderError
from lemming.engine.providers.registry import ProviderRegistry


async def _probe_one(registry: ProviderRegistry, key: str, timeout: float) -> tuple[str, ModelSpec, ProbeResult]:
    spec = registry.spec(key)
    t0 = time.perf_counter()
    try:
        provider, spec = registry.resolve(key)
        async with asyncio.timeout(timeout + 1.0):  # the SDK's own timeout should fire first
            result = await provider.probe(spec.model_name, timeout)
    except ProviderError as e:
        result = ProbeResult(False, str(e))
    except TimeoutError:
        result = ProbeResult(False, f"timeout: no answer within {timeout:g}s", (time.perf_counter() - t0) * 1000)
    except Exception as e:  # a probe must never crash the listing
        result = ProbeResult(False, f"probe failed: {type(e).__name__}: {e}")
    return key, spec, result


async def probe_models(
    registry: ProviderRegistry, keys: list[str] | None = None, *, timeout: float = 3.0
) -> list[tuple[str, ModelSpec, ProbeResult]]:
    """Probe every model key (or the given ones) concurrently; results in key order."""
    keys = sorted(registry.models) if keys is None else keys
    return list(await asyncio.gather(*(_probe_one(registry, k, timeout) for k in keys)))


def describe(registry: ProviderRegistry, key: str, spec: ModelSpec, env: Mapping[str, str]) -> dict[str, Any]:
    """A row of the table: what the model is, where it lives, whether its key is set (never the key)."""
    key_env = registry.key_env(spec)
    return {
        "key": key,
        "provider": spec.provider,
        "model": spec.model_name,
        "base_url": spec.base_url or _default_url(spec.provider, env),
        "key_env": key_env,
        "key_set": bool(key_env and env.get(key_env)),
        "input_per_mtok": spec.prices.input_per_mtok,
        "output_per_mtok": spec.prices.output_per_mtok,
    }


def _default_url(provider: str, env: Mapping[str, str]) -> str:
    return {
        "openai": env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1",
        "anthropic": env.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com",
        "ollama": env.get("OLLAMA_HOST") or "http://localhost:11434",
        "sim": "(in process)",
    }.get(provider, "")
