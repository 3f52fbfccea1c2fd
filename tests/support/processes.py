"""Processes, and what a run may leave open (transports, HTTP sessions), as the tests see them."""

from __future__ import annotations

import asyncio
import gc
import os
import warnings
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator


def _stat_fields(pid: int | str) -> list[bytes]:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...); OSError if gone."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()


def alive(pid: int) -> bool:
    """Running: a zombie (waiting for a reaper that is not ours) counts as gone."""
    try:
        return _stat_fields(pid)[0] != b"Z"
    except OSError:
        return False


def pids_with(marker: str, *, parent: int | None = None) -> list[int]:
    """Live processes whose command line holds `marker` (zombies are not alive); given
    `parent`, only its children (other programs on the machine may run the same)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            fields = _stat_fields(entry)
        except (OSError, IndexError):
            continue
        if marker.encode() in cmdline and fields[0] != b"Z" and (parent is None or int(fields[1]) == parent):
            out.append(int(entry))
    return out


def open_subprocess_transports() -> list[Any]:
    """The asyncio subprocess transports alive and not closed (garbage not yet collected
    included: a leaked transport sits in a reference cycle until the collector runs)."""
    from asyncio.base_subprocess import BaseSubprocessTransport

    return [o for o in gc.get_objects() if isinstance(o, BaseSubprocessTransport) and not o.is_closing()]


def open_http_sessions() -> list[Any]:
    """aiohttp sessions alive and not closed: the SDK clients' (openai, anthropic, ollama
    ride on aiohttp). One still open at interpreter exit prints "Unclosed client session"."""
    import aiohttp

    return [o for o in gc.get_objects() if isinstance(o, aiohttp.ClientSession) and not o.closed]


@asynccontextmanager
async def no_transport_left_open(settle: float = 2.0) -> AsyncIterator[None]:
    """Fails if a subprocess transport started inside the block is still open at its end.

    asyncio closes such a transport only once the process has exited and every pipe has
    reached EOF; one that never gets there outlives the event loop, and its ``__del__``
    then fails with "Event loop is closed" in whatever test the collector happens to run
    in. Checked here, where it was made, inside the loop: the transports the block started
    get `settle` seconds to close (a pipe's EOF takes a loop iteration or two), and a
    transport that the collector found unclosed meanwhile (its ResourceWarning) counts too."""
    before = {id(t) for t in open_subprocess_transports()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        deadline = asyncio.get_running_loop().time() + settle
        while True:
            left = [t for t in open_subprocess_transports() if id(t) not in before]
            if not left or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.02)
        shown = [repr(t) for t in left]
        for t in left:  # the failure below is the report: no second one when the loop is gone
            t.close()
        del left
        gc.collect()
    # (Only subprocess transports: another test's socket transport, collected here by
    # chance, is that test's leak, not this block's.)
    unclosed = [str(w.message) for w in caught if "unclosed transport <_UnixSubprocessTransport" in str(w.message)]
    assert not shown and not unclosed, f"subprocess transports left open: {shown or unclosed}"
