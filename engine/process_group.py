"""Child processes that never outlive the run: started in a process group of their own,
ended as a group, and reaped even when the run is killed with SIGKILL.

* :func:`spawn` starts a program in a new session (its own process group), with
  ``PR_SET_PDEATHSIG`` so the kernel kills it if the run dies (set by util-linux's
  ``setpriv --pdeathsig`` where present, else by a ``prctl`` between fork and exec),
  and registers the group with the run's :class:`Reaper` (a child that reads nothing
  registers it itself, before it runs anything: see :func:`_registering_gate`).
* :func:`end_group` ends a group: SIGTERM, a grace period, then SIGKILL to whatever is
  left (grandchildren included), and forgets it in the reaper.
* :func:`release` closes a finished child's pipes and asyncio transport, which asyncio
  itself leaves open when a pipe was not read to its end.
* :class:`Reaper` is one small helper process per run, in a session of its own. The run
  tells it (over a pipe) which groups exist; when the pipe closes — the run ended or
  was killed, even with SIGKILL — it ends every group still registered and exits. The
  kernel's parent-death signal alone reaches only the direct child, not what it started.
* :func:`child_env` builds an environment holding only ``PATH`` and what an entry names,
  with LeMMing's ``${env.NAME}`` references resolved from the run's environment.
* :class:`CappedText` keeps at most N bytes of a stream (the tail), and says if it cut.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Mapping

#: Seconds between SIGTERM and SIGKILL when a group is ended.
KILL_GRACE = 2.0
_PR_SET_PDEATHSIG = 1
_ENV_REF = re.compile(r"\$\{env\.([A-Za-z_][A-Za-z0-9_]*)\}")


# --- environment ---------------------------------------------------------------------------


class EnvReferenceError(ValueError):
    """A ``${env.NAME}`` reference to a variable the run's environment does not hold."""


def expand_env_refs(value: str, source: Mapping[str, str]) -> str:
    """`value` with every ``${env.NAME}`` replaced by NAME from `source`."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in source:
            raise EnvReferenceError(f"${{env.{name}}} is not set in the environment of the run")
        return source[name]

    return _ENV_REF.sub(sub, value)


def env_refs(value: str) -> list[str]:
    """The variable names `value` refers to with ``${env.NAME}``."""
    return _ENV_REF.findall(value)


def child_env(entries: Mapping[str, str] | None, source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: ``PATH`` (from `source`) and the entries given, their
    ``${env.NAME}`` references resolved. Nothing else of `source` gets through: no key
    reaches a child unless an entry names it."""
    src = os.environ if source is None else source
    env = {"PATH": src.get("PATH", os.defpath)}
    for name, value in (entries or {}).items():
        env[name] = expand_env_refs(str(value), src)
    return env


# --- capped output ----------------------------------------------------------------------------


class CappedText:
    """The last `limit` bytes of a byte stream, decoded on demand; `dropped` counts the rest."""

    __slots__ = ("limit", "_buf", "dropped")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()
        self.dropped = 0

    def add(self, data: bytes) -> None:
        self._buf += data
        over = len(self._buf) - self.limit
        if over > 0:
            del self._buf[:over]
            self.dropped += over

    def take(self) -> "CappedText":
        """This text so far, handed over; this one starts empty again."""
        out = CappedText(self.limit)
        out._buf, out.dropped = self._buf, self.dropped
        self._buf, self.dropped = bytearray(), 0
        return out

    @property
    def text(self) -> str:
        return self._buf.decode("utf-8", errors="replace")

    @property
    def truncated(self) -> bool:
        return self.dropped > 0


# --- the reaper --------------------------------------------------------------------------------

_REAPER_CODE = r"""
import os, signal, sys, time
# lemming-reaper: ends the process groups of a run that went away.
for s in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP):
    signal.signal(s, signal.SIG_IGN)
groups = set()
def finish(*_):
    alive = set(groups)
    for g in list(alive):
        try:
            os.killpg(g, signal.SIGTERM)
        except OSError:
            alive.discard(g)
    end = time.monotonic() + float(sys.argv[1])
    while alive and time.monotonic() < end:
        time.sleep(0.05)
        for g in list(alive):
            try:
                os.killpg(g, 0)
            except OSError:
                alive.discard(g)
    for g in alive:
        try:
            os.killpg(g, signal.SIGKILL)
        except OSError:
            pass
    os._exit(0)
signal.signal(signal.SIGTERM, finish)
for line in sys.stdin.buffer:
    line = line.strip()
    if line[:1] == b"+":
        groups.add(int(line[1:]))
    elif line[:1] == b"-":
        groups.discard(int(line[1:]))
finish()
"""


class Reaper:
    """One helper process per run that ends the registered process groups when the run
    goes away (see the module docstring). Started at the first :meth:`watch`."""

    def __init__(self, grace: float = KILL_GRACE) -> None:
        self.grace = grace
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _started(self) -> subprocess.Popen:
        # (under the lock)
        p = self._proc
        if p is None or p.poll() is not None:
            p = self._proc = subprocess.Popen(
                [sys.executable, "-c", _REAPER_CODE, str(self.grace), "lemming-reaper"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C to the run's terminal does not reach it
                close_fds=True,
                env={"PATH": os.environ.get("PATH", os.defpath)},
            )
        return p

    def channel(self) -> int:
        """The run's end of the pipe to the helper (started if need be), for a child to
        register its own group before it runs anything (see `spawn`)."""
        with self._lock:
            p = self._started()
            assert p.stdin is not None
            return p.stdin.fileno()

    def _send(self, line: str) -> None:
        with self._lock:
            p = self._started()
            assert p.stdin is not None
            try:
                p.stdin.write(line.encode() + b"\n")
                p.stdin.flush()
            except (BrokenPipeError, OSError):
                self._proc = None

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}")

    def forget(self, pgid: int) -> None:
        if self._proc is not None:
            self._send(f"-{pgid}")

    def close(self) -> None:
        """End the helper (it ends whatever groups are still registered, then exits)."""
        with self._lock:
            p, self._proc = self._proc, None
        if p is not None and p.stdin is not None:
            try:
                p.stdin.close()
            except OSError:
                pass
            try:
                p.wait(timeout=self.grace + 5)
            except subprocess.TimeoutExpired:
                p.kill()


_reaper: Reaper | None = None


def reaper() -> Reaper:
    """The reaper of this process (one per run process)."""
    global _reaper
    if _reaper is None:
        _reaper = Reaper()
    return _reaper


# --- spawning and ending -----------------------------------------------------------------------


def _libc_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the reaper still ends the group
        return None


_PRCTL = _libc_prctl() if sys.platform.startswith("linux") else None


_SETPRIV: list[str] | None = None


def _pdeathsig_wrapper() -> list[str]:
    """`setpriv --pdeathsig KILL --` when util-linux's setpriv can do it (checked once):
    the kernel's parent-death signal set without Python code between fork and exec
    (a `preexec_fn` is not safe in a program with threads, such as the control room,
    and makes every spawn several times slower). [] when it is not available."""
    global _SETPRIV
    if _SETPRIV is None:
        _SETPRIV = []
        path = shutil.which("setpriv") if sys.platform.startswith("linux") else None
        if path is not None:
            try:
                out = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=5).stdout
            except (OSError, subprocess.SubprocessError):
                out = ""
            if "--pdeathsig" in out:
                _SETPRIV = [path, "--pdeathsig", "KILL", "--"]
    return _SETPRIV


def _in_child(parent: int) -> None:
    # Runs in the child between fork and exec: die with the run (SIGKILL from the kernel).
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the run died before prctl took effect
        os._exit(1)


def program_problem(program: str, path: str) -> str | None:
    """Why `program` cannot be started, or None: a bare name not found on `path`, an
    absolute path that is not an executable file. (A relative path is relative to
    where it runs, and is checked there.) `validate` asks it of a cli agent's command
    and of an MCP server's, before any run."""
    if "/" not in program and shutil.which(program, path=path) is None:
        return f"{program!r} is not found on PATH; install it or give its full path"
    if os.path.isabs(program) and not (os.path.isfile(program) and os.access(program, os.X_OK)):
        return f"{program!r} is not an executable file"
    return None


def _registering_gate(env: Mapping[str, str]) -> list[str]:
    """A prefix for the argv of a child whose stdin is the reaper's pipe: it writes
    `+<its pid>` there (its group: it leads a new session), puts /dev/null in its stdin's
    place and execs the rest, with the environment it was given.

    The run tells the reaper of a child only once asyncio hands the process over, a few
    trips round the event loop after the fork. A run killed in between left the group
    unknown, and what the child had started by then ran on: seen with bubblewrap, whose
    sandbox, still setting up, is not yet bound to die with its parent and waits for it
    for ever. Registered by the child itself, the group is known before anything of it
    runs; and as the child holds the pipe until it has written, a reaper whose run has
    just died still hears of it. (Through stdin because dash takes no descriptor above 9;
    so only for children that read nothing. [] where there is no /bin/sh.)"""
    if not os.path.exists("/bin/sh"):
        return []
    unset = "" if "PWD" in env else "unset PWD; "  # (the shell exports the one it sets)
    script = f'trap "" PIPE; printf "+%d\\n" $$ >&0; trap - PIPE; exec 0</dev/null; {unset}exec "$@"'
    return ["/bin/sh", "-c", script, "lemming-spawn"]


async def spawn(
    argv: list[str],
    *,
    cwd: str | Path | None,
    env: Mapping[str, str],
    stdin: int | None = subprocess.DEVNULL,
    limit: int = 2**16,
) -> asyncio.subprocess.Process:
    """Start `argv` in a new process group, stdout and stderr piped, reaped with the run.

    Raises FileNotFoundError / PermissionError / OSError as the OS reports them."""
    parent = os.getpid()
    wrapper = _pdeathsig_wrapper()
    gate = _registering_gate(env) if stdin == subprocess.DEVNULL and sys.platform.startswith("linux") else []
    if gate:
        stdin = reaper().channel()
    proc = await asyncio.create_subprocess_exec(
        *gate,
        *wrapper,
        *argv,
        cwd=str(cwd) if cwd is not None else None,
        env=dict(env),
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        preexec_fn=None if wrapper else (lambda: _in_child(parent)),
        limit=limit,
    )
    reaper().watch(proc.pid)  # (again, after a gate: the reaper keeps a set)
    return proc


def _killpg(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


#: Seconds between looks at whether a child has exited (at most: see `wait_exit`).
EXIT_POLL = 0.05


async def wait_exit(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    """Whether `proc` exits within `timeout` seconds. Not `proc.wait()`: called before
    the exit, asyncio wakes it only once every pipe is closed too (at the transport's
    connection_lost), which a process that left the group (setsid) and holds a pipe may
    never allow."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    delay = 0.001  # an exit is usually seen within a millisecond: look soon, then less often
    while proc.returncode is None:
        left = end - loop.time()
        if left <= 0:
            return False
        await asyncio.sleep(min(left, delay))
        delay = min(delay * 2, EXIT_POLL)
    return True


async def end_group(proc: asyncio.subprocess.Process, grace: float = KILL_GRACE) -> bool:
    """End `proc`'s whole process group: SIGTERM, up to `grace` seconds, then SIGKILL.
    Returns True if SIGKILL was needed. Whatever the child left running in its group
    (a background job) is ended too, even if the child itself has exited."""
    pgid = proc.pid  # the child leads its own group (spawn's new session)
    killed = False
    try:
        if proc.returncode is None:
            _killpg(pgid, signal.SIGTERM)
            await wait_exit(proc, grace)
        if _killpg(pgid, 0):  # something of the group is still there
            if proc.returncode is None:
                killed = True
            _killpg(pgid, signal.SIGKILL)
        if proc.returncode is None:
            await wait_exit(proc, grace + 5.0)  # (SIGKILLed: its exit is seen at once)
    except asyncio.CancelledError:
        _killpg(pgid, signal.SIGKILL)
        raise
    finally:
        reaper().forget(pgid)
    return killed


def release(proc: asyncio.subprocess.Process) -> None:
    """Close `proc`'s pipes and its asyncio transport. Call it once its output has been
    read, or is no longer wanted, and its group has been ended (on every path: done,
    timed out, capped, cancelled).

    asyncio closes a subprocess transport by itself only once the process has exited
    *and* every pipe has reached EOF. Neither is sure here: a pipe whose reader stopped
    (output cut at its cap, a turn cancelled or timed out mid-output) is paused once its
    buffer passes twice the stream's limit and never sees EOF, and a pipe that a process
    which left the group still holds open never ends. Such a transport would outlive the
    event loop; collected later, its ``__del__`` fails with "Event loop is closed".
    Closing it while the process still runs kills the process (SIGKILL). Idempotent."""
    # asyncio.subprocess.Process has no public close: its transport is `_transport`
    # (the same attribute since Python 3.4).
    transport = getattr(proc, "_transport", None)
    if transport is not None and not transport.is_closing():
        transport.close()


def kill_group_now(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL `proc`'s group at once (no waiting: for shutdown paths that cannot await)."""
    _killpg(proc.pid, signal.SIGKILL)
    reaper().forget(proc.pid)


__all__ = [
    "KILL_GRACE",
    "CappedText",
    "EnvReferenceError",
    "Reaper",
    "child_env",
    "end_group",
    "env_refs",
    "expand_env_refs",
    "kill_group_now",
    "reaper",
    "release",
    "spawn",
]
