"""An agent's files: paths confined to its workspace and the org's `shared/` folder,
and the changes a turn makes to them, held until its tick commits.

Paths are relative to `agents/<name>/workspace/`; `shared/...` is the organisation's
`shared/` folder (LeMMing's layout). Absolute paths, `..`, backslashes, control
characters, names the filesystem cannot hold and symlinks that lead out are refused
with a `PathRefused` whose message says what to do instead.

A turn never writes to disk: `TurnFiles` stages its writes and deletions (reads and
listings see them), the engine records them with the turn, and `apply_changes` writes
them when the tick commits — after the store's transaction, so that a run killed at
any instant resumes with the files of its last committed tick (`apply_changes` is
idempotent: a resume applies that tick's changes again).
"""

from __future__ import annotations

import base64
import difflib
import errno
import hashlib
import os
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

MAX_PATH_CHARS = 1024
MAX_NAME_BYTES = 255
MAX_DEPTH = 32
#: What file_read returns at most; a longer file is returned cut, with its size.
MAX_READ_BYTES = 65_536
#: What one file_write may write.
MAX_WRITE_BYTES = 262_144
#: What one turn may stage in all (writes of file_write and shell together).
MAX_TURN_BYTES = 1_048_576
#: Entries file_list returns at most.
MAX_LIST_ENTRIES = 500
#: The diff recorded for a text file is cut at this many characters.
MAX_DIFF_CHARS = 4_000
#: Space left free on the disk beyond what a write needs.
FREE_SPACE_MARGIN = 8 * 1024 * 1024

WORKSPACE = "workspace"
SHARED = "shared"


class PathRefused(ValueError):
    """A path an agent may not use; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Location:
    area: str  # WORKSPACE or SHARED
    rel: str  # posix path inside the area ("" = the area's root)
    host: Path  # where it is on disk

    @property
    def shown(self) -> str:
        """The path as the agent writes it."""
        if self.area == SHARED:
            return f"shared/{self.rel}" if self.rel else "shared"
        return self.rel or "."


def workspace_dir(org_root: Path, agent: str) -> Path:
    """`agents/<name>/workspace/`: an agent's own files (also a cli agent's working folder)."""
    return Path(org_root) / "agents" / agent / "workspace"


def shared_dir(org_root: Path) -> Path:
    return Path(org_root) / "shared"


def _inside(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


@dataclass(slots=True)
class Workspace:
    """The two folders an agent's file tools can reach."""

    root: Path
    shared: Path

    @classmethod
    def of(cls, org_root: Path, agent: str) -> "Workspace":
        return cls(workspace_dir(org_root, agent), shared_dir(org_root))

    def base(self, area: str) -> Path:
        return self.shared if area == SHARED else self.root

    def locate(self, path: Any, *, root_ok: bool = False) -> Location:
        """Where `path` (as an agent wrote it) is, or PathRefused."""
        if not isinstance(path, str):
            raise PathRefused(f"a path is a string, not {type(path).__name__}")
        if len(path) > MAX_PATH_CHARS:
            raise PathRefused(f"the path is {len(path)} characters; the limit is {MAX_PATH_CHARS}")
        if any(unicodedata.category(c) in ("Cc", "Cs") or c in "\u2028\u2029" for c in path):
            raise PathRefused("the path holds control characters; use printable names")
        if "\\" in path:
            raise PathRefused("the path holds a backslash; separate folders with /")
        if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
            raise PathRefused("absolute paths are refused; write a path relative to your workspace (or shared/...)")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise PathRefused("'..' is refused; paths stay inside your workspace (or shared/...)")
        if len(parts) > MAX_DEPTH:
            raise PathRefused(f"the path is {len(parts)} folders deep; the limit is {MAX_DEPTH}")
        for p in parts:
            try:
                size = len(p.encode("utf-8"))
            except UnicodeEncodeError:
                raise PathRefused("the path is not valid Unicode") from None
            if size > MAX_NAME_BYTES:
                raise PathRefused(f"a name in the path is {size} bytes; the filesystem allows {MAX_NAME_BYTES}")
        area = WORKSPACE
        if parts and parts[0] == SHARED:
            area, parts = SHARED, parts[1:]
        if not parts and not root_ok:
            raise PathRefused("the path names a folder, not a file")
        rel = "/".join(parts)
        base = self.base(area)
        host = base.joinpath(*parts) if parts else base
        # A symlink (anywhere along the path) may not lead out of the area.
        real_base = os.path.realpath(base)
        if not _inside(os.path.realpath(host), real_base):
            raise PathRefused(f"{path!r} leads out of your workspace through a symlink; it is refused")
        return Location(area, rel, host)


@dataclass(slots=True)
class FileChange:
    """One file a turn wrote (content) or deleted (content None)."""

    area: str
    rel: str
    content: bytes | None
    before: bytes | None = None  # what it held when the tick began (for the diff)

    @property
    def key(self) -> tuple[str, str]:
        return (self.area, self.rel)

    def shown(self) -> str:
        return Location(self.area, self.rel, Path()).shown

    def to_record(self) -> dict[str, Any]:
        """What the turn record keeps: enough to show it and to write it again."""
        d: dict[str, Any] = {"path": self.shown(), "area": self.area, "rel": self.rel}
        if self.content is None:
            d["op"] = "delete"
            return d
        d["op"] = "write"
        d["size"] = len(self.content)
        d["sha256"] = hashlib.sha256(self.content).hexdigest()
        try:
            text = self.content.decode("utf-8")
        except UnicodeDecodeError:
            d["encoding"] = "base64"
            d["content"] = base64.b64encode(self.content).decode("ascii")
            return d
        d["encoding"] = "utf-8"
        d["content"] = text
        old = ""
        if self.before is not None:
            try:
                old = self.before.decode("utf-8")
            except UnicodeDecodeError:
                return d
        diff = "".join(
            difflib.unified_diff(old.splitlines(True), text.splitlines(True), f"a/{self.shown()}", f"b/{self.shown()}")
        )
        d["diff"] = diff if len(diff) <= MAX_DIFF_CHARS else diff[:MAX_DIFF_CHARS] + "\n... (diff cut)\n"
        return d


def _read_regular(host: Path, limit: int | None = None) -> bytes:
    """A regular file's bytes (never a device, a fifo or a folder), not following a final symlink."""
    fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PathRefused("it is not a regular file (devices, fifos and sockets are refused)")
        chunks = []
        left = st.st_size if limit is None else min(st.st_size, limit)
        while left > 0:
            b = os.read(fd, min(left, 1 << 20))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


@dataclass(slots=True)
class TurnFiles:
    """One turn's view of its files: the disk as the tick began, plus its own changes."""

    workspace: Workspace
    changes: dict[tuple[str, str], FileChange] = field(default_factory=dict)
    staged_bytes: int = 0
    #: What the call in progress wrote (the runner empties it before each call).
    touched: set[tuple[str, str]] = field(default_factory=set)

    def read(self, loc: Location) -> tuple[bytes, int]:
        """(bytes, full size), cut at MAX_READ_BYTES."""
        ch = self.changes.get((loc.area, loc.rel))
        if ch is not None:
            if ch.content is None:
                raise FileNotFoundError(loc.shown)
            return ch.content[:MAX_READ_BYTES], len(ch.content)
        try:
            st = os.stat(loc.host, follow_symlinks=False)
        except FileNotFoundError:
            raise FileNotFoundError(loc.shown) from None
        if stat.S_ISLNK(st.st_mode):
            st = os.stat(loc.host)
        if stat.S_ISDIR(st.st_mode):
            raise PathRefused(f"{loc.shown} is a folder; use file_list")
        if not stat.S_ISREG(st.st_mode):
            raise PathRefused(f"{loc.shown} is not a regular file (devices, fifos and sockets are refused)")
        data = _read_regular(Path(os.path.realpath(loc.host)), MAX_READ_BYTES)
        return data, st.st_size

    def _disk_bytes(self, loc: Location) -> bytes | None:
        try:
            return _read_regular(Path(os.path.realpath(loc.host)))
        except (FileNotFoundError, NotADirectoryError, PathRefused, OSError):
            return None

    def current(self, loc: Location) -> bytes | None:
        """What the file holds in this turn's view (None: no such file)."""
        ch = self.changes.get((loc.area, loc.rel))
        if ch is not None:
            return ch.content
        return self._disk_bytes(loc)

    def write(self, loc: Location, content: bytes | None) -> None:
        """Stage a write (or, with None, a deletion)."""
        if content is not None:
            if len(content) > MAX_WRITE_BYTES:
                raise PathRefused(f"the content is {len(content)} bytes; one write may hold {MAX_WRITE_BYTES}")
            if self.staged_bytes + len(content) > MAX_TURN_BYTES:
                raise PathRefused(f"this turn has written {self.staged_bytes} bytes; a turn may write {MAX_TURN_BYTES}")
            check_space(self.workspace.base(loc.area), len(content))
        # Folders along the way must not be files, and the target must not be a folder.
        host = loc.host
        if host.is_dir() and not host.is_symlink():
            raise PathRefused(f"{loc.shown} is a folder")
        for parent in host.parents:
            if parent == self.workspace.base(loc.area) or len(parent.parts) < len(self.workspace.base(loc.area).parts):
                break
            if parent.exists() and not parent.is_dir():
                raise PathRefused(f"{parent.name} along {loc.shown} is a file, not a folder")
        key = (loc.area, loc.rel)
        old = self.changes.get(key)
        before = old.before if old is not None else self._disk_bytes(loc)
        if content is None and before is None and (old is None or old.content is None):
            raise FileNotFoundError(loc.shown)
        self.changes[key] = FileChange(loc.area, loc.rel, content, before)
        self.touched.add(key)
        if content is not None:
            self.staged_bytes += len(content)

    def list(self, loc: Location) -> list[dict[str, Any]]:
        """The entries of a folder in this turn's view: [{name, type, size}], sorted by name."""
        entries: dict[str, dict[str, Any]] = {}
        host = loc.host
        if host.is_dir():
            real = os.path.realpath(host)
            try:
                with os.scandir(real) as it:
                    for e in it:
                        if loc.area == WORKSPACE and not loc.rel and e.name == SHARED:
                            continue  # shared/ is the org's folder, listed as "shared"
                        try:
                            st = e.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        if stat.S_ISDIR(st.st_mode):
                            entries[e.name] = {"name": e.name, "type": "folder"}
                        elif stat.S_ISREG(st.st_mode):
                            entries[e.name] = {"name": e.name, "type": "file", "size": st.st_size}
                        elif stat.S_ISLNK(st.st_mode):
                            entries[e.name] = {"name": e.name, "type": "symlink"}
                        else:
                            entries[e.name] = {"name": e.name, "type": "other"}
            except OSError as e:
                raise PathRefused(f"{loc.shown} cannot be listed: {e.strerror}") from None
        elif host.exists() and not any(k[0] == loc.area and k[1].startswith(loc.rel + "/") for k in self.changes):
            raise PathRefused(f"{loc.shown} is a file, not a folder; use file_read")
        prefix = loc.rel + "/" if loc.rel else ""
        for (area, rel), ch in self.changes.items():
            if area != loc.area or not rel.startswith(prefix):
                continue
            rest = rel[len(prefix):]
            name, sep, _ = rest.partition("/")
            if sep:
                entries.setdefault(name, {"name": name, "type": "folder"})
            elif ch.content is None:
                entries.pop(name, None)
            else:
                entries[name] = {"name": name, "type": "file", "size": len(ch.content)}
        if loc.area == WORKSPACE and not loc.rel:
            entries[SHARED] = {"name": SHARED, "type": "folder"}
        if not entries and not host.is_dir() and loc.rel:
            raise FileNotFoundError(loc.shown)
        return [entries[k] for k in sorted(entries)]

    def records(self) -> list[dict[str, Any]]:
        """The turn's changes as the record keeps them, in path order."""
        return [self.changes[k].to_record() for k in sorted(self.changes)]


def check_space(folder: Path, size: int) -> None:
    """PathRefused if writing `size` bytes under `folder` would (nearly) fill its disk."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return
    if st.f_bavail * st.f_frsize < size + FREE_SPACE_MARGIN:
        raise PathRefused("no space left on the device for this write; free some space or ask the operator")


def _write_file(host: Path, data: bytes) -> None:
    host.parent.mkdir(parents=True, exist_ok=True)
    tmp = host.with_name(f".{host.name}.lemming-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)
    os.replace(tmp, host)


def decode_content(change: dict[str, Any]) -> bytes:
    if change.get("encoding") == "base64":
        return base64.b64decode(change["content"])
    return change["content"].encode("utf-8")


def apply_changes(org_root: Path, agent: str, changes: Iterable[dict[str, Any]]) -> list[str]:
    """Write a committed turn's file changes to disk (idempotent). Returns one line per
    change that could not be applied (the rest are applied)."""
    ws = Workspace.of(org_root, agent)
    problems: list[str] = []
    for ch in changes:
        try:
            loc = ws.locate(ch["path"])  # confined again: the disk may have changed since
            if ch.get("op") == "delete":
                try:
                    os.unlink(loc.host)
                except FileNotFoundError:
                    pass
            else:
                _write_file(loc.host, decode_content(ch))
        except (PathRefused, OSError, KeyError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                why = "no space left on the device"
            problems.append(f"{agent}: {ch.get('path')!r}: {why}")
    return problems

