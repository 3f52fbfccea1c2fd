"""The workspace browser (`w` in the inspector): an agent's files, read-only.

Two trees: the agent's own `agents/<name>/workspace/` and the organisation's
`shared/`, each entry with its size and modified time, and the selected file's
content (text, the first 64 KiB; a binary file says so). Everything is read through
the file tools' own rules (engine/tools/files.py: `Workspace.locate`, `TurnFiles`),
so the browser shows what the agent can reach and nothing else: a symlink that leads
out is listed as refused, never followed.

Live, it reads the folders again when a turn records files changed. In replay the
files are those on disk now, not those of the tick on screen (replay never writes
files): the title says so, and the inspected turn's recorded writes are listed.
"""

from __future__ import annotations

import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static, Tree
from textual.widgets.tree import TreeNode

from lemming.engine.plainjson import printable
from lemming.engine.tools.files import MAX_READ_BYTES, SHARED, PathRefused, TurnFiles, Workspace

#: Entries listed in one folder at most (the rest are counted).
MAX_ENTRIES = 500


@dataclass(frozen=True)
class Entry:
    """One entry as the agent names it (`notes/a.md`, `shared/plan.md`)."""

    path: str
    name: str
    kind: str  # folder, file, link (a symlink that stays inside), refused, other
    size: int | None = None
    mtime: float | None = None
    why: str = ""
    is_dir: bool = False


def list_folder(ws: Workspace, path: str) -> tuple[list[Entry], int]:
    """The entries of the folder `path` ("" the workspace, "shared" the org's folder) and
    how many more there are than MAX_ENTRIES; PathRefused / OSError for a folder that
    cannot be listed."""
    loc = ws.locate(path or ".", root_ok=True)
    if not loc.host.is_dir():
        return [], 0
    listed = TurnFiles(ws).list(loc)
    out: list[Entry] = []
    for item in listed:
        name = item["name"]
        if not path and name == SHARED:
            continue  # the org's shared/ is its own tree
        child = f"{path}/{name}" if path else name
        try:
            where = ws.locate(child)
        except PathRefused as e:
            out.append(Entry(child, name, "refused", why=str(e)))
            continue
        try:
            st = os.stat(where.host)  # a symlink here stays inside: locate checked it
            link = os.path.islink(where.host)
        except OSError as e:
            out.append(Entry(child, name, "refused", why=e.strerror or str(e)))
            continue
        if stat.S_ISDIR(st.st_mode):
            out.append(Entry(child, name, "link" if link else "folder", mtime=st.st_mtime, is_dir=True))
        elif stat.S_ISREG(st.st_mode):
            out.append(Entry(child, name, "link" if link else "file", st.st_size, st.st_mtime))
        else:
            out.append(Entry(child, name, "other", mtime=st.st_mtime, why="not a regular file (devices, fifos and sockets are refused)"))
    out.sort(key=lambda e: (not e.is_dir, _natural(e.name)))
    return out[:MAX_ENTRIES], max(0, len(out) - MAX_ENTRIES)


def _natural(name: str) -> list[Any]:
    """tick-5.md before tick-11.md."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def read_file(ws: Workspace, path: str) -> Text:
    """A file's content as the browser shows it: text (the first MAX_READ_BYTES), or what
    it is when it is not shown (binary, refused, gone)."""
    try:
        data, size = TurnFiles(ws).read(ws.locate(path))
    except PathRefused as e:
        return Text(f"{path}: refused — {e}", "red")
    except FileNotFoundError:
        return Text(f"{path}: no such file (any more)", "italic")
    except OSError as e:
        return Text(f"{path}: cannot be read: {e.strerror or e}", "red")
    head = Text(f"{path} · {size:,} bytes", "bold")
    if b"\0" in data[:8192]:
        head.append(f"\nbinary file: not shown", "italic")
        return head
    try:
        body = data.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(data) - 4:  # not just a character cut at the cap
            head.append("\nnot UTF-8 text: not shown", "italic")
            return head
        body = data[: e.start].decode("utf-8")
    if size > len(data):
        head.append(f" (the first {len(data):,} shown)", "yellow")
    head.append("\n\n")
    head.append(printable(body))
    return head


def size_text(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.1f} MiB"


def modified_text(mtime: float, now: float | None = None) -> str:
    """A modified time, short: the time of day when it is today, else the date."""
    here, today = time.localtime(mtime), time.localtime(now)
    same_day = here[:3] == today[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", here)


class WorkspaceScreen(Screen[None]):
    """An agent's workspace and the org's shared/ folder, read-only; escape closes."""

    DEFAULT_CSS = """
    WorkspaceScreen { background: $background; }
    WorkspaceScreen #ws-title { dock: top; height: auto; max-height: 3; background: $panel; padding: 0 1; }
    WorkspaceScreen #ws-tree { width: 2fr; min-width: 28; border-right: vkey $panel-lighten-1; }
    WorkspaceScreen #ws-file { width: 3fr; padding: 0 1; }
    """

    BINDINGS = [
        Binding("escape,q,w", "close", "Close", id="workspace.close"),
        Binding("r", "reload", "Reload", id="workspace.reload"),
        Binding("tab", "switch", "Tree/file", id="workspace.switch"),
    ]

    def __init__(
        self,
        org_root: Path,
        agent: str,
        *,
        replay_tick: int | None = None,
        turn_files: list[dict[str, Any]] | None = None,
        changes: Callable[[], object] | None = None,
        wall_clock: bool = True,
    ) -> None:
        """`replay_tick`: the tick on screen in replay (the files are today's, not its);
        `turn_files`: the inspected turn's recorded file changes; `changes`: live, a value
        that changes when a turn records files changed (polled; the folders are read again)."""
        super().__init__()
        self.workspace = Workspace.of(Path(org_root), agent)
        self.agent = agent
        self.replay_tick = replay_tick
        self.turn_files = turn_files or []
        self.changes = changes
        self.wall_clock = wall_clock
        self._seen = changes() if changes is not None else None
        self.shown_path: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="ws-title")
        with Horizontal():
            tree: Tree[Entry] = Tree("files", id="ws-tree")
            tree.show_root = False
            yield tree
            with VerticalScroll(id="ws-file"):
                yield Static(Text("Select a file to see its content.", "italic"), id="ws-content")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#ws-title", Static).update(self._title())
        self._build(expanded={"", SHARED}, cursor=None)
        self.query_one("#ws-tree", Tree).focus()
        if self.changes is not None:
            self.set_interval(0.5, self._poll)

    def _title(self) -> Text:
        t = Text()
        t.append(f"Files of {self.agent}", "bold")
        t.append(f"  ·  agents/{self.agent}/workspace/ and shared/  ·  read-only, as the file tools see them")
        if self.replay_tick is not None:
            t.append(f"\nthese are the files on disk now, not at tick {self.replay_tick} (replay never writes files)", "yellow")
            if self.turn_files:
                wrote = ", ".join(f"{f.get('op', '?')} {f.get('path', '?')}" for f in self.turn_files[:6])
                more = f" and {len(self.turn_files) - 6} more" if len(self.turn_files) > 6 else ""
                t.append(printable(f"\nthe inspected turn recorded: {wrote}{more}"), "yellow")
        return t

    # --- the tree ------------------------------------------------------------------------

    def _label(self, e: Entry) -> Text:
        t = Text()
        if e.kind == "refused":
            t.append(e.name, "red")
            t.append(f"  refused: {printable(e.why)}", "red dim")
            return t
        t.append(printable(e.name) + ("/" if e.is_dir else ""), "bold" if e.is_dir else "")
        if e.kind == "link":
            t.append(" (link)", "dim")
        facts = []
        if e.size is not None:
            facts.append(size_text(e.size))
        if e.mtime is not None and self.wall_clock:
            facts.append(modified_text(e.mtime))
        if e.why:
            facts.append(e.why)
        if facts:
            t.append("  " + " · ".join(facts), "dim")
        return t

    def _build(self, *, expanded: set[str], cursor: str | None) -> None:
        tree = self.query_one("#ws-tree", Tree)
        tree.clear()
        roots = (("", f"workspace/  (agents/{self.agent}/workspace)"), (SHARED, "shared/  (the organisation's)"))
        for path, label in roots:
            node = tree.root.add(Text(label, "bold"), data=Entry(path, path or "workspace", "folder", is_dir=True))
            self._fill(node, expanded)
            node.expand()
        tree.last_line  # noqa: B018 - places the new lines now, so that the cursor goes back at once (no key lands in between)
        found = self._find(tree.root, cursor) if cursor is not None else None
        if found is not None:
            tree.move_cursor(found)
        else:
            tree.cursor_line = 0

    def _fill(self, node: TreeNode[Entry], expanded: set[str]) -> None:
        entry = node.data
        assert entry is not None
        node.remove_children()
        try:
            entries, more = list_folder(self.workspace, entry.path)
        except (PathRefused, OSError) as e:
            node.add_leaf(Text(f"cannot be listed: {e}", "red"))
            return
        if not entries:
            node.add_leaf(Text("(empty)" if entry.path or self.workspace.root.is_dir() else "(no workspace yet)", "dim italic"))
        for e in entries:
            if e.is_dir:
                child = node.add(self._label(e), data=e)
                if e.path in expanded:
                    self._fill(child, expanded)
                    child.expand()
                else:
                    child.add_leaf(Text("…", "dim"))  # filled when expanded
            else:
                node.add_leaf(self._label(e), data=e)
        if more:
            node.add_leaf(Text(f"… and {more} more", "dim"))

    def _find(self, node: TreeNode[Entry], path: str) -> TreeNode[Entry] | None:
        for child in node.children:
            if child.data is not None and child.data.path == path:
                return child
            found = self._find(child, path)
            if found is not None:
                return found
        return None

    def _expanded(self, node: TreeNode[Entry]) -> set[str]:
        out = set()
        for child in node.children:
            if child.is_expanded and child.data is not None:
                out.add(child.data.path)
                out |= self._expanded(child)
        return out

    @on(Tree.NodeExpanded)
    def _expanding(self, event: Tree.NodeExpanded) -> None:
        node = event.node
        if node.data is not None and node.data.is_dir and node.parent is not None and node.parent is not self.query_one("#ws-tree", Tree).root:
            self._fill(node, set())

    @on(Tree.NodeHighlighted)
    def _highlighted(self, event: Tree.NodeHighlighted) -> None:
        e = event.node.data
        if e is not None and not e.is_dir:
            self._show(e)

    def _show(self, e: Entry) -> None:
        self.shown_path = e.path
        content = self.query_one("#ws-content", Static)
        if e.kind == "refused":
            content.update(Text(f"{e.path}: refused — {e.why}", "red"))
        elif e.kind == "other":
            content.update(Text(f"{e.path}: {e.why}", "italic"))
        else:
            content.update(read_file(self.workspace, e.path))

    # --- live ----------------------------------------------------------------------------

    def _poll(self) -> None:
        assert self.changes is not None
        now = self.changes()
        if now != self._seen:
            self._seen = now
            self.action_reload()

    def action_reload(self) -> None:
        tree = self.query_one("#ws-tree", Tree)
        cursor = tree.cursor_node.data.path if tree.cursor_node is not None and tree.cursor_node.data is not None else None
        self._build(expanded=self._expanded(tree.root) | {"", SHARED}, cursor=cursor)
        if self.shown_path is not None:
            self.query_one("#ws-content", Static).update(read_file(self.workspace, self.shown_path))

    def action_switch(self) -> None:
        tree = self.query_one("#ws-tree", Tree)
        (self.query_one("#ws-file") if tree.has_focus else tree).focus()

    def action_close(self) -> None:
        self.dismiss(None)


def files_changed_key(state: Any) -> tuple[tuple[str, int], ...]:
    """Live: what changes when a committed turn records files changed (any agent's: shared/
    is everyone's)."""
    return tuple(sorted((name, rec.tick) for name, rec in state.last_turn.items() if rec.files_changed))
