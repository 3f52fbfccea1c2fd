"""The `shell` tool: an allow-listed command, run sandboxed on a copy of the agent's files.

The command runs under `sh -c` inside bubblewrap (engine/tools/sandbox.py) with a
scratch copy of the agent's view of its files (the workspace and `shared/` as the tick
began, plus what this turn already wrote) bound read-write at /workspace and
/workspace/shared. When it ends, what it changed there is compared with the copy and
staged like a `file_write`: it reaches the real folders only when the tick commits, so
a command can change nothing outside the workspace, and a tick that never commits (an
abort, a kill -9) leaves no trace on disk.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lemming.engine.tools.files import MAX_WRITE_BYTES, SHARED, WORKSPACE, FileChange, Location, PathRefused, TurnFiles
from lemming.engine.tools.sandbox import Mount, ProcessResult, SandboxPolicy, run_sandboxed

#: A workspace larger than this is not copied for a command.
MAX_SCRATCH_BYTES = 64 * 1024 * 1024
#: Where the agent's files are inside the sandbox.
SANDBOX_CWD = "/workspace"

_SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")", "\n"}


class CommandRefused(ValueError):
    """A command the allow-list does not permit (the message says what is allowed)."""


def check_command(command: str, allow: list[str] | tuple[str, ...]) -> None:
    """Refuse `command` unless every program it starts is in `allow` ("*" allows any)."""
    if not command.strip():
        raise CommandRefused("the command is empty")
    if len(command) > 4096:
        raise CommandRefused("the command is longer than 4096 characters")
    if "\x00" in command:
        raise CommandRefused("the command holds a NUL character")
    if "*" in allow:
        return
    allowed = ", ".join(allow)
    if "`" in command or "$(" in command:
        raise CommandRefused(f"command substitution is refused; programs allowed: {allowed}")
    try:
        lex = shlex.shlex(command, posix=True, punctuation_chars=";&|()<>")
        lex.whitespace_split = True
        tokens = list(lex)
    except ValueError as e:
        raise CommandRefused(f"the command cannot be read: {e}") from None
    expect_program = True
    redirect = False
    for tok in tokens:
        if tok in _SEPARATORS or set(tok) <= set(";&|()"):
            expect_program = True
            continue
        if set(tok) <= set("<>&") or tok.rstrip("<>").isdigit() and tok[-1:] in "<>":
            redirect = True
            continue
        if redirect:
            redirect = False
            continue
        if expect_program:
            if "=" in tok and not tok.startswith("="):
                continue  # VAR=value before the program
            if tok not in allow:
                raise CommandRefused(f"{tok[:60]!r} is not an allowed program; allowed: {allowed}")
            expect_program = False


@dataclass(slots=True)
class ShellOutcome:
    result: ProcessResult
    changed: list[str]  # paths (as the agent writes them) the command changed
    dropped: list[str]  # what it made that is not kept (symlinks, devices, too big)


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def _copy_view(files: TurnFiles, area: str, src: Path, dst: Path) -> None:
    """Copy `src` (the area on disk) to `dst`, then lay the turn's changes over it."""
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True,
                        ignore=(lambda d, names: [SHARED] if area == WORKSPACE and Path(d) == src and SHARED in names else []))
    dst.mkdir(parents=True, exist_ok=True)
    for (a, rel), ch in files.changes.items():
        if a != area:
            continue
        p = dst / rel
        if ch.content is None:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(ch.content)


def _snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """rel path → (kind, size, mtime_ns) of every entry under root."""
    out: dict[str, tuple[str, int, int]] = {}
    for dirpath, dirs, names in os.walk(root):
        for n in names + dirs:
            full = os.path.join(dirpath, n)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            kind = "file" if stat.S_ISREG(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) else "other"
            out[os.path.relpath(full, root)] = (kind, st.st_size, st.st_mtime_ns)
    return out


def _contents(root: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            full = os.path.join(dirpath, n)
            if stat.S_ISREG(os.lstat(full).st_mode):
                with open(full, "rb") as fh:
                    out[os.path.relpath(full, root)] = fh.read()
    return out


async def run_shell(
    command: str, files: TurnFiles, *, allow: list[str] | tuple[str, ...], policy: SandboxPolicy
) -> ShellOutcome:
    """Run `command` (already checked) on a scratch copy of the turn's files; stage what it changed."""
    ws = files.workspace
    size = _tree_bytes(ws.root) + _tree_bytes(ws.shared) + files.staged_bytes
    if size > MAX_SCRATCH_BYTES:
        raise PathRefused(
            f"the workspace and shared/ hold {size} bytes; shell copies at most {MAX_SCRATCH_BYTES} for a command"
        )
    with tempfile.TemporaryDirectory(prefix="lemming-shell-") as tmp:
        scratch = Path(tmp) / "workspace"
        scratch_shared = Path(tmp) / "shared"
        _copy_view(files, WORKSPACE, ws.root, scratch)
        _copy_view(files, SHARED, ws.shared, scratch_shared)
        (scratch / SHARED).mkdir(exist_ok=True)
        before = {WORKSPACE: _contents(scratch), SHARED: _contents(scratch_shared)}
        mounts = [Mount(scratch, SANDBOX_CWD), Mount(scratch_shared, f"{SANDBOX_CWD}/{SHARED}")]
        if policy.kind == "none":
            # Unsandboxed (org.json "sandbox": "none"): shared/ is a folder of the copy.
            os.rmdir(scratch / SHARED)
            os.symlink(scratch_shared, scratch / SHARED)
        result = await run_sandboxed(["/bin/sh", "-c", command], mounts=mounts, cwd=SANDBOX_CWD, policy=policy)
        if policy.kind == "none":
            os.unlink(scratch / SHARED)
        else:
            try:
                os.rmdir(scratch / SHARED)  # the mount point, empty on the host
            except OSError:
                pass
        changed: list[str] = []
        dropped: list[str] = []
        for area, root in ((WORKSPACE, scratch), (SHARED, scratch_shared)):
            old = before[area]
            snap = _snapshot(root)
            now: dict[str, bytes] = {}
            for rel, (kind, size_, _m) in snap.items():
                if kind == "file":
                    if size_ > MAX_WRITE_BYTES:
                        dropped.append(f"{_shown(area, rel)} ({size_} bytes: over {MAX_WRITE_BYTES})")
                        continue
                    with open(root / rel, "rb") as fh:
                        now[rel] = fh.read()
                elif kind == "other":
                    dropped.append(f"{_shown(area, rel)} (not a regular file)")
            for rel in sorted(set(old) | set(now)):
                if old.get(rel) == now.get(rel):
                    continue
                if rel not in now and any(d.startswith(_shown(area, rel) + " ") for d in dropped):
                    continue
                loc = Location(area, rel.replace(os.sep, "/"), ws.base(area) / rel)
                try:
                    files.write(loc, now.get(rel))
                except (PathRefused, FileNotFoundError) as e:
                    dropped.append(f"{loc.shown} ({e})")
                    continue
                changed.append(loc.shown)
    return ShellOutcome(result, changed, dropped)


def _shown(area: str, rel: str) -> str:
    return f"shared/{rel}" if area == SHARED else rel

