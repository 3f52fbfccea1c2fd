"""Where a served run listens, who may connect, and how a client finds it.

A served run listens on a Unix domain socket and says so in a small JSON file,
`<org>/.lemming/control/<run id>.json` (pid, socket, run id, when it started), so that
`lemming attach` and `lemming ctl` find the runs served for an organisation. The
socket sits beside it when the path is short enough for a socket address (108 bytes),
otherwise in a private directory under $XDG_RUNTIME_DIR or /tmp. Both directories are
mode 0700 and the socket 0600; the server also checks every peer's credentials
(SO_PEERCRED) and refuses another user's connection. A file left by a run that was
killed is removed by the next reader that finds its process gone.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import time
from dataclasses import dataclass
from pathlib import Path

#: The longest path a Unix socket address holds (Linux: sun_path is 108 bytes with its NUL).
MAX_SOCKET_PATH = 107


class EndpointError(Exception):
    """A served run cannot be found, reached or set up (one line, with what to do)."""


@dataclass(frozen=True, slots=True)
class Served:
    """A served run as its pointer file describes it."""

    run_id: str
    pid: int
    socket: str
    pointer: Path
    started_at: float
    org: str

    def alive(self) -> bool:
        return pid_alive(self.pid)


def control_dir(org_root: Path | str) -> Path:
    return Path(org_root) / ".lemming" / "control"


def private_dir(path: Path) -> Path:
    """`path` created if needed, owned by this user and mode 0700 (EndpointError otherwise)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise EndpointError(f"{path}: not a directory (a symlink?); remove it and start the run again")
    if st.st_uid != os.getuid():
        raise EndpointError(f"{path}: owned by uid {st.st_uid}, not by you; remove it and start the run again")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def socket_path(org_root: Path | str, run_id: str) -> Path:
    """Where the run's socket goes: beside its pointer file if the path fits an address."""
    near = control_dir(org_root).resolve() / f"{run_id}.sock"
    if len(os.fsencode(near)) <= MAX_SOCKET_PATH:
        return near
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return Path(base) / f"lemming-{os.getuid()}" / f"{run_id}.sock"


def listen(path: Path) -> socket.socket:
    """A listening Unix socket at `path`, mode 0600 in a 0700 directory.

    A socket file already there is replaced only if nothing answers on it (a run that
    was killed); a live one is an error."""
    private_dir(path.parent)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise EndpointError(f"{path}: exists and is not a socket; remove it and start the run again")
        if _answers(path):
            raise EndpointError(f"{path}: another run is already served there")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is created 0600: never a window where others may connect
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(64)
    sock.setblocking(False)
    return sock


def _answers(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def check_peer(uid: int, allowed_uid: int | None = None) -> str | None:
    """Why a peer with `uid` is refused (None: it is this user, and welcome)."""
    allowed = os.getuid() if allowed_uid is None else allowed_uid
    if uid != allowed:
        return f"refused: this run is served to uid {allowed} only, and you are uid {uid}"
    return None


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie — killed, not yet reaped — does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def refuses(path: str) -> bool:
    """Whether the socket at `path` refuses connections (nothing listens: its run died)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(path)
        return False
    except (ConnectionRefusedError, FileNotFoundError):
        return True
    except OSError:  # busy (EAGAIN: a full backlog) is alive
        return False
    finally:
        s.close()


def write_pointer(org_root: Path | str, run_id: str, sock: Path) -> Path:
    d = private_dir(control_dir(org_root))
    p = d / f"{run_id}.json"
    tmp = d / f".{run_id}.json.tmp"
    data = {"run_id": run_id, "pid": os.getpid(), "socket": str(sock), "started_at": time.time(), "org": str(Path(org_root).resolve())}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, p)
    return p


def read_pointer(p: Path) -> Served | None:
    try:
        d = json.loads(p.read_text())
        return Served(str(d["run_id"]), int(d["pid"]), str(d["socket"]), p, float(d.get("started_at", 0.0)), str(d.get("org", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def served_runs(org_root: Path | str, *, clean: bool = True) -> tuple[list[Served], list[str]]:
    """The runs served for the organisation at `org_root`, newest first, and one line for
    each stale pointer removed (its process is gone: a killed run)."""
    d = control_dir(org_root)
    out: list[Served] = []
    removed: list[str] = []
    if not d.is_dir():
        return out, removed
    for p in sorted(d.glob("*.json")):
        s = read_pointer(p)
        if s is None:
            continue
        if s.alive() and Path(s.socket).exists() and not refuses(s.socket):
            out.append(s)
        elif clean:
            forget(s)
            removed.append(f"removed the stale endpoint of run {s.run_id} (process {s.pid} is gone)")
    out.sort(key=lambda s: s.started_at, reverse=True)
    return out, removed


def forget(s: Served) -> None:
    """Remove a served run's pointer file and socket (the run has stopped or died)."""
    for path in (s.pointer, Path(s.socket)):
        try:
            if path.is_symlink() or path.exists():
                path.unlink()
        except OSError:
            pass


def find_run(org_root: Path | str, run: str | None) -> Served:
    """The served run `run` (an id or a unique prefix) or the only one; EndpointError
    saying what is served otherwise."""
    runs, removed = served_runs(org_root)
    if not runs:
        gone = f"; {'; '.join(removed)}" if removed else ""
        raise EndpointError(f"no run is served for {Path(org_root).resolve()} (start one with: lemming run --headless, or --detach){gone}")
    if run is None:
        if len(runs) == 1:
            return runs[0]
        listed = ", ".join(s.run_id for s in runs)
        raise EndpointError(f"{len(runs)} runs are served here ({listed}); name one")
    hits = [s for s in runs if s.run_id.startswith(run)]
    if len(hits) == 1:
        return hits[0]
    listed = ", ".join(s.run_id for s in runs)
    if not hits:
        raise EndpointError(f"run {run!r} is not served here (served: {listed})")
    raise EndpointError(f"{run!r} names {len(hits)} served runs ({', '.join(s.run_id for s in hits)}); give more of the id")
