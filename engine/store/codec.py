"""The event codec: batches of events as compact rows, and back.

A batch's events are stored as rows (lists, pickled; JSON arrays in files written
before), one per event: a layout code, then the event's fields in the order of that
layout. The `codec` table maps each code to an
event type (or TurnRecord / OutboxEntry / TokenUsage) and its field names, so a
newer engine whose events have other fields still reads old rows, by name. Turn
records and outbox entries are kept apart from their event rows (the batch body's
second line, and the `messages` table), so a fold builds only what it keeps.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from typing import Any, Callable, Iterable, Sequence

from lemming.engine.events import (
    EVENT_TYPES,
    Event,
    MessageCommitted,
    TokenUsage,
    TurnFinished,
    TurnRecord,
)
from lemming.engine.messages import OutboxEntry
from lemming.engine.state import FOLD_SKIPS, OrgState
from lemming.engine.store.encoding import unpickle
from lemming.engine.store.errors import StoreError, UnknownLayout


def _is_tuple_field(f: dataclasses.Field) -> bool:
    return "tuple" in str(f.type)


class _Layout:
    """How one event type (or TurnRecord / OutboxEntry / TokenUsage) is laid out in a row."""

    __slots__ = ("code", "name", "fields", "cls", "current", "tuple_idx", "getter", "index", "record_idx", "entry_idx")

    def __init__(self, code: int, name: str, fields: tuple[str, ...], cls: type | None) -> None:
        self.code = code
        self.name = name
        self.fields = fields
        self.cls = cls
        cur = tuple(f.name for f in dataclasses.fields(cls)) if cls is not None else ()
        self.current = cls is not None and cur == fields
        self.tuple_idx = (
            tuple(i for i, f in enumerate(dataclasses.fields(cls)) if _is_tuple_field(f)) if self.current else ()
        )
        self.getter = operator.attrgetter(*fields) if self.current and fields else None
        self.index = {n: i for i, n in enumerate(fields)}
        self.record_idx = self.index.get("record") if name == TurnFinished.type else None
        self.entry_idx = self.index.get("entry") if name == MessageCommitted.type else None

    def values(self, obj: Any) -> list[Any]:
        g = self.getter
        if g is None:
            return []
        v = g(obj)
        return list(v) if len(self.fields) > 1 else [v]

    def build(self, vals: list[Any]) -> Any:
        cls = self.cls
        if cls is None:
            raise StoreError(f"the database holds a {self.name!r} event this version of lemming does not know")
        if self.current:
            for i in self.tuple_idx:
                v = vals[i]
                if v is not None:
                    vals[i] = tuple(v)
            return cls(*vals)
        # Written by an engine whose event had other fields: map by name.
        names = {f.name: f for f in dataclasses.fields(cls)}
        kw = {}
        for n, v in zip(self.fields, vals):
            f = names.get(n)
            if f is None:
                continue
            kw[n] = tuple(v) if (v is not None and _is_tuple_field(f) and isinstance(v, list)) else v
        try:
            return cls(**kw)
        except TypeError as e:
            raise StoreError(f"a recorded {self.name!r} event cannot be read by this version of lemming: {e}") from None


_NESTED = {"TurnRecord": TurnRecord, "OutboxEntry": OutboxEntry, "TokenUsage": TokenUsage}



def current_layouts() -> dict[str, tuple[str, ...]]:
    """Type name → field names, of every event type and nested record this engine writes."""
    out = {name: tuple(f.name for f in dataclasses.fields(cls)) for name, cls in EVENT_TYPES.items()}
    for name, cls in _NESTED.items():
        out[name] = tuple(f.name for f in dataclasses.fields(cls))
    return out


def _unknown_event(code: Any) -> _Layout:
    raise UnknownLayout(f"unknown event code {code} in the database (corrupt?)")


class Codec:
    """Encodes batches of events into compact rows and back, by the layouts in `codec`."""

    def __init__(self, rows: Iterable[tuple[int, str, str]]) -> None:
        self.by_code: dict[int, _Layout] = {}
        self.by_name: dict[str, _Layout] = {}  # current layouts only
        #: event class → (code, getter) for the events without a nested record or entry
        self._plain_rows: dict[type, tuple[int, Callable[[Any], Any]]] = {}
        self._record_enc: tuple | None = None
        self._entry_enc: tuple | None = None
        self._entry_dec: Callable[[Any], OutboxEntry] | None = None
        for code, name, fields in rows:
            cls = EVENT_TYPES.get(name) or _NESTED.get(name)
            lay = _Layout(code, name, tuple(json.loads(fields)), cls)
            self.by_code[code] = lay
            if lay.current:
                self.by_name[name] = lay

    def _nested(self, name: str) -> _Layout:
        lay = self.by_name.get(name)
        if lay is None:
            raise StoreError(f"the database has no layout for {name}; open it read-write once to register it")
        return lay

    # -- encoding (the writer) ----------------------------------------------------------

    def encode_record(self, rec: TurnRecord) -> list[Any]:
        enc = self._record_enc
        if enc is None:
            lay, ul = self._nested("TurnRecord"), self._nested("TokenUsage")
            enc = self._record_enc = (lay.code, lay.getter, lay.index["prompt"] + 1, lay.index["usage"] + 1, ul.code, ul.getter)
        code, getter, pi, ui, ucode, ugetter = enc
        vals = [code, *getter(rec)]
        vals[pi] = None  # kept in `prompts`, compressed
        vals[ui] = (ucode, *ugetter(rec.usage))
        return vals

    def encode_entry(self, e: OutboxEntry) -> tuple[Any, ...]:
        enc = self._entry_enc
        if enc is None:
            lay = self._nested("OutboxEntry")
            enc = self._entry_enc = (lay.code, lay.getter)
        return (enc[0], *enc[1](e))

    def encode(self, events: Sequence[Event], turns: list[TurnRecord] | None = None) -> tuple[list[Any], list[Any], list[Any]]:
        """(rows, message entries, turn records) for one batch; a row's entry or
        record is None in the row and comes next from its own list. The batch's
        TurnRecords are appended to `turns`, if given."""
        rows: list[Any] = []
        entries: list[Any] = []
        records: list[Any] = []
        plain = self._plain_rows
        append = rows.append
        for ev in events:
            got = plain.get(ev.__class__)
            if got is not None:
                append([got[0], *got[1](ev)])
                continue
            lay = self.by_name.get(ev.type)
            if lay is None:
                raise StoreError(f"event type {ev.type!r} has no layout in this database; reopen it read-write")
            if lay.record_idx is None and lay.entry_idx is None:
                plain[ev.__class__] = (lay.code, lay.getter)
                append([lay.code, *lay.getter(ev)])  # type: ignore[misc]
                continue
            vals = lay.values(ev)
            if lay.record_idx is not None:
                if turns is not None:
                    turns.append(vals[lay.record_idx])
                records.append(self.encode_record(vals[lay.record_idx]))
                vals[lay.record_idx] = None
            else:
                entries.append(self.encode_entry(vals[lay.entry_idx]))  # type: ignore[index]
                vals[lay.entry_idx] = None  # type: ignore[index]
            rows.append([lay.code, *vals])
        return rows, entries, records

    # -- decoding (readers) -------------------------------------------------------------

    def entry_decoder(self) -> Callable[[list[Any]], OutboxEntry]:
        """A fast decoder of OutboxEntry rows (the current layout by position; others by name)."""
        lay = self.by_name.get("OutboxEntry")
        code = lay.code if lay is not None else None
        slow = self.decode_nested
        make = OutboxEntry
        if lay is None or lay.fields != ("id", "tick", "agent", "kind", "payload", "tags", "created_at", "recipients", "meta"):
            return slow

        def decode(row: list[Any]) -> OutboxEntry:
            if row[0] != code:
                return slow(row)
            _, id_, tick, agent, kind, payload, tags, created_at, recipients, meta = row
            return make(id_, tick, agent, kind, payload, tuple(tags), created_at, tuple(recipients), meta)

        return decode

    def _entry_decoder(self) -> Callable[[Any], OutboxEntry]:
        dec = self._entry_dec
        if dec is None:
            dec = self._entry_dec = self.entry_decoder()
        return dec

    def decode_nested(self, row: list[Any]) -> Any:
        lay = self.by_code.get(row[0])
        if lay is None:
            raise UnknownLayout(f"unknown layout code {row[0]} in the database (corrupt?)")
        vals = list(row[1:])
        if lay.name == "TurnRecord":
            i = lay.index.get("usage")
            if i is not None and isinstance(vals[i], (list, tuple)):
                vals[i] = self.decode_nested(vals[i])
            j = lay.index.get("prompt")
            if j is not None and vals[j] is None:
                vals[j] = []
        return lay.build(vals)

    def decode(self, rows: list[Any], entries: Sequence[Any], records: Sequence[Any], skip: frozenset[type] = frozenset()) -> list[Event]:
        """Events from a batch's rows, but those of the types in `skip`; `entries` are
        decoded entries (OutboxEntry) or rows, `records` the record rows."""
        out: list[Event] = []
        by_code = self.by_code
        entry = self._entry_decoder()
        ei = ri = 0
        for row in rows:
            lay = by_code.get(row[0]) or _unknown_event(row[0])
            if lay.cls in skip:
                if lay.record_idx is not None:
                    ri += 1
                elif lay.entry_idx is not None:
                    ei += 1
                continue
            vals = row[1:]
            if lay.record_idx is not None:
                vals[lay.record_idx] = self.decode_nested(records[ri])
                ri += 1
            elif lay.entry_idx is not None:
                e = entries[ei]
                vals[lay.entry_idx] = e if type(e) is OutboxEntry else entry(e)
                ei += 1
            out.append(lay.build(vals))
        return out

    def fold(self, state: OrgState, rows: list[Any], entries: Sequence[Any], records: "LazyRecords", batch: int,
             last: dict[str, tuple[int, "LazyRecords", int]]) -> None:
        """Apply a batch's events to `state`, except what `OrgState.apply` ignores
        (FOLD_SKIPS) and the turn records: those are noted in `last` (agent → where
        its latest record is) and applied by `apply_last_turns`, since a turn's
        record only ever replaces the same agent's previous one."""
        by_code = self.by_code
        apply = state.apply
        entry = self._entry_decoder()
        ei = ri = 0
        for row in rows:
            lay = by_code.get(row[0]) or _unknown_event(row[0])
            if lay.record_idx is not None:
                last[row[1 + lay.index["agent"]]] = (batch, records, ri)  # type: ignore[index]
                ri += 1
                continue
            if lay.cls in FOLD_SKIPS:
                continue
            vals = row[1:]
            if lay.entry_idx is not None:
                e = entries[ei]
                vals[lay.entry_idx] = e if type(e) is OutboxEntry else entry(e)
                ei += 1
            apply(lay.build(vals))

    def apply_last_turns(self, state: OrgState, last: dict[str, tuple[int, "LazyRecords", int]]) -> None:
        """Apply each agent's latest turn record noted by `fold`."""
        apply = state.apply
        for agent, (_, records, ri) in last.items():
            rec = self.decode_nested(records.get()[ri])
            apply(TurnFinished(rec.tick, agent, rec))


class LazyRecords:
    """A batch's turn records (pickled), decoded on first use: when the fold needs one."""

    __slots__ = ("text", "value")

    def __init__(self, text: bytes) -> None:
        self.text = text
        self.value: Any = None

    def get(self) -> Any:
        if self.value is None:
            self.value = unpickle(self.text) if self.text else []
        return self.value
