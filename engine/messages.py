"""Outbox entries, and the inbox an agent sees of them."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Iterable, Sequence

from lemming.engine.fastinit import fast_frozen_init

OPERATOR = "operator"
#: Entries whose text a board keeps (beyond this it starts again: old entries are rarely shown).
VIEW_CACHE_MAX = 50_000
#: A bounded board is bounded again after at least this many entries were added.
BOUND_EVERY = 2048


@fast_frozen_init  # (a tick makes one per message)
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
    view_cache: dict[str, tuple[str, str]] | None = field(default=None, compare=False, repr=False)


class _Source:
    """One audience of one outbox — its broadcasts, or what it addressed to one agent —
    in commit order (so ticks never decrease): a window of its latest entries, and the
    positions of entries are counted from the start of the run (`base` + index).

    A bounded board (`MessageBoard.bound`) drops the front of the window; for a reader
    whose cursor fell behind it, a mark keeps what that reader can still be shown: how
    many entries came before its cursor, and the context entries just before it."""

    __slots__ = ("entries", "ticks", "keyed", "base", "marks")

    def __init__(self) -> None:
        self.entries: list[OutboxEntry] = []
        self.ticks: list[int] = []
        #: Each entry after its `_order` key, worked out once (`_keyed`): inboxes merge
        #: sources by it (a flat tuple compares faster than a key tuple in a pair)
        self.keyed: list[tuple] = []
        self.base = 0
        #: cursor tick → (entries before it, the last context entries before it)
        self.marks: dict[int, tuple[int, tuple[OutboxEntry, ...]]] = {}

    def append(self, e: OutboxEntry) -> None:
        self.entries.append(e)
        self.ticks.append(e.tick)
        self.keyed.append(_keyed(e))

    def before(self, tick: int) -> int | None:
        """How many entries have a tick below `tick` (None: the board no longer knows)."""
        ticks = self.ticks
        if ticks and tick > ticks[-1]:
            return self.base + len(ticks)
        if not self.base or (ticks and tick > ticks[0]):
            return self.base + bisect.bisect_left(ticks, tick)
        if tick <= 0:
            return 0
        m = self.marks.get(tick)
        return m[0] if m is not None else None

    def context(self, since: int, i: int, context: int) -> list[tuple]:
        """The `context` entries before position `i` (the count of entries before `since`),
        keyed (`_keyed`)."""
        base = self.base
        lo = i - context if i > context else 0
        if lo >= base:
            return self.keyed[lo - base : i - base]
        m = self.marks.get(since)
        got: Sequence[OutboxEntry]
        if m is not None and m[0] == i:
            got = m[1][-context:]
        else:
            got = self.entries[: i - base] if i > base else []  # lost (see MessageBoard.bound)
        return [_keyed(e) for e in got]

    def trim(self, wants: dict[int, int], keep: int) -> None:
        """Keep the last `keep` entries, and a mark for each cursor in `wants` (cursor →
        context wanted) that needs what goes."""
        base = self.base
        newbase = base + len(self.entries) - keep
        marks: dict[int, tuple[int, tuple[OutboxEntry, ...]]] = {}
        old = self.marks
        for since, ctx in wants.items():
            i = self.before(since)
            # Needed when the count before the cursor could no longer be worked out from
            # the window (its first tick would not be below the cursor), or when part of
            # its context goes.
            if i is None or since <= 0 or (i > newbase and i - ctx >= newbase):
                continue
            m = old.get(since)
            stale = m is None or m[0] != i
            if i >= base and (stale or (len(m[1]) < min(ctx, i) and i - ctx >= base)):  # type: ignore[index]
                lo = max(base, i - ctx)  # (all of it, unless it was lost before: see bound)
                m = (i, tuple(self.entries[lo - base : i - base]))
            if m is not None:
                marks[since] = m
        self.marks = marks
        if newbase > base:
            cut = newbase - base
            del self.entries[:cut]
            del self.ticks[:cut]
            del self.keyed[:cut]
            self.base = newbase


class _Outbox:
    """One author's outbox split by audience: its broadcasts, and per recipient what was
    addressed to it, so that an inbox is a few bisects and slices."""

    __slots__ = ("to_all", "to")

    def __init__(self) -> None:
        self.to_all = _Source()
        self.to: dict[str, _Source] = {}


_ID = attrgetter("id")


def _order(e: OutboxEntry) -> tuple:
    return (e.tick, e.meta.get("seq", 0), e.id)


def _keyed(e: OutboxEntry) -> tuple:
    """`_order(e)`'s fields then `e`: sorted, entries are in that order (ids are unique,
    so the entry itself is never compared)."""
    return (e.tick, e.meta.get("seq", 0), e.id, e)


class MessageBoard:
    """Every outbox of the organisation, indexed by author, audience and tick.

    A board grows with the run until `bound()` is called; the live engine's state calls
    it every few thousand entries (`OrgState.bound_board`), after which the board holds
    what the next inboxes can show — per audience the latest `inbox_new_limit +
    inbox_context` entries, and for each reader whose cursor fell behind them the count
    and context before its cursor — and the run store holds the rest (replay and
    export read it there). Inboxes are the same as an unbounded board's; what a hot
    reload changes (a newly granted outbox, larger inbox limits) sees the board's window
    of the past, not the whole run.
    """

    def __init__(self) -> None:
        self._index: dict[str, _Outbox] = {}
        self.count = 0  # entries ever added
        self._since_bound = 0
        #: Text worked out from an entry, by entry id (the prompt's JSON view of it). An entry
        #: never changes and ids are unique within a board, so it is worked out once and
        #: not once per reader and turn.
        self.view_cache: dict[str, tuple[str, str]] = {}
        #: Sources are only ever added (an author's first entry, its first entry for a
        #: recipient): counted, so that a reader's list of sources is kept until one is.
        self._sources = 0
        #: reader -> (its readable outboxes, `_sources` then, [(source, with context)])
        self._reading: dict[str, tuple[list[str], int, list[tuple[_Source, bool]]]] = {}

    @classmethod
    def from_entries(cls, entries: Iterable[OutboxEntry]) -> "MessageBoard":
        """A board holding `entries` (in commit order)."""
        b = cls()
        for e in entries:
            b.add(e)
        return b

    def add(self, entry: OutboxEntry) -> None:
        ob = self._index.get(entry.agent)
        if ob is None:
            ob = self._index[entry.agent] = _Outbox()
            self._sources += 1
        if not entry.recipients:
            ob.to_all.append(entry)
        else:
            to = ob.to
            for r in dict.fromkeys(entry.recipients):
                src = to.get(r)
                if src is None:
                    src = to[r] = _Source()
                    self._sources += 1
                src.append(entry)
        self.count += 1
        self._since_bound += 1

    # --- what the board holds (inspection, tests; not the engine's hot path) ------------

    @property
    def outboxes(self) -> dict[str, list[OutboxEntry]]:
        """Each author's entries that the board holds, in commit order."""
        out: dict[str, list[OutboxEntry]] = {}
        for author, ob in self._index.items():
            seen: dict[str, OutboxEntry] = {}
            for src in (ob.to_all, *ob.to.values()):
                for e in src.entries:
                    seen.setdefault(e.id, e)
            if seen:
                out[author] = sorted(seen.values(), key=_order)
        return out

    def all(self) -> list[OutboxEntry]:
        out = [e for box in self.outboxes.values() for e in box]
        out.sort(key=_order)
        return out

    def between(self, author: str, lo: int, hi: int) -> list[OutboxEntry]:
        """Entries of `author` the board holds with lo <= tick < hi."""
        return [e for e in self.outboxes.get(author, ()) if lo <= e.tick < hi]

    # --- bounding ------------------------------------------------------------------------

    def bound_due(self) -> bool:
        """Whether enough was added since the last `bound()` for another to be worth it
        (never for a board with its own storage, such as the store's shared views)."""
        return type(self) is MessageBoard and self._since_bound >= max(BOUND_EVERY, len(self._index) * 4)

    def bound(self, cursors: dict[str, int], readable: dict[str, Iterable[str]], *, new_limit: int, context: int) -> None:
        """Drop what no inbox can show any more: `readable` is each agent's readable
        outboxes, `cursors` their cursors (`OrgState.cursors`). Keeps per audience the
        latest `new_limit + context` entries, and for each reader whose cursor is behind
        them a mark (the count before its cursor, and its context)."""
        self._since_bound = 0
        keep = new_limit + context
        wants: dict[int, dict[int, int]] = {}  # id(source) → {cursor: context}
        sources: dict[int, _Source] = {}

        def want(src: _Source | None, since: int, ctx: int) -> None:
            if src is None:
                return
            k = id(src)
            w = wants.get(k)
            if w is None:
                w = wants[k] = {}
                sources[k] = src
            if w.get(since, -1) < ctx:
                w[since] = ctx

        index = self._index
        op = index.get(OPERATOR)
        for name, authors in readable.items():
            since = cursors.get(name, 0)
            for author in authors:
                if author == name or author == OPERATOR:
                    continue
                ob = index.get(author)
                if ob is not None:
                    want(ob.to_all, since, context)
                    want(ob.to.get(name), since, context)
            if op is not None:
                want(op.to_all, since, 0)
                want(op.to.get(name), since, 0)
        # (ids gathered and views dropped in C: a board holds thousands of entries)
        kept: set[str] = set()
        held = kept.update
        for ob in index.values():
            for src in (ob.to_all, *ob.to.values()):
                if len(src.entries) > 2 * keep or src.marks:
                    src.trim(wants.get(id(src), {}), keep if len(src.entries) > 2 * keep else len(src.entries))
                held(map(_ID, src.entries))
                for _, ctx_entries in src.marks.values():
                    held(map(_ID, ctx_entries))
        cache = self.view_cache
        if len(cache) > len(kept):
            for k in cache.keys() - kept:
                del cache[k]

    # --- inboxes -------------------------------------------------------------------------

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
        # Entries are gathered with their order keys, and merged (sorted by key, in C) only
        # when more than one source gave some.
        new: list[tuple] = []  # keyed entries (`_keyed`)
        old: list[tuple] = []
        new_from = old_from = 0
        n_new = 0
        bisect_left = bisect.bisect_left
        for src, with_context in self._sources_of(name, readable):
            ticks = src.ticks
            if not ticks:
                continue
            base = src.base
            if tick > ticks[-1] and (not base or since > ticks[0]):
                # (the live engine's case: every entry is before `tick`, the cursor is
                # within the window)
                j = base + len(ticks)
                i = base + bisect_left(ticks, since)
            else:
                got = self._span(src, tick, since)
                if got is None:
                    continue
                i, j = got
            if j > i:
                n_new += j - i
                lo = j - new_limit
                if lo < i:
                    lo = i
                if lo < base:
                    lo = base
                new += src.keyed[lo - base : j - base]
                new_from += 1
            if with_context and context and i:
                lo = i - context
                # (`src.context`'s own first case, without the call: the usual one)
                ctx = src.keyed[lo - base : i - base] if lo >= base and lo >= 0 else src.context(since, i, context)
                if ctx:
                    old += ctx
                    old_from += 1
        if new_from > 1:
            new.sort()
        dropped = n_new - new_limit if n_new > new_limit else 0
        if old_from > 1:
            old.sort()
        shown = [e for _, _, _, e in (new[-new_limit:] if len(new) > new_limit else new)]
        if context:
            earlier = [e for _, _, _, e in (old[-context:] if len(old) > context else old)]
        else:
            earlier = []
        cache = self.view_cache
        if len(cache) > VIEW_CACHE_MAX:
            cache.clear()
        return Inbox(shown, earlier, dropped, cache)

    def _sources_of(self, name: str, readable: Iterable[str]) -> list[tuple[_Source, bool]]:
        """The sources `name` reads, in order, each with whether its older entries are shown
        as context: per readable author (not itself, not the operator) its broadcasts and
        what it addressed to `name`, then the operator's. Kept per reader (for the same
        readable list) until a source is added."""
        got = self._reading.get(name)
        if got is not None and got[1] == self._sources and got[0] == readable:
            return got[2]
        out: list[tuple[_Source, bool]] = []
        index = self._index
        readable = list(readable)
        for author in readable:
            if author == name or author == OPERATOR:
                continue
            ob = index.get(author)
            if ob is not None:
                out.append((ob.to_all, True))
                src = ob.to.get(name)
                if src is not None:
                    out.append((src, True))
        op = index.get(OPERATOR)
        if op is not None:  # the operator's outbox comes last, for its new entries only
            out.append((op.to_all, False))
            src = op.to.get(name)
            if src is not None:
                out.append((src, False))
        self._reading[name] = (readable, self._sources, out)
        return out

    @staticmethod
    def _span(src: _Source, tick: int, since: int) -> tuple[int, int] | None:
        """(entries before `since`, entries before `tick`) of `src`, counted from the start of
        the run; None when the board no longer knows what came before `tick`."""
        ticks = src.ticks
        base = src.base
        if tick > ticks[-1]:
            j = base + len(ticks)
        else:
            j = src.before(tick)  # type: ignore[assignment]
            if j is None:  # a tick older than the board holds
                return None
        if since > ticks[0] or not base:
            i = base + bisect.bisect_left(ticks, since)
        else:
            i = src.before(since)  # type: ignore[assignment]
            if i is None:
                i = base
        return i, j

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
