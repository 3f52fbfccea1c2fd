"""Outbox entries, and the inbox an agent sees of them."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Iterable

OPERATOR = "operator"
#: Entries whose text a board keeps (beyond this it starts again: old entries are rarely shown).
VIEW_CACHE_MAX = 50_000


@dataclass(slots=True, frozen=True)
class OutboxEntry:
    """One message, written by `agent` into its own outbox at `tick`.

    `recipients` empty means "to whoever may read this outbox".
    """

    id: str
    tick: int
    agent: str
    kind: str
    payload: Any
    tags: tuple[str, ...] = ()
    created_at: float = 0.0
    recipients: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def addressed_to(self, name: str) -> bool:
        return not self.recipients or name in self.recipients

    @property
    def text(self) -> str:
        p = self.payload
        if isinstance(p, str):
            return p
        if isinstance(p, dict) and isinstance(p.get("text"), str):
            return p["text"]
        import json

        return json.dumps(p, ensure_ascii=False, sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tick": self.tick,
            "agent": self.agent,
            "kind": self.kind,
            "payload": self.payload,
            "tags": list(self.tags),
            "created_at": self.created_at,
            "recipients": list(self.recipients),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OutboxEntry":
        return cls(
            id=d["id"],
            tick=d["tick"],
            agent=d["agent"],
            kind=d["kind"],
            payload=d["payload"],
            tags=tuple(d.get("tags", ())),
            created_at=d.get("created_at", 0.0),
            recipients=tuple(d.get("recipients", ())),
            meta=dict(d.get("meta") or {}),
        )


@dataclass(slots=True)
class Inbox:
    """What an agent is shown at the start of a turn."""

    new: list[OutboxEntry]
    context: list[OutboxEntry]  # older entries it has already seen, for continuity
    dropped: int = 0  # new entries left out because of the limit
    #: The board's `view_cache` (entry id -> text), for whoever renders these entries.
    view_cache: dict[str, str] | None = field(default=None, compare=False, repr=False)


class _AuthorIndex:
    """One outbox split by audience: its broadcasts, and per recipient what was addressed
    to it, each in commit order with its ticks, so that an inbox is a few bisects and
    slices instead of a scan of the outbox's whole history."""

    __slots__ = ("box", "n", "to_all", "to_all_ticks", "to", "to_ticks")

    def __init__(self, box: list[OutboxEntry]) -> None:
        self.box = box
        self.n = 0
        self.to_all: list[OutboxEntry] = []
        self.to_all_ticks: list[int] = []
        self.to: dict[str, list[OutboxEntry]] = {}
        self.to_ticks: dict[str, list[int]] = {}

    def catch_up(self) -> None:
        box = self.box
        for e in box[self.n :]:
            if not e.recipients:
                self.to_all.append(e)
                self.to_all_ticks.append(e.tick)
            else:
                for r in set(e.recipients):
                    self.to.setdefault(r, []).append(e)
                    self.to_ticks.setdefault(r, []).append(e.tick)
        self.n = len(box)


def _order(e: OutboxEntry) -> tuple:
    return (e.tick, e.meta.get("seq", 0), e.id)


class MessageBoard:
    """Every outbox of the organisation, indexed by author and tick.

    Each outbox is a list in commit order, so ticks are non-decreasing and a
    bisect finds "created before tick t" without scanning.
    """

    def __init__(self) -> None:
        self.outboxes: dict[str, list[OutboxEntry]] = {}
        self._ticks: dict[str, list[int]] = {}
        self._index: dict[str, _AuthorIndex] = {}
        self.count = 0
        #: Text worked out from an entry, by entry id (the prompt's JSON view of it). An entry
        #: never changes and ids are unique within a board, so it is worked out once and
        #: not once per reader and turn.
        self.view_cache: dict[str, str] = {}

    def add(self, entry: OutboxEntry) -> None:
        self.outboxes.setdefault(entry.agent, []).append(entry)
        self._ticks.setdefault(entry.agent, []).append(entry.tick)
        self.count += 1

    def all(self) -> list[OutboxEntry]:
        out = [e for box in self.outboxes.values() for e in box]
        out.sort(key=_order)
        return out

    def between(self, author: str, lo: int, hi: int) -> list[OutboxEntry]:
        """Entries of `author` with lo <= tick < hi."""
        box = self.outboxes.get(author)
        if not box:
            return []
        ticks = self._ticks[author]
        i = bisect.bisect_left(ticks, lo)
        j = bisect.bisect_left(ticks, hi)
        return box[i:j]

    def _author_index(self, author: str) -> _AuthorIndex | None:
        box = self.outboxes.get(author)
        if not box:
            return None
        # Built lazily and kept in step with the outbox list (which only grows); rebuilt if
        # the list was replaced (a board restored from a snapshot assigns whole lists).
        idx = getattr(self, "_index", None)
        if idx is None:
            idx = self._index = {}
        ai = idx.get(author)
        if ai is None or ai.box is not box or ai.n > len(box):
            ai = idx[author] = _AuthorIndex(box)
        if ai.n < len(box):
            ai.catch_up()
        return ai

    def inbox(
        self,
        name: str,
        readable: Iterable[str],
        tick: int,
        since: int,
        *,
        new_limit: int,
        context: int,
    ) -> Inbox:
        """The inbox of `name` at `tick`: entries it may read, created before `tick`,
        addressed to it or to no one in particular, new since tick `since`.

        The operator's entries come to their recipients whatever `readable` says, and
        only once (an agent that lists "operator" among its readable outboxes too)."""
        if type(self) is not MessageBoard:  # a board with its own storage (the store's views)
            return self._inbox_by_scan(name, readable, tick, since, new_limit=new_limit, context=context)
        # Work per turn is bounded by the limits, not by the length of the run: from each
        # source (an author's broadcasts, what it addressed to `name`) only its last
        # `new_limit` new entries and `context` older ones can be shown.
        new: list[OutboxEntry] = []
        old: list[OutboxEntry] = []
        n_new = 0
        bisect_left = bisect.bisect_left
        outboxes = self.outboxes
        index = getattr(self, "_index", None)
        authors = [a for a in readable if a != name and a != OPERATOR]
        authors.append(OPERATOR)
        for author in authors:
            box = outboxes.get(author)
            if not box:
                continue
            # (`_author_index`, inlined: this runs for every author an agent reads, every turn)
            ai = index.get(author) if index is not None else None
            if ai is None or ai.box is not box or ai.n != len(box):
                ai = self._author_index(author)
                index = self._index
                assert ai is not None
            with_context = context and author != OPERATOR
            mine = ai.to.get(name)
            for lst, ticks in ((ai.to_all, ai.to_all_ticks), (mine, ai.to_ticks[name] if mine else None)):
                if not lst:
                    continue
                i = bisect_left(ticks, since)
                j = bisect_left(ticks, tick)
                n_new += j - i
                if j > i:
                    new.extend(lst[max(i, j - new_limit) : j])
                if with_context and i:
                    old.extend(lst[max(0, i - context) : i])
        if len(new) > 1:
            new.sort(key=_order)
        dropped = max(0, n_new - new_limit)
        if len(new) > new_limit:
            new = new[-new_limit:]
        if len(old) > 1:
            old.sort(key=_order)
        cache = getattr(self, "view_cache", None)
        if cache is not None and len(cache) > VIEW_CACHE_MAX:
            cache.clear()
        return Inbox(new=new, context=old[-context:] if context else [], dropped=dropped, view_cache=cache)

    def _inbox_by_scan(
        self, name: str, readable: Iterable[str], tick: int, since: int, *, new_limit: int, context: int
    ) -> Inbox:
        """`inbox` for boards that only provide `between` (linear in the outboxes' history)."""
        new: list[OutboxEntry] = []
        old: list[OutboxEntry] = []
        for author in readable:
            if author == name or author == OPERATOR:
                continue
            for e in self.between(author, since, tick):
                if e.addressed_to(name):
                    new.append(e)
            if context:
                older = [e for e in self.between(author, 0, since) if e.addressed_to(name)]
                old.extend(older[-context:])
        for e in self.between(OPERATOR, since, tick):
            if e.addressed_to(name):
                new.append(e)
        new.sort(key=_order)
        dropped = max(0, len(new) - new_limit)
        if dropped:
            new = new[-new_limit:]
        old.sort(key=_order)
        return Inbox(new=new, context=old[-context:] if context else [], dropped=dropped)
