"""Processes as the tests see them."""

from __future__ import annotations

import os


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
