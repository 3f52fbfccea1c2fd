"""Starting, capping and killing child processes: the one place the engine spawns programs.

`run_process` runs a program in a new session (so its whole process group can be
killed), with PR_SET_PDEATHSIG so that it dies with the engine's thread even after a
kill -9 of the run, with a timeout that kills the group, and with its output capped.
`run_sandboxed` runs it under bubblewrap: the given folders bound read-write, the
system's programs read-only, no network unless asked, a fresh /proc, /dev and /tmp,
an environment holding only what the caller passes (PATH and HOME by default: never a
provider key), and `--die-with-parent`; bubblewrap's own PID namespace means that when
its init dies every process of the sandbox dies with it, however deep it forked.

Nothing here knows about agents or tools: the `shell` tool uses it, and so can any
other part of the engine that runs a program for an agent.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping, Sequence

from lemming.engine import process_group

#: How to install bubblewrap, for the error that says it is missing.
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`; Fedora: `dnf install bubblewrap`)"
#: The environment a sandboxed program gets unless the caller names more.
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"

_PR_SET_PDEATHSIG = 1


class SandboxUnavailable(Exception):
    """The sandbox cannot be used here (bubblewrap is missing or refuses to start)."""


@dataclass(frozen=True, slots=True)
class Mount:
    """A host folder made visible inside the sandbox at `target`."""

    source: Path
    target: str
    writable: bool = True


@dataclass(frozen=True, slots=True)
class Limits:
    timeout_s: float = 10.0
    #: Bytes of output (stdout and stderr together) kept; the rest is counted, not kept.
    output_bytes: int = 16_384


@dataclass(slots=True)
class ProcessResult:
    """How a program ended and what it printed (stdout and stderr interleaved)."""

    exit_code: int | None  # None when it was killed (timeout) before exiting
    output: str
    output_bytes: int  # how many bytes it printed in all (kept or not)
    truncated: bool
    timed_out: bool
    duration_ms: float
    signal: int | None = None  # the signal that ended it, if one did

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def bwrap_path() -> str | None:
    """Where bubblewrap is, or None."""
    return shutil.which("bwrap")


def _libc():
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


_LIBC = _libc()


def _child_setup(parent: int) -> None:
    """In the child, before exec: die with the parent (a kill -9 of the run included)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(137)


async def spawn(argv: Sequence[str], *, cwd: Path | str, env: Mapping[str, str]) -> asyncio.subprocess.Process:
    """Start `argv` in a session and process group of its own, tied to this process's life."""
    parent = os.getpid()
    return await asyncio.create_subprocess_exec(
        *argv,
        cwd=str(cwd),
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: _child_setup(parent),
    )


def kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the process's whole group (it leads its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def run_process(
    argv: Sequence[str], *, cwd: Path | str, env: Mapping[str, str], limits: Limits = Limits()
) -> ProcessResult:
    """Run `argv`; kill its process group at the timeout; keep at most `limits.output_bytes`."""
    t0 = time.monotonic()
    proc = await spawn(argv, cwd=cwd, env=env)
    kept = bytearray()
    total = 0
    timed_out = False
    assert proc.stdout is not None

    async def pump() -> None:
        nonlocal total
        while True:
            chunk = await proc.stdout.read(65_536)  # type: ignore[union-attr]
            if not chunk:
                return
            total += len(chunk)
            room = limits.output_bytes - len(kept)
            if room > 0:
                kept.extend(chunk[:room])
            # Past the cap the output is read and dropped: a flood never fills memory,
            # and the program is not blocked on a full pipe until the timeout.

    try:
        async with asyncio.timeout(limits.timeout_s):
            await pump()
            await proc.wait()
    except TimeoutError:
        timed_out = True
    finally:
        # Whatever happened (timeout, cancellation of the turn), nothing it started lives on.
        kill_group(proc)
        if proc.returncode is None:
            await asyncio.shield(proc.wait())
        # A process that left the group (kind="none") may still hold the pipe open, and
        # a cut-off read leaves it paused: either way asyncio would never close it.
        process_group.release(proc)
    rc = proc.returncode
    sig = -rc if rc is not None and rc < 0 else None
    text = kept.decode("utf-8", errors="replace")
    return ProcessResult(
        exit_code=None if timed_out else rc,
        output=text,
        output_bytes=total,
        truncated=total > len(kept),
        timed_out=timed_out,
        duration_ms=(time.monotonic() - t0) * 1000,
        signal=sig,
    )


@dataclass(frozen=True, slots=True)
class SandboxPolicy:
    """How a program is confined. `kind="none"` runs it directly (an explicit opt-in)."""

    kind: Literal["bwrap", "none"] = "bwrap"
    network: bool = False
    limits: Limits = field(default_factory=Limits)


def _system_binds() -> list[str]:
    """The system's programs and libraries, read-only (merged-/usr systems have symlinks)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        p = Path(top)
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), top]
        elif p.is_dir():
            args += ["--ro-bind", top, top]
    # Debian resolves some commands (awk, ...) through /etc/alternatives; libraries through ld.so.
    for etc in ("/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d"):
        if os.path.exists(etc):
            args += ["--ro-bind", etc, etc]
    return args


def bwrap_argv(
    argv: Sequence[str], *, mounts: Sequence[Mount], cwd: str, env: Mapping[str, str], network: bool = False
) -> list[str]:
    """The bubblewrap command line that runs `argv` confined (see the module docstring)."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed: {INSTALL_HINT}")
    args = [
        bwrap,
        "--unshare-all",  # user, pid, net, ipc, uts, cgroup namespaces of its own
        *(["--share-net"] if network else []),
        "--die-with-parent",
        "--new-session",
        "--uid", "65534", "--gid", "65534",
        "--hostname", "sandbox",
        *_system_binds(),
        "--proc", "/proc",
        "--dev", "/dev",
        "--tmpfs", "/tmp",
    ]
    for m in mounts:
        args += ["--bind" if m.writable else "--ro-bind", str(m.source), m.target]
    args += ["--chdir", cwd, "--clearenv"]
    for k, v in env.items():
        args += ["--setenv", k, v]
    args += ["--", *argv]
    return args


async def run_sandboxed(
    argv: Sequence[str],
    *,
    mounts: Sequence[Mount],
    cwd: str,
    policy: SandboxPolicy = SandboxPolicy(),
    env: Mapping[str, str] | None = None,
) -> ProcessResult:
    """Run `argv` confined by `policy`. With kind="none" the mounts' first folder is the
    working directory and the program sees the host (the caller asked for that)."""
    environment = dict(env) if env is not None else {"PATH": SAFE_PATH, "HOME": cwd, "LANG": "C.UTF-8"}
    if policy.kind == "none":
        host_cwd = mounts[0].source if mounts else Path(cwd)
        if env is None:
            environment["HOME"] = str(host_cwd)
        return await run_process(argv, cwd=host_cwd, env=environment, limits=policy.limits)
    full = bwrap_argv(argv, mounts=mounts, cwd=cwd, env=environment, network=policy.network)
    result = await run_process(full, cwd="/", env={"PATH": SAFE_PATH}, limits=policy.limits)
    if result.exit_code == 1 and result.output.startswith("bwrap:"):
        # bubblewrap itself refused (no user namespaces, a bad mount): not the program's fault.
        raise SandboxUnavailable(f"bubblewrap could not start the sandbox: {result.output.strip()[:300]}")
    return result
