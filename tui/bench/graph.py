"""Benchmark of the message graph: laying out and drawing the agents.

`python -m lemming.tui.bench.graph [--quick]` prints one JSON object.

* layout_ms_40 / layout_ms_100 — `spring_layout` for 40 and 100 agents who each may
  read five others (done when agents or permissions change, never per tick; more
  than `MAX_NODES` agents are shown as the matrix, so 100 is the worst case measured
  past what the pane ever lays out).
* draw_ms_40 — drawing 40 agents with a window of traffic in a 70 × 20 pane (done
  once per committed tick and per selection change).
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from collections import Counter
from typing import Any

from lemming.tui.widgets.graph_layout import spring_layout
from lemming.tui.widgets.graph_map import draw_map


def _org(n: int, seed: int = 1) -> tuple[list[str], set[tuple[str, str]], Counter[tuple[str, str]]]:
    rng = random.Random(seed)
    names = [f"agent{i:03d}" for i in range(n)]
    may_read = {(r, s) for r in names for s in rng.sample(names, 5) if s != r}
    traffic: Counter[tuple[str, str]] = Counter()
    for _ in range(10 * n):
        r, s = rng.choice(sorted(may_read))
        traffic[(s, r)] += 1
    return names, may_read, traffic


def _ms(fn, repeats: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def bench_graph(quick: bool = False) -> dict[str, Any]:
    repeats = 3 if quick else 9
    out: dict[str, Any] = {"bench": "graph", "quick": quick}
    for n in (40, 100):
        names, may_read, _ = _org(n)
        pairs = [tuple(sorted(p)) for p in may_read]
        out[f"layout_ms_{n}"] = _ms(lambda: spring_layout(names, pairs, aspect=1.75), repeats)  # noqa: B023
    names, may_read, traffic = _org(40)
    pos = spring_layout(names, [tuple(sorted(p)) for p in may_read], aspect=1.75)
    readers: dict[str, set[str]] = {}
    for r, s in may_read:
        readers.setdefault(s, set()).add(r)
    out["draw_ms_40"] = _ms(lambda: draw_map(70, 20, names, pos, may_read, traffic, readers, names[3]), repeats * 3)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(json.dumps(bench_graph(quick="--quick" in argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
