"""`--sim`: an organisation run without keys, every API model served by the offline sim.

Command-line agents (`provider: "cli"`) and sim entries run as they are. The change is
made to the organisation's model entries, so the run's recorded definitions say which
entries the sim stood in for (`"simulates": "openai"`), a resume or fork of the run goes
on on the sim, and hot reload keeps the run on the sim.
"""

from __future__ import annotations

from lemming.engine.org import Org
from lemming.engine.resume import ModelSpec

#: Providers `--sim` leaves alone: the sim itself, and command-line agents (no key needed).
KEEP_UNDER_SIM = frozenset({"sim", "cli"})


def simulated(org: Org) -> Org:
    """`org` with every API model (openai, anthropic, ollama...) served by the sim.

    Each such entry becomes a sim entry that keeps its key, model name and prices and
    says what it stands in for (``"simulates": "openai"``), so the run's recorded
    definitions show it was a sim run, and a resume or fork of it goes on on the sim."""
    models: dict[str, ModelSpec] = {}
    for key, spec in org.models.items():
        if spec.provider in KEEP_UNDER_SIM:
            models[key] = spec
            continue
        data = spec.model_dump(mode="json", exclude={"base_url", "api_key_env", "provider_config"})
        data.update(provider="sim", simulates=spec.provider)
        models[key] = ModelSpec.model_validate(data)
    return Org(root=org.root, agents=org.agents, models=models, settings=org.settings, problems=list(org.problems), warnings=list(org.warnings))


def sim_served(org: Org) -> list[str]:
    """The model keys the sim serves in place of an API (a `--sim` run), sorted."""
    return sorted(k for k, spec in org.models.items() if getattr(spec, "simulates", None))


def keep_simulated(old: Org, new: Org) -> Org:
    """`new` definitions (hot reload) for a run on `old`: on the sim if `old` was."""
    return simulated(new) if sim_served(old) and not sim_served(new) else new


__all__ = ["KEEP_UNDER_SIM", "keep_simulated", "sim_served", "simulated"]
