"""`lemming models`: every model key of an organisation, and whether it answers.

Probes run concurrently, each bounded by a timeout; a probe is a cheap listing
call (`/v1/models`, `/v1/models/{id}`, `/api/tags`), never a completion, so it
costs nothing. Keys are read from the environment and never printed: the table
says only whether the variable is set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
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


def add_models_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `lemming models` on the CLI's subparsers."""
    p = sub.add_parser("models", help="list models.json's model keys and probe whether each answers")
    p.add_argument("--org", type=Path, default=Path("."), metavar="DIR", help="organisation folder (holds models.json); default: current folder")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per probe (default 3)")
    p.add_argument("--no-probe", action="store_true", help="list only; make no network calls")
    p.add_argument("--json", action="store_true", help="one JSON object per model on stdout")
    p.add_argument("keys", nargs="*", help="only these model keys")
    p.set_defaults(func=models_command)
    return p


def models_command(args: argparse.Namespace, *, env: Mapping[str, str] | None = None, console: Any = None) -> int:
    """Print the model table. Exit 0 when every probed model answered, 1 otherwise, 2 on bad files."""
    import os

    from rich.console import Console
    from rich.table import Table

    from lemming.engine.org import load_models

    env = os.environ if env is None else env
    console = console or Console(highlight=False)
    root = Path(getattr(args, "org", None) or ".")
    problems: list[str] = []
    models = load_models(root, problems)
    for line in problems:
        console.print(f"[red]error[/]: {line}", markup=True)
    registry = ProviderRegistry(models, env=env)
    keys = list(getattr(args, "keys", None) or sorted(registry.models))
    unknown = [k for k in keys if k not in registry.models]
    if unknown:
        console.print(f"[red]error[/]: unknown model key(s): {', '.join(unknown)}; known: {', '.join(sorted(registry.models))}")
        return 2
    probe = not getattr(args, "no_probe", False)
    timeout = float(getattr(args, "timeout", 3.0) or 3.0)

    async def go() -> list[tuple[str, ModelSpec, ProbeResult]]:
        try:
            return await probe_models(registry, keys, timeout=timeout)
        finally:
            await registry.aclose()

    results = asyncio.run(go()) if probe else [(k, registry.spec(k), None) for k in keys]

    if getattr(args, "json", False):
        for key, spec, res in results:
            row = describe(registry, key, spec, env)
            if res is not None:
                row.update(ok=res.ok, detail=res.detail, latency_ms=res.latency_ms)
            print(json.dumps(row, sort_keys=True))
    else:
        table = Table(title=f"models ({root / 'models.json'})")
        for col in ("key", "provider", "model", "base url", "key variable", "price in/out per Mtok"):
            table.add_column(col, overflow="fold")
        if probe:
            table.add_column("status")
            table.add_column("ms", justify="right")
            table.add_column("detail", overflow="fold")
        for key, spec, res in results:
            row = describe(registry, key, spec, env)
            key_cell = "-" if not row["key_env"] else f"{row['key_env']} ({'set' if row['key_set'] else 'not set'})"
            cells = [
                key,
                spec.provider,
                spec.model_name,
                row["base_url"],
                key_cell,
                f"{spec.prices.input_per_mtok:g} / {spec.prices.output_per_mtok:g}",
            ]
            if res is not None:
                cells += [
                    "[green]ok[/]" if res.ok else "[red]FAIL[/]",
                    f"{res.latency_ms:.0f}" if res.latency_ms is not None else "-",
                    res.detail,
                ]
            table.add_row(*cells)
        console.print(table)
    if problems:
        return 2
    return 0 if all(res is None or res.ok for _, _, res in results) else 1
