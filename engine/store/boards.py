"""The message boards of rebuilt states: a run's message log, and boards that share it.

A long run holds a million outbox entries. A reader that rebuilds states at many ticks
(replay, watch) loads the run's entries once into a `MessageLog` and gives each state
a `SharedBoard`, a prefix of the log, instead of a copy; `detached` gives an engine a
plain board of its own, bounded (it keeps what the next inboxes can show). A state rebuilt without its messages has a `CountedBoard`.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from typing import Any

from lemming.engine.messages import MessageBoard, OutboxEntry
from lemming.engine.state import OrgState
from lemming.engine.store.codec import Codec
from lemming.engine.store.errors import StoreError


class MessageLog:
    """Every outbox entry of a run's lineage (its ancestors' up to the fork, then its own),
    by author, loaded once and extended as the run grows: a board at any batch is a
    slice of these lists.

    Boards share these lists (see SharedBoard); the tick and batch indexes are arrays.
    """

    def __init__(self, segments: list[tuple[int, int | None]]) -> None:
        self.segments = segments  # (rid, last batch or None = no limit), oldest first
        self.loaded: dict[int, int] = {rid: 0 for rid, _ in segments}  # rid → last batch loaded
        self.entries: dict[str, list[OutboxEntry]] = {}
        self.ticks: dict[str, array] = {}
        self.batches: dict[str, array] = {}
        self.by_batch: dict[int, list[OutboxEntry]] = {}

    def extend(self, rows: list[tuple[int, list[Any]]], codec: Codec) -> int:
        """Add the entry rows of these batches (in batch order); returns how many."""
        decode = codec.entry_decoder()
        entries, ticks, batches = self.entries, self.ticks, self.batches
        by_batch = self.by_batch
        n = 0
        for batch, rows_of_batch in rows:
            decoded = [decode(row) for row in rows_of_batch]
            by_batch[batch] = decoded
            for e in decoded:
                a = e.agent
                lst = entries.get(a)
                if lst is None:
                    lst = entries[a] = []
                    ticks[a] = array("q")
                    batches[a] = array("q")
                lst.append(e)
                ticks[a].append(e.tick)
                batches[a].append(batch)
            n += len(decoded)
        return n

    def board(self, upto: int) -> "SharedBoard":
        """The board holding every entry committed by batches <= `upto` (a global batch id)."""
        counts = {}
        for a, batches in self.batches.items():
            n = bisect_right(batches, upto)
            if n:
                counts[a] = n
        return SharedBoard(self, counts)


class SharedBoard(MessageBoard):
    """A MessageBoard that is a prefix of a run's message log, sharing the log's lists
    (which only ever grow) instead of copying a million references per state; what is
    added to it is kept apart. Reading `outboxes` builds plain lists (once per change);
    `detach()` gives a plain MessageBoard, for a state an engine will run on.
    """

    def __init__(self, log: MessageLog, counts: dict[str, int]) -> None:  # no super(): views below
        self._log = log
        self._n = counts
        self._extra: dict[str, list[OutboxEntry]] = {}
        self._extra_ticks: dict[str, list[int]] = {}
        self.count = sum(counts.values())
        self._plain: dict[str, list[OutboxEntry]] | None = None

    def _views(self) -> dict[str, list[OutboxEntry]]:
        if self._plain is None:
            boxes: dict[str, list[OutboxEntry]] = {}
            for a in list(self._n) + [a for a in self._extra if a not in self._n]:
                n = self._n.get(a, 0)
                boxes[a] = self._log.entries[a][:n] + self._extra.get(a, []) if n else list(self._extra.get(a, []))
            self._plain = boxes
        return self._plain

    @property  # type: ignore[override]
    def outboxes(self) -> dict[str, list[OutboxEntry]]:
        return self._views()

    def add(self, entry: OutboxEntry) -> None:
        self._extra.setdefault(entry.agent, []).append(entry)
        self._extra_ticks.setdefault(entry.agent, []).append(entry.tick)
        self.count += 1
        self._plain = None

    def between(self, author: str, lo: int, hi: int) -> list[OutboxEntry]:
        out: list[OutboxEntry] = []
        n = self._n.get(author, 0)
        if n:
            ticks = self._log.ticks[author]
            i = bisect_left(ticks, lo, 0, n)
            j = bisect_left(ticks, hi, 0, n)
            if i < j:
                out = self._log.entries[author][i:j]
        extra = self._extra.get(author)
        if extra:
            et = self._extra_ticks[author]
            i = bisect_left(et, lo)
            j = bisect_left(et, hi)
            if i < j:
                out = out + extra[i:j]
        return out

    def all(self) -> list[OutboxEntry]:
        out = [e for a, n in self._n.items() for e in self._log.entries[a][:n]]
        for extra in self._extra.values():
            out.extend(extra)
        out.sort(key=lambda e: (e.tick, e.meta.get("seq", 0), e.id))
        return out

    def detach(self) -> MessageBoard:
        """A plain MessageBoard with the same entries."""
        return MessageBoard.from_entries(self.all())


class CountedBoard(MessageBoard):
    """The board of a state rebuilt without its messages (`state_at(..., messages=False)`):
    it counts the entries committed up to the state and keeps those added to it after.
    Reading it gives what was added only; `detached()` refuses it (an engine needs them all)."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count


def detached(state: OrgState) -> OrgState:
    """`state` with a plain, bounded MessageBoard (for a state an engine will run on: it
    keeps what the next inboxes can show, not the run's whole log)."""
    if isinstance(state.board, SharedBoard):
        state.board = state.board.detach()
    elif isinstance(state.board, CountedBoard):
        raise StoreError("this state was rebuilt without its messages (messages=False); an engine cannot run on it")
    state.bounded = True
    if state.board.bound_due():
        state.bound_board()
    return state
