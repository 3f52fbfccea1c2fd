"""Is the process recording a run still alive?

A run's row names its writer as ``host:pid:start`` (start: the process's start time
in clock ticks since boot, so that a pid reused by another process does not pass
for the writer). A run marked running whose writer is gone was interrupted.
"""

from __future__ import annotations

import os
import socket


def _proc_start(pid: int) -> str:
    """The process's start time (clock ticks since boot), to tell a live writer from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2 :].split()
        return fields[19].decode()
    except (OSError, ValueError, IndexError):
        return "?"


def this_writer() -> str:
    """This process, as a run's `writer` column names it."""
    return f"{socket.gethostname()}:{os.getpid()}:{_proc_start(os.getpid())}"


def writer_alive(writer: str | None) -> bool | None:
    """True/False when we can tell (same host), None when we cannot."""
    if not writer:
        return False
    try:
        host, pid_s, start = writer.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        state = data[data.rindex(b")") + 2 :].split()[0]
        if state in (b"Z", b"X"):
            return False
    except (OSError, ValueError):
        return True
    return start == "?" or _proc_start(pid) == start
