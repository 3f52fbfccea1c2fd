"""The run picker: the runs recorded in the database, with their ticks, spend, status and parent.

`enter` opens the run under the cursor (a run still being written is followed as it
grows), `n` starts a new live run of the organisation where that is allowed,
`r` reads the list again (it also refreshes by itself every few seconds). The
database is opened read-only, for as long as one read takes.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from lemming.engine.store import RunInfo, RunStore, StoreError

#: What `dismiss` returns for "start a new live run" (any other value is a run id).
NEW_RUN = "\x00new"

STATUS_LOOK = {"running": "green", "completed": "cyan", "stopped": "yellow", "error": "red", "interrupted": "magenta"}


def parent_text(r: RunInfo) -> str:
    # A run id ends with its random part: enough to tell the parent.
    return f"…{r.parent_run[-6:]}@{r.fork_tick}" if r.parent_run else ""


async def read_runs(db: Path) -> list[RunInfo]:
    """The database's runs, newest first (none if there is no database yet)."""
    if not Path(db).exists():
        return []
    store = await RunStore.open(db, readonly=True)
    try:
        runs = await store.list_runs()
    finally:
        await store.close()
    return sorted(runs, key=lambda r: r.updated_at or r.started_at, reverse=True)


class RunsScreen(Screen[str | None]):
    """Recorded runs; dismissed with the chosen run's id, NEW_RUN, or None."""

    DEFAULT_CSS = """
    RunsScreen #runs-title {
        dock: top;
        height: 1;
        background: $panel;
        color: $foreground;
        text-style: bold;
        padding: 0 1;
    }
    RunsScreen #runs-note { height: auto; padding: 0 1; color: $text-muted; }
    RunsScreen DataTable { height: 1fr; }
    """

    BINDINGS = [
        Binding("enter", "open", "Open", id="runs.open"),
        Binding("n", "new_run", "New live run", id="runs.new"),
        Binding("r", "reload", "Refresh", id="runs.reload"),
        Binding("escape", "close", "Back", id="runs.close"),
        Binding("q", "quit_picker", "Quit", id="runs.quit"),
    ]

    def __init__(
        self,
        db: Path,
        *,
        allow_new: bool = False,
        can_close: bool = True,
        current: str | None = None,
        auto_refresh: float | None = 3.0,
    ) -> None:
        super().__init__()
        self.db = Path(db)
        self.allow_new = allow_new
        self.can_close = can_close
        self.current = current
        self.auto_refresh = auto_refresh
        self.runs: list[RunInfo] = []
        self._with_org = False

    def compose(self) -> ComposeResult:
        yield Static(f"Recorded runs · {self.db}", id="runs-title")
        yield Static("reading…", id="runs-note")
        table: DataTable = DataTable(id="runs-table", cursor_type="row", zebra_stripes=False)
        yield table
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        self._columns(table, with_org=False)
        table.focus()
        self.reload()
        if self.auto_refresh:
            self.set_interval(self.auto_refresh, self.reload)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "new_run":
            return self.allow_new
        if action == "close":
            return self.can_close
        return True

    def _columns(self, table: DataTable, *, with_org: bool) -> None:
        """The table's columns; the organisation's only when the runs come from more than one
        (the database sits in the organisation's folder: usually they all do, and at 80
        columns the others need the room)."""
        self._with_org = with_org
        table.clear(columns=True)
        for label, key in (("run", "id"), ("ticks", "ticks"), ("status", "status"), ("spend", "spend"),
                           ("parent", "parent"), ("org", "org"), ("started", "started")):
            if key != "org" or with_org:
                table.add_column(label, key=key)

    @work(exclusive=True, group="runs", exit_on_error=False)
    async def reload(self) -> None:
        note = self.query_one("#runs-note", Static)
        try:
            runs = await read_runs(self.db)
        except StoreError as e:
            note.update(Text(str(e), "red"))
            return
        self.show(runs)

    def show(self, runs: list[RunInfo]) -> None:
        table = self.query_one(DataTable)
        keep = table.cursor_row
        chosen = self.runs[keep].id if 0 <= keep < len(self.runs) else self.current
        self.runs = runs
        table.clear()
        with_org = len({r.org_path for r in runs}) > 1
        if with_org != self._with_org:
            self._columns(table, with_org=with_org)
        for r in runs:
            ticks = f"{r.ticks}" + (f"/{r.target_ticks}" if r.target_ticks is not None else "")
            started = "—"
            if r.started_at:
                fmt = "%H:%M" if time.time() - r.started_at < 20 * 3600 else "%m-%d"
                started = time.strftime(fmt, time.localtime(r.started_at))
            status = Text(r.status, STATUS_LOOK.get(r.status, ""))
            run = Text(r.id, "bold" if r.id == self.current else "")
            org = (Path(r.org_path).name,) if with_org else ()
            table.add_row(run, ticks, status, f"{r.spend:.4g}", parent_text(r), *org, started, key=r.id)
        if chosen is not None:
            i = next((n for n, r in enumerate(runs) if r.id == chosen), None)
            if i is not None:
                table.move_cursor(row=i)
        note = self.query_one("#runs-note", Static)
        keys = "enter opens (a running run is followed)" + (" · n starts a new live run" if self.allow_new else "")
        note.update(f"{len(runs)} runs · {keys}" if runs else f"no runs recorded yet in {self.db}" + (" · n starts one" if self.allow_new else ""))

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        table = self.query_one(DataTable)
        if not self.runs or not 0 <= table.cursor_row < len(self.runs):
            self.app.bell()
            return
        self.dismiss(self.runs[table.cursor_row].id)

    def action_new_run(self) -> None:
        self.dismiss(NEW_RUN)

    def action_reload(self) -> None:
        self.reload()

    def action_close(self) -> None:
        self.dismiss(None)

    async def action_quit_picker(self) -> None:
        await self.app.action_quit()
