"""The event codec: batches of events as compact rows, and back.

A batch's events are stored as rows, one per event, each in the field order of its
event type's layout. The `codec` table maps each layout code to an event type (or
TurnRecord / OutboxEntry / TokenUsage) and its field names, so a newer engine whose
events have other fields still reads old rows, by name. Turn records and outbox
entries are kept apart from their event rows (the batch body's second pickle, and the
`messages` table), so a fold builds only what it keeps.

What a batch body holds, by the version of lemming that wrote it:

* now (`Codec.encode`): ``(codes, rows)``, the layout code of each event and, apart,
  its fields as a tuple, the nested record or entry left out; then the turn records
  as ``(record code, usage code, rows)``, each row a TurnRecord's fields without the
  prompt (kept in `prompts`) and with the TokenUsage's fields in place of `usage`.
  The tuples are made by small functions written out per layout (`_compiled`), one
  pass over the batch.
* before: a list of ``[code, *fields]`` lists with None in the nested slot, then the
  records as ``[code, *fields]`` lists (usage as ``(code, *fields)``); pickled, or
  (older still) a line of JSON rows. Read alike.
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

    __slots__ = ("code", "name", "fields", "cls", "current", "tuple_idx", "getter", "index", "record_idx", "entry_idx",
                 "nested", "agent_pos", "plain")

    def __init__(self, code: int, name: str, fields: tuple[str, ...], cls: type | None) -> None:
        self.code = code
        self.name = name
        self.fields = fields
        self.cls = cls
        cur = tuple(f.name for f in dataclasses.fields(cls)) if cls is not None else ()  # type: ignore[arg-type]
        self.current = cls is not None and cur == fields
        self.tuple_idx = (
            tuple(i for i, f in enumerate(dataclasses.fields(cls)) if _is_tuple_field(f)) if self.current else ()  # type: ignore[arg-type]
        )
        self.getter = operator.attrgetter(*fields) if self.current and fields else None
        self.index = {n: i for i, n in enumerate(fields)}
        self.record_idx = self.index.get("record") if name == TurnFinished.type else None
        self.entry_idx = self.index.get("entry") if name == MessageCommitted.type else None
        #: where the record or entry was among the fields (a row of now leaves it out)
        self.nested = self.record_idx if self.record_idx is not None else self.entry_idx
        agent = self.index.get("agent")
        self.agent_pos = agent - 1 if agent is not None and self.nested is not None and self.nested < agent else agent
        #: a row of now is the class's arguments as they are
        self.plain = self.current and not self.tuple_idx and self.nested is None

    def build_row(self, row: Sequence[Any], nested: Any = None) -> Any:
        """The event of a row of now (`Codec.encode`), with its record or entry."""
        if self.plain:
            return self.cls(*row)  # type: ignore[misc]
        vals = list(row)
        if self.nested is not None:
            vals.insert(self.nested, nested)
        return self.build(vals)

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

#: The events most batches are made of, tried first by the writer's row maker.
_USUAL = ("turn_started", "turn_finished", "message_committed", "memory_changed", "credits_charged", "tick_started",
          "tick_completed")


def _compiled(name: str, src: str, env: dict[str, Any]) -> Callable[..., Any]:
    """The function `name` that `src` defines. The writer's row makers are written out
    as Python for the layouts of the day (a tuple of ``x.field`` reads per row): the
    interpreter reads a slot of a known class in a few steps, where `attrgetter` looks
    each name up through the type (three times the work, measured). They call
    ``list.append`` as a method, which the interpreter (3.11+) runs inline, rather than
    through a bound method held in a local (a call each time: 55 instructions more)."""
    ns = dict(env)
    exec(compile(src, f"<lemming.store.codec {name}>", "exec"), ns)  # noqa: S102 - names of our own dataclass fields
    return ns[name]


def _reads(var: str, names: Sequence[str]) -> str:
    """``(var.a, var.b, )``: the fields `names` of `var` as a tuple's source."""
    for n in names:
        if not n.isidentifier():
            raise StoreError(f"not a field name: {n!r}")
    return "(" + "".join(f"{var}.{n}, " for n in names) + ")"



def current_layouts() -> dict[str, tuple[str, ...]]:
    """Type name → field names, of every event type and nested record this engine writes."""
    out = {name: tuple(f.name for f in dataclasses.fields(cls)) for name, cls in EVENT_TYPES.items()}
    for name, cls in _NESTED.items():
        out[name] = tuple(f.name for f in dataclasses.fields(cls))
    return out


def _no_layout(ev: Any) -> None:
    name = getattr(type(ev), "type", type(ev).__name__)
    raise StoreError(f"event type {name!r} has no layout in this database; reopen it read-write")


def _unknown_event(code: Any) -> _Layout:
    raise UnknownLayout(f"unknown event code {code} in the database (corrupt?)")


class Codec:
    """Encodes batches of events into compact rows and back, by the layouts in `codec`."""

    def __init__(self, rows: Iterable[tuple[int, str, str]]) -> None:
        self.by_code: dict[int, _Layout] = {}
        self.by_name: dict[str, _Layout] = {}  # current layouts only
        self._record_enc: tuple | None = None
        self._entry_enc: tuple | None = None
        self._entry_dec: Callable[[Any], OutboxEntry] | None = None
        self._records_enc: tuple[int, int, Callable[[Any], list[tuple]]] | None = None
        self._entries_enc: Callable[[Any], list[tuple]] | None = None
        #: the batch's (codes, rows, records, entries) in one pass (`encode`)
        self._events_enc: Callable[[Sequence[Event]], Any] | None = None
        self._records_dec: dict[tuple[int, int], Callable[[Sequence[Any]], TurnRecord]] = {}
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

    def _record_rows(self) -> tuple[int, int, Callable[[Any], list[tuple]]]:
        """(record code, usage code, the rows of a list of records): each row a record's
        fields but the prompt, with the TokenUsage's fields in place of `usage`."""
        enc = self._records_enc
        if enc is None:
            lay, ul = self._nested("TurnRecord"), self._nested("TokenUsage")
            parts: list[str] = []
            for n in lay.fields:
                if n == "usage":
                    parts.append(_reads("u", ul.fields)[1:-1])
                elif n != "prompt":  # kept in `prompts`, compressed
                    parts.append(_reads("r", [n])[1:-1])
            read = "(" + "".join(parts) + ")"
            rows = _compiled("record_rows", f"""
def record_rows(recs):
    out = []
    for r in recs:
        u = r.usage
        out.append({read})
    return out
""", {})
            enc = self._records_enc = (lay.code, ul.code, rows)
        return enc

    def _entry_rows(self) -> Callable[[Any], list[tuple]]:
        """The rows of a list of outbox entries: each its layout code, then its fields."""
        enc = self._entries_enc
        if enc is None:
            lay = self._nested("OutboxEntry")
            read = _reads("e", lay.fields)[1:-1]
            enc = self._entries_enc = _compiled("entry_rows", f"""
def entry_rows(ents):
    return [({lay.code}, {read}) for e in ents]
""", {})
        return enc

    def _events_encoder(self) -> Callable[[Sequence[Event]], Any]:
        """A batch's (codes, rows, turn records, outbox entries) in one pass over its
        events, each row the event's fields but its record or entry (those go apart); an
        event of a kind this database has no layout for is a StoreError."""
        enc = self._events_enc
        if enc is None:
            env: dict[str, Any] = {"_no_layout": _no_layout}
            branches: list[str] = []
            kinds = [n for n in _USUAL if n in EVENT_TYPES] + [n for n in EVENT_TYPES if n not in _USUAL]
            for name in kinds:
                cls = EVENT_TYPES[name]
                lay = self.by_name.get(name)
                if lay is None:
                    continue
                i = len(branches)
                env[f"T{i}"] = cls
                names = [n for j, n in enumerate(lay.fields) if j != lay.nested]
                body = f"codes.append({lay.code}); rows.append({_reads('ev', names)})"
                if lay.record_idx is not None:
                    body += "; recs.append(ev.record)"
                elif lay.entry_idx is not None:
                    body += "; ents.append(ev.entry)"
                branches.append(f"        {'if' if not i else 'elif'} t is T{i}:\n            {body}\n")
            enc = self._events_enc = _compiled("encode_events", """
def encode_events(events):
    codes = []; rows = []; recs = []; ents = []
    for ev in events:
        t = type(ev)
""" + "".join(branches) + """        else:
            _no_layout(ev)
    return codes, rows, recs, ents
""" if branches else "def encode_events(events):\n    for ev in events:\n        _no_layout(ev)\n    return [], [], [], []\n", env)
        return enc

    def encode(self, events: Sequence[Event], turns: list[TurnRecord] | None = None,
               entries: list[OutboxEntry] | None = None) -> tuple[tuple[list[int], list[tuple]], list[Any], Any]:
        """(events, message entries, turn records) of one batch, as stored (see the
        module's doc): ``(codes, rows)``; the entries' rows; the records as ``(record
        code, usage code, rows)``, or None without any. The batch's TurnRecords are
        appended to `turns` and its OutboxEntries to `entries`, if given."""
        codes, rows, recs, ents = self._events_encoder()(events)
        records = None
        if recs:
            rcode, ucode, record_rows = self._record_rows()
            records = (rcode, ucode, record_rows(recs))
            if turns is not None:
                turns.extend(recs)
        entry_rows: list[Any] = []
        if ents:
            entry_rows = self._entry_rows()(ents)
            if entries is not None:
                entries.extend(ents)
        return (codes, rows), entry_rows, records

    # -- decoding (readers) -------------------------------------------------------------

    def entry_decoder(self) -> Callable[[Sequence[Any]], OutboxEntry]:
        """A fast decoder of OutboxEntry rows (the current layout by position; others by name)."""
        lay = self.by_name.get("OutboxEntry")
        code = lay.code if lay is not None else None
        slow = self.decode_nested
        make = OutboxEntry
        if lay is None or lay.fields != ("id", "tick", "agent", "kind", "payload", "tags", "created_at", "recipients", "meta"):
            return slow

        def decode(row: Sequence[Any]) -> OutboxEntry:
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

    def _records_decoder(self, rcode: int, ucode: int) -> Callable[[Sequence[Any]], TurnRecord]:
        known = self._records_dec.get((rcode, ucode))
        if known is not None:
            return known
        lay, ul = self.by_code.get(rcode), self.by_code.get(ucode)
        if lay is None or ul is None:
            raise UnknownLayout(f"unknown layout code {rcode if lay is None else ucode} in the database (corrupt?)")
        p = lay.index.get("prompt")
        u = lay.index.get("usage")
        k = len(ul.fields) if u is not None else 0
        if u is not None and p is not None and p < u:
            u -= 1  # where usage's fields start in a row (the prompt is left out)
        build, ubuild = lay.build, ul.build

        def dec(row: Sequence[Any]) -> TurnRecord:
            vals = list(row)
            if u is not None:
                vals[u:u + k] = (ubuild(vals[u:u + k]),)
            if p is not None:
                vals.insert(p, [])
            return build(vals)

        self._records_dec[(rcode, ucode)] = dec
        return dec

    def record_at(self, records: Any, i: int) -> TurnRecord:
        """The `i`-th turn record of a batch's decoded records (either form, see the
        module's doc), its prompt left empty."""
        if type(records) is tuple:
            rcode, ucode, rows = records
            return self._records_decoder(rcode, ucode)(rows[i])
        return self.decode_nested(records[i])

    def decode_nested(self, row: Sequence[Any]) -> Any:
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

    def decode(self, rows: Any, entries: Sequence[Any], records: Any, skip: frozenset[type] = frozenset()) -> list[Event]:
        """Events from a batch's rows (either form, see the module's doc), but those of
        the types in `skip`; `entries` are decoded entries (OutboxEntry) or rows,
        `records` the decoded turn records' pickle (or [] without any)."""
        out: list[Event] = []
        by_code = self.by_code
        entry = self._entry_decoder()
        record_at = self.record_at
        ei = ri = 0
        if type(rows) is tuple:
            codes, vals = rows
            append = out.append
            for code, row in zip(codes, vals):
                lay = by_code.get(code) or _unknown_event(code)
                if lay.plain:
                    if lay.cls not in skip:
                        append(lay.cls(*row))  # type: ignore[misc]
                    continue
                nested: Any = None
                if lay.record_idx is not None:
                    if lay.cls not in skip:
                        nested = record_at(records, ri)
                    ri += 1
                elif lay.entry_idx is not None:
                    e = entries[ei]
                    ei += 1
                    if lay.cls not in skip:
                        nested = e if type(e) is OutboxEntry else entry(e)
                if lay.cls not in skip:
                    append(lay.build_row(row, nested))
            return out
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
                vals[lay.record_idx] = record_at(records, ri)
                ri += 1
            elif lay.entry_idx is not None:
                e = entries[ei]
                vals[lay.entry_idx] = e if type(e) is OutboxEntry else entry(e)
                ei += 1
            out.append(lay.build(vals))
        return out

    def fold(self, state: OrgState, rows: Any, entries: Sequence[Any], records: "LazyRecords", batch: int,
             last: dict[str, tuple[int, "LazyRecords", int]]) -> None:
        """Apply a batch's events to `state`, except what `OrgState.apply_all` ignores
        (FOLD_SKIPS) and the turn records: those are noted in `last` (agent → where
        its latest record is) and applied by `apply_last_turns`, since a turn's
        record only ever replaces the same agent's previous one."""
        by_code = self.by_code
        batch_events: list[Event] = []
        apply = batch_events.append
        entry = self._entry_decoder()
        ei = ri = 0
        if type(rows) is tuple:
            codes, vals = rows
            for code, row in zip(codes, vals):
                lay = by_code.get(code) or _unknown_event(code)
                if lay.plain:
                    if lay.cls not in FOLD_SKIPS:
                        apply(lay.cls(*row))  # type: ignore[misc]
                elif lay.record_idx is not None:
                    last[row[lay.agent_pos]] = (batch, records, ri)  # type: ignore[index]
                    ri += 1
                elif lay.entry_idx is not None:
                    e = entries[ei]
                    ei += 1
                    if lay.cls not in FOLD_SKIPS:
                        apply(lay.build_row(row, e if type(e) is OutboxEntry else entry(e)))
                elif lay.cls not in FOLD_SKIPS:
                    apply(lay.build_row(row))
            state.apply_all(batch_events)
            return
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
        state.apply_all(batch_events)

    def apply_last_turns(self, state: OrgState, last: dict[str, tuple[int, "LazyRecords", int]]) -> None:
        """Apply each agent's latest turn record noted by `fold`."""
        finished = []
        for agent, (_, records, ri) in last.items():
            rec = self.record_at(records.get(), ri)
            finished.append(TurnFinished(rec.tick, agent, rec))
        state.apply_all(finished)


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
