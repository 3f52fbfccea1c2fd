"""Outbox entries, and the inbox an agent sees of them."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Iterable

OPERATOR = "operator"


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


class MessageBoard:
    """Every outbox of the organisation, indexed by author and tick.

    Each outbox is a list in commit order, so ticks are non-decreasing and a
    bisect finds "created before tick t" without scanning.
    """

    def __init__(self) -> None:
        self.outboxes: dict[str, list[OutboxEntry]] = {}
        self._ticks: dict[str, list[int]] = {}
        self.count = 0

    def add(self, entry: OutboxEntry) -> None:
        self.outboxes.setdefault(entry.agent, []).append(entry)
        self._ticks.setdefault(entry.agent, []).append(entry.tick)
        self.count += 1

    def all(self) -> list[OutboxEntry]:
        out = [e for box in self.outboxes.values() for e in box]
        out.sort(key=lambda e: (e.tick, e.meta.get("seq", 0), e.id))
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
        addressed to it or to no one in particular, new since tick `since`."""
        new: list[OutboxEntry] = []
        old: list[OutboxEntry] = []
        for author in readable:
            if author == name:
                continue
            for e in self.between(author, since, tick):
                if e.addressed_to(name):
                    new.append(e)
            if context:
                older = [e for e in self.between(author, 0, since) if e.addressed_to(name)]
                old.extend(older[-context:])
        # The operator writes only to named recipients or to everyone; no permission needed.
        for e in self.between(OPERATOR, since, tick):
            if e.addressed_to(name):
                new.append(e)
        order = lambda e: (e.tick, e.meta.get("seq", 0), e.id)  # noqa: E731
        new.sort(key=order)
        dropped = max(0, len(new) - new_limit)
        if dropped:
            new = new[-new_limit:]
        old.sort(key=order)
        return Inbox(new=new, context=old[-context:] if context else [], dropped=dropped)
