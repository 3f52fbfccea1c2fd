"""The figures the plots show, per tick, from a run's recorded events.

`RunSeries.from_events(events, agent)` folds TickCompleted, TurnFinished and
CreditsCharged events into one value per committed tick: the organisation's spend,
the selected agent's spend, output tokens per second of tick time, turn latency
p50 and p95 (ms) and failed turns. `load_series` reads them from the run store for
the ticks up to a given one (replay: the cursor; live: the last committed tick).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from lemming.engine.events import CreditsCharged, Event, TickCompleted, TurnFinished

if TYPE_CHECKING:
    from lemming.engine.store import RunStore

#: Ticks the plots cover at most (the last ones up to the cursor).
WINDOW = 300


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile `q` (0–1) of `values` (0 for none)."""
    if not values:
        return 0.0
    xs = sorted(values)
    return xs[min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))]


@dataclass(slots=True)
class RunSeries:
    """One value per committed tick, in tick order (`ticks` says which)."""

    agent: str | None
    ticks: list[int] = field(default_factory=list)
    spend: list[float] = field(default_factory=list)
    agent_spend: list[float] = field(default_factory=list)
    tokens_per_s: list[float] = field(default_factory=list)
    latency_p50: list[float] = field(default_factory=list)
    latency_p95: list[float] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)

    @classmethod
    def from_events(cls, events: Iterable[Event], agent: str | None) -> "RunSeries":
        out = cls(agent)
        latencies: list[float] = []
        tokens = 0
        mine = 0.0
        for ev in events:
            t = type(ev)
            if t is TurnFinished:
                rec = ev.record  # type: ignore[attr-defined]
                latencies.append(rec.latency_ms)
                tokens += rec.usage.output_tokens
            elif t is CreditsCharged:
                if ev.agent == agent:  # type: ignore[attr-defined]
                    mine += ev.amount  # type: ignore[attr-defined]
            elif t is TickCompleted:
                out.ticks.append(ev.tick)  # type: ignore[attr-defined]
                out.spend.append(ev.spend)  # type: ignore[attr-defined]
                out.agent_spend.append(mine)
                secs = ev.duration_ms / 1000  # type: ignore[attr-defined]
                out.tokens_per_s.append(tokens / secs if secs > 0 else 0.0)
                out.latency_p50.append(percentile(latencies, 0.5))
                out.latency_p95.append(percentile(latencies, 0.95))
                out.failures.append(len(ev.failed))  # type: ignore[attr-defined]
                latencies, tokens, mine = [], 0, 0.0
        return out


async def load_series(store: "RunStore", run_id: str, upto: int, agent: str | None, window: int = WINDOW) -> RunSeries:
    """The series of the `window` ticks up to `upto` (the cursor, or the last committed tick)."""
    events: list[Event] = []
    async for chunk in store.iter_events(run_id, since_tick=max(0, upto - window + 1), until_tick=upto, prompts=False):
        events.extend(chunk)
    return RunSeries.from_events(events, agent)
