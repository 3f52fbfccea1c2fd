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


def hold() -> None:
    """Freeze what is alive now (until the matching `release`)."""
    global _holders
    gc.freeze()
    _holders += 1


def release() -> None:
    """Let go of one `hold`; the last one unfreezes."""
    global _holders
    _holders = max(0, _holders - 1)
    if _holders == 0:
        gc.unfreeze()


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
