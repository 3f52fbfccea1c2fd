"""Find in a run (`/`): type words, see where they were said, enter goes there.

The search is the store's full-text index (engine/store/search.py), asked by a
worker as the operator types (after a short pause) or on enter; the hits list
tick, agent, kind and the matching line with the words highlighted. `down` moves
from the box into the hits; enter on a hit dismisses the dialog with it, and the
room decides what "going there" means (replay: the cursor moves to the tick and
the agent is selected; live: the turn opens in the inspector).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from lemming.engine.store.errors import StoreError
from lemming.engine.store.search import Hit, SearchIndex, SearchResult
from lemming.tui.hits import hit_row

if TYPE_CHECKING:
    from textual.app import App

    from lemming.engine.store import RunStore

#: What the dialog calls to search: the words → the result (raises StoreError to say why not).
Searcher = Callable[[str], Awaitable[SearchResult]]
#: Wait this long after a key before searching (typing a word is not a search per letter).
DEBOUNCE_S = 0.25


class SearchScreen(ModalScreen[Hit | None]):
    """Search the run; dismissed with the chosen hit, or None on escape."""

    DEFAULT_CSS = """
    SearchScreen { align: center middle; }
    SearchScreen > #search-box {
        width: 120;
        max-width: 100%;
        height: 80%;
        max-height: 100%;
        border: round $primary;
        background: $surface;
        padding: 0 1;
    }
    SearchScreen .dialog-title { text-style: bold; color: $primary; }
    SearchScreen #search-query { width: 1fr; }
    SearchScreen #search-status { color: $text-muted; height: 1; }
    SearchScreen #search-status.-error { color: $error; }
    SearchScreen #search-hits { height: 1fr; border: none; background: $surface; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    BINDINGS = [
        Binding("escape", "cancel", "Close", id="search.cancel"),
        Binding("down", "to_hits", "Hits", show=False, id="search.hits"),
    ]

    def __init__(self, searcher: Searcher, *, where: str, query: str = "", cursor_blink: bool = True) -> None:
        super().__init__()
        self.searcher = searcher
        self.where = where
        self.initial = query
        self.cursor_blink = cursor_blink
        self.hits: list[Hit] = []
        self.result: SearchResult | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="search-box"):
            yield Label(f"Find in {self.where}", classes="dialog-title")
            yield Input(self.initial, id="search-query", compact=True, placeholder="words (all must appear) · \"a phrase\" · pre*")
            yield Static("type words; enter on a hit goes there · esc closes", id="search-status")
            yield OptionList(id="search-hits")

    def on_mount(self) -> None:
        box = self.query_one("#search-query", Input)
        if not self.cursor_blink:
            box.cursor_blink = False
        box.focus()
        if self.initial.strip():
            self.run_search(self.initial, debounce=False)

    @on(Input.Changed, "#search-query")
    def _changed(self, event: Input.Changed) -> None:
        if event.value.strip():
            self.run_search(event.value)

    @on(Input.Submitted, "#search-query")
    def _submitted(self, event: Input.Submitted) -> None:
        if self.hits and self.result is not None and self.result.query == event.value:
            self.action_to_hits()
        elif event.value.strip():
            self.run_search(event.value, debounce=False)

    @work(exclusive=True, group="search", exit_on_error=False)
    async def run_search(self, text: str, debounce: bool = True) -> None:
        if debounce:
            await asyncio.sleep(DEBOUNCE_S)
        status = self.query_one("#search-status", Static)
        try:
            result = await self.searcher(text)
        except StoreError as e:
            status.add_class("-error")
            status.update(str(e))
            return
        status.remove_class("-error")
        self.show(result)

    def show(self, result: SearchResult) -> None:
        """Put a result's hits in the list (the first one highlighted)."""
        self.result = result
        self.hits = list(result.hits)
        hits = self.query_one("#search-hits", OptionList)
        hits.clear_options()
        hits.add_options([Option(hit_row(h)) for h in self.hits])
        if self.hits:
            hits.highlighted = 0
        shown = len(self.hits)
        more = f", the first {shown} shown" if result.total > shown else ""
        built = f" · indexed {result.indexed_now} batch(es) first" if result.indexed_now else ""
        what = f"{result.total_text} match(es){more}" if result.total else "no match"
        self.query_one("#search-status", Static).update(f"{what}{built} · ↓ then enter goes there · esc closes")

    def action_to_hits(self) -> None:
        if self.hits:
            self.query_one("#search-hits", OptionList).focus()

    @on(OptionList.OptionSelected, "#search-hits")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        if 0 <= event.option_index < len(self.hits):
            self.dismiss(self.hits[event.option_index])

    def action_cancel(self) -> None:
        self.dismiss(None)


#: The last words searched, per app: `/` again opens with them.
_LAST_QUERY: dict[int, str] = {}


def open_search(app: "App[Any]", store: "RunStore", run_id: str, chosen: Callable[[Hit], None], *,
                build: bool = True) -> None:
    """Push the search dialog on `app` for `run_id` in `store`; `chosen(hit)` on enter.
    `build`: whether a missing index may be written into the file (see SearchIndex)."""
    index = SearchIndex(store, build=build)

    async def searcher(text: str) -> SearchResult:
        _LAST_QUERY[id(app)] = text
        return await index.search(run_id, text)

    def done(hit: Hit | None) -> None:
        if hit is not None:
            chosen(hit)

    app.push_screen(
        SearchScreen(searcher, where=f"run {run_id}", query=_LAST_QUERY.get(id(app), ""),
                     cursor_blink=getattr(app, "cursor_blink", True)),
        done,
    )


def inspect_hit(app: "App[Any]", store: "RunStore | None", run_id: str, hit: Hit) -> None:
    """Live mode's "go there": the turn that said it, in the inspector (read from the store)."""
    from lemming.tui.screens.inspector import InspectorScreen

    replay = f"`lemming replay {run_id} --at {hit.tick}` shows every pane at that tick."

    async def show() -> None:
        rec = None
        if store is not None and hit.agent != "operator":
            try:
                rec = await store.turn(run_id, hit.tick, hit.agent)
            except StoreError as e:
                app.notify(f"{e}\n{replay}", title="Cannot read the turn", severity="error", timeout=8)
                return
        if rec is None:
            app.notify(f"{hit.agent} at tick {hit.tick}: {hit.plain_line[:200]}\n{replay}", title="Found", timeout=10)
            return
        app.push_screen(InspectorScreen([rec], 0, wall_clock=getattr(app, "wall_clock", True)))
        app.notify(replay, title=f"{hit.agent} at tick {hit.tick}", timeout=6)

    app.run_worker(show(), group="search-inspect", exclusive=True, exit_on_error=False)
