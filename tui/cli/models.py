"""`lemming models`: the model keys of models.json, and whether each one answers.

The probing itself is lemming.engine.providers.probe; keys are read from the
environment and never printed: the table says only whether the variable is set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any, Mapping

from rich.console import Console

from lemming.engine.org import load_models
from lemming.engine.providers.base import ProbeResult
from lemming.engine.providers.probe import describe, probe_models
from lemming.engine.providers.registry import ProviderRegistry
from lemming.engine.providers.structured import setting_on, setting_text
from lemming.engine.resume import ModelSpec
from lemming.engine.store.runs import RunStore, default_db_path
from lemming.tui.cli.output import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from lemming.tui.cli.tables import Col, fitted_table

#: The table's columns; at 80 columns the least important (highest rank) are left out.
MODEL_COLUMNS = (
    Col("key", 0, wrap=False),
    Col("provider", 2),
    Col("model", 4),
    Col("base url", 8),
    Col("key variable", 5),
    Col("price in/out per Mtok", 7),
    Col("structured output", 6),
)
#: With probes: whether each model answered, how fast, and what it said.
PROBE_COLUMNS = (Col("status", 1, wrap=False), Col("ms", 9, wrap=False, justify="right"), Col("detail", 3))


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `lemming models` to the `lemming` parser."""
    p = sub.add_parser("models", help="list models.json's model keys and probe whether each answers",
                       description="List models.json's model keys and probe whether each answers (a listing call, never a completion). "
                       "Exit code 0 when every probed model answered, 1 when a probe failed, 2 on a models.json that does not load or an unknown key.")
    p.add_argument("--org", type=Path, default=Path("."), metavar="DIR", help="organisation folder (holds models.json); default: current folder")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per probe (default 3)")
    p.add_argument("--no-probe", action="store_true", help="list only; make no network calls")
    p.add_argument("--json", action="store_true", help="one JSON object per model on stdout")
    p.add_argument("--db", type=Path, default=None, metavar="PATH",
                   help="run database whose last run says which servers refused structured output; default: ORG/.lemming/runs.db")
    p.add_argument("keys", nargs="*", help="only these model keys")
    p.set_defaults(func=models_command)
    return p


def models_command(args: argparse.Namespace, *, env: Mapping[str, str] | None = None, console: Any = None) -> int:
    """Print the model table. Exit 0 when every probed model answered, 1 otherwise, 2 on a bad models.json or unknown keys."""
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
        return EXIT_USAGE
    probe = not getattr(args, "no_probe", False)
    timeout = float(getattr(args, "timeout", 3.0) or 3.0)

    async def go() -> list[tuple[str, ModelSpec, ProbeResult]]:
        try:
            return await probe_models(registry, keys, timeout=timeout)
        finally:
            await registry.aclose()

    results = asyncio.run(go()) if probe else [(k, registry.spec(k), None) for k in keys]
    try:
        detected = asyncio.run(structured_refusals(root, getattr(args, "db", None)))
    except Exception as e:  # a store that cannot be read must not hide the model table
        detected = {}
        console.print(f"[yellow]warning[/]: cannot read the last run's structured-output findings: {type(e).__name__}: {e}")

    if getattr(args, "json", False):
        for key, spec, res in results:
            row = describe(registry, key, spec, env)
            row.update(structured_output=spec.structured_output, structured_output_on=setting_on(spec),
                       structured_output_refused=detected.get(key))
            if res is not None:
                row.update(ok=res.ok, detail=res.detail, latency_ms=res.latency_ms)
            print(json.dumps(row, sort_keys=True))
    else:
        cols = list(MODEL_COLUMNS) + (list(PROBE_COLUMNS) if probe else [])
        rows = []
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
                structured_cell(spec, detected.get(key)),
            ]
            if res is not None:
                cells += [
                    "[green]ok[/]" if res.ok else "[red]FAIL[/]",
                    f"{res.latency_ms:.0f}" if res.latency_ms is not None else "-",
                    res.detail,
                ]
            rows.append(cells)
        table = fitted_table(cols, rows, console.width, title=f"models ({root / 'models.json'})")
        console.print(table)
    if problems:
        return EXIT_USAGE
    return EXIT_OK if all(res is None or res.ok for _, _, res in results) else EXIT_FAIL


def structured_cell(spec: ModelSpec, refused: dict[str, Any] | None) -> str:
    """The setting, and what the last run found: `auto (on)`, `on; refused (last run, tick N)`
    (`--json` has the run, the agent and the server's answer)."""
    text = setting_text(spec)
    if refused:
        text += f"; [yellow]refused[/] (last run, tick {refused['tick']})"
    return text


async def structured_refusals(root: Path, db: Path | None = None) -> dict[str, dict[str, Any]]:
    """model key -> where the last run of this organisation found its server refusing the
    reply schema (the first turn of each agent is where a model is first called)."""
    db = db or default_db_path(root)
    if not db.exists():
        return {}
    store = await RunStore.open(db, readonly=True)
    try:
        run = await store.last_run(root)
        if run is None:
            return {}
        first: dict[str, int] = {}
        for tick, agent, _status, _cost in await store.turns(run.id):
            first.setdefault(agent, tick)
        found: dict[str, dict[str, Any]] = {}
        for agent, tick in first.items():
            rec = await store.turn(run.id, tick, agent)
            if rec is not None and rec.reply_schema == "refused" and rec.model_key not in found:
                reason = next((r for r in rec.retries if "reply schema" in r), "")
                found[rec.model_key] = {"run": run.id, "tick": tick, "agent": agent, "reason": reason}
        return found
    finally:
        await store.close()
