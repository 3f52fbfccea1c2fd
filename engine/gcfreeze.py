"""Keep long-lived objects out of the cyclic garbage collector's full passes.

A full collection walks every object alive, and it comes often while the engine
allocates (each tick makes tens of thousands of short-lived events and records). The
program and the organisation alive when a run starts do not go away during it;
`gc.freeze()` moves them out of the collector's sight, so that they cost nothing.
The price: cycles that exist then and become garbage later wait for `gc.unfreeze()`,
which the last holder calls when it lets go. Holds are counted, so that one holder
letting go does not unfreeze what another still needs frozen.

`paused()` is the other tool: no collection at all while a synchronous stretch of
code builds objects in bulk (a reader decoding a long run's messages).
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator

_holders = 0
_thresholds: tuple[int, int, int] | None = None

#: The youngest generation's threshold while held. A tick's objects (prompts, records,
#: events) live until the tick commits; at CPython's 700 the collector ran every few turns
#: and moved them into older generations, whose passes then walked them again: 12% of a
#: fixed-reply turn at 1,000 agents (docs/performance.md). At 50,000 they are mostly
#: freed before a pass, which comes every few ticks (and holds at most a few MB).
YOUNG_THRESHOLD = 50_000
MIDDLE_THRESHOLD = 20


def hold() -> None:
    """Freeze what is alive now (until the matching `release`), and collect the young
    generation less often meanwhile."""
    global _holders, _thresholds
    gc.freeze()
    if _holders == 0:
        _thresholds = gc.get_threshold()
        t0, t1, t2 = _thresholds
        if t0:  # (0: the program switched collection off; leave it so)
            gc.set_threshold(max(t0, YOUNG_THRESHOLD), max(t1, MIDDLE_THRESHOLD), t2)
    _holders += 1


def release() -> None:
    """Let go of one `hold`; the last one unfreezes (and restores the thresholds)."""
    global _holders, _thresholds
    _holders = max(0, _holders - 1)
    if _holders == 0:
        gc.unfreeze()
        if _thresholds is not None:
            gc.set_threshold(*_thresholds)
            _thresholds = None


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while decoding in bulk: with a long run's
    million messages alive, each full collection walks them all, and allocating
    millions of objects triggers one every few hundred thousand. (Only around
    synchronous code: nothing else runs meanwhile.)"""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
