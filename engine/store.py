"""The run store: every run recorded in one SQLite file, through aiosqlite.

What is in the file (schema version `SCHEMA_VERSION`, in ``PRAGMA user_version``)::

    runs       one row per run: id, organisation, seed, definitions' hash, parent and
               fork tick, status, last committed tick, spend, writer (host:pid:start)
    batches    one row per engine write = one transaction: a whole tick (TickStarted ...
               TickCompleted), the run's start or stop, or the commands applied at a
               tick boundary. `body` is zlib-compressed: a line of the events as compact
               JSON arrays (layouts in `codec`), then the turn records, pickled (see
               `_pack`), so a fold can leave alone the records a later turn
               supersedes. Append-only.
    messages   the outbox entries committed by a batch (the MessageCommitted events'
               payloads, pickled), kept apart so that the message board of any tick
               loads without decoding every other event
    prompts    per batch, the last message of each turn's prompt with the hash of the
               rest (the system message, kept once in `texts`), compressed together. A rebuilt prompt is checked against the turn record's
               sha256 `prompt_hash`.
    turns      one row per agent turn (its batch and line, status, cost):
               the timeline and the inspector's index. Keyed by tick first, so a
               tick's rows append.
    snapshots  the folded state (without the message board, which `messages` holds) at
               the end of a tick, every few ticks, so any tick opens fast (pickled)
    texts      content-addressed compressed texts: prompt heads, definitions
    codec      event type → field layout used in `batches.body` (a newer engine with
               other fields still reads old rows by name)

Durability: WAL mode with ``synchronous=NORMAL``. A committed transaction is in the
WAL file when COMMIT returns, so killing the process (SIGKILL included) loses
nothing committed; a power failure may lose the last few transactions, never
consistency. ``RunStore.open(..., durable=True)`` selects ``synchronous=FULL``.
The WAL is checkpointed as it grows (``wal_autocheckpoint``) and truncated now and
then (``journal_size_limit``, a TRUNCATE checkpoint with a short timeout), so a
reader that keeps the file open never makes it grow without bound.

Secrets: nothing here reads the environment. What is written is what the engine's
events hold, and those never carry API keys (models.json names the variable, not
the key; tests plant keys and grep the file).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import hashlib
import io
import json
import operator
import os
import pickle
import socket
import sqlite3
import time
import zlib
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable, Sequence

import aiosqlite

from lemming.engine import gcfreeze
from lemming.engine.events import (
    EVENT_TYPES,
    AgentSkipped,
    CommandRejected,
    DefinitionRejected,
    Event,
    MessageCommitted,
    RunStarted,
    RunStopped,
    TickAborted,
    TickCompleted,
    TickStarted,
    TokenUsage,
    TurnFinished,
    TurnRecord,
    TurnStarted,
    _plain,
)
from lemming.engine.messages import MessageBoard, OutboxEntry
from lemming.engine.org import Org
from lemming.engine.prompt import prompt_hash
from lemming.engine.state import OrgState

#: 1: records, entries, prompts and snapshots as JSON; 2: pickled (see `_pack`), no
#: prompt hash in `turns`. A schema-1 file is refused (no migration: record anew).
SCHEMA_VERSION = 2
#: "LeMm" — marks the file as a LeMMing run store (``PRAGMA application_id``).
APPLICATION_ID = 0x4C654D6D
BODY_LEVEL = 1  # zlib levels: 3 is 10% smaller and 25% slower on sim runs
PROMPT_LEVEL = 1
WAL_TRUNCATE_BYTES = 64 * 1024 * 1024
#: Snapshots are at least this many events per agent apart (see RunRecorder.write).
SNAPSHOT_EVENTS_PER_AGENT = 10
RUN_STATUSES = ("running", "completed", "stopped", "error", "interrupted")


class StoreError(Exception):
    """Something is wrong with the run database; the message is one line a person can act on."""


class _UnknownLayout(StoreError):
    """A row uses a layout code this reader has not loaded (a newer writer added it)."""


def default_db_path(org_root: Path | str) -> Path:
    """Where an organisation's runs are recorded by default: ORG/.lemming/runs.db."""
    return Path(org_root) / ".lemming" / "runs.db"


@dataclass(slots=True)
class RunInfo:
    """One run, as `lemming runs` lists it."""

    id: str
    org_path: str
    seed: int
    status: str  # running, completed, stopped, error, interrupted
    ticks: int  # the last committed tick
    target_ticks: int | None
    spend: float
    parent_run: str | None
    fork_tick: int | None
    started_at: float
    ended_at: float | None
    definitions_hash: str | None
    reason: str | None = None  # why it stopped, as the engine said
    events: int = 0
    updated_at: float | None = None
    writer: str | None = None  # host:pid:start of the process recording it

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- the schema ------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    rid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    org_path TEXT NOT NULL,
    seed INTEGER NOT NULL,
    definitions_hash TEXT,
    target_ticks INTEGER,
    parent_rid INTEGER REFERENCES runs(rid),
    fork_tick INTEGER,
    fork_batch INTEGER,
    base_tick INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    reason TEXT,
    ticks INTEGER NOT NULL DEFAULT 0,
    spend REAL NOT NULL DEFAULT 0,
    events INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL,
    ended_at REAL,
    updated_at REAL,
    writer TEXT
);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    rid INTEGER NOT NULL,
    tick INTEGER NOT NULL,
    kind TEXT NOT NULL,
    n INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_by_run ON batches(rid, tick, id);
CREATE TABLE IF NOT EXISTS messages (
    batch INTEGER PRIMARY KEY,
    rid INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_run ON messages(rid, batch);
CREATE TABLE IF NOT EXISTS prompts (
    batch INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS turns (
    rid INTEGER NOT NULL,
    tick INTEGER NOT NULL,
    agent TEXT NOT NULL,
    batch INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    status TEXT NOT NULL,
    cost REAL NOT NULL,
    PRIMARY KEY (rid, tick, agent)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    rid INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    tick INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (rid, batch)
);
CREATE TABLE IF NOT EXISTS texts (hash TEXT PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS codec (
    code INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    fields TEXT NOT NULL,
    UNIQUE (name, fields)
);
"""

#: version → function(conn) that upgrades a database from `version` to `version + 1`.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {}


# --- helpers ---------------------------------------------------------------------------


def _dumps(v: Any) -> bytes:
    # surrogatepass: a model's text may hold lone surrogates; they survive the round trip.
    return _ENCODER.encode(v).encode("utf-8", "surrogatepass")


def _loads(b: bytes) -> Any:
    return json.loads(b.decode("utf-8", "surrogatepass"))


# --- the binary codec: what the hot columns hold -----------------------------------------
#
# Turn records, outbox entries, prompt lines and snapshots are pickled (protocol 5,
# no memo) rather than JSON: encoding is 4-8x cheaper and decoding 2x, on the values the
# engine's events hold (str, int, float, bool, None, lists, tuples, dicts, sets).
# Reading never imports or calls anything: the unpickler refuses every global but a
# few builtin containers and scalars (what the writer turns odd values into), so a
# hostile file can at worst fail to decode. Compression's checksum catches damage first.

_SAFE_GLOBALS = {
    ("builtins", n): getattr(__import__("builtins"), n)
    for n in ("str", "int", "float", "list", "tuple", "dict", "set", "frozenset")
}

_SAFE_TYPES = frozenset(_SAFE_GLOBALS.values())


class _Pickler(pickle.Pickler):
    """Writes only plain values: odd ones become what JSON made of them (a dataclass its
    fields, a Path or a str subclass its text); anything else is an error, as it was."""

    def reducer_override(self, obj: Any) -> Any:
        if obj.__class__ is type and obj in _SAFE_TYPES:
            return NotImplemented  # the builtins named in the reductions below: saved by name
        if isinstance(obj, str):
            return str, (str.__getitem__(obj, slice(None)),)
        if isinstance(obj, int):
            return int, (int.__index__(obj),)
        if isinstance(obj, float):
            return float, (float.__float__(obj),)
        if isinstance(obj, dict):
            return dict, (dict(obj),)
        if isinstance(obj, list):
            return list, (list(obj),)
        if isinstance(obj, tuple):
            return tuple, (tuple(obj),)
        if isinstance(obj, (set, frozenset)):
            return (set if isinstance(obj, set) else frozenset), (set(obj),)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dict, (_plain(obj),)
        if isinstance(obj, Path):
            return str, (str(obj),)
        raise TypeError(f"{type(obj).__name__} cannot be recorded")


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        got = _SAFE_GLOBALS.get((module, name))
        if got is None:
            raise pickle.UnpicklingError(f"{module}.{name} is not a recorded value")
        return got


def _pack(v: Any) -> bytes:
    f = io.BytesIO()
    p = _Pickler(f, 5)
    p.fast = True  # no memo: nothing the engine records is shared or cyclic
    p.dump(v)
    return f.getvalue()


def _unpickle(b: bytes) -> Any:
    return _Unpickler(io.BytesIO(b)).load()


def _json_default(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _plain(v)
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"{type(v).__name__} is not JSON")


# One encoder for everything: json.dumps() with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default)


@contextlib.contextmanager
def _bulk() -> Any:
    """Pause the cyclic garbage collector while decoding in bulk: with a long run's
    million messages alive, each full collection walks them all, and allocating
    millions of objects triggers one every few hundred thousand. (Only around
    synchronous code: nothing else runs meanwhile.)"""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


#: Loading at least this many messages at once freezes the garbage collector's view of
#: what is alive (see `_freeze`).
FREEZE_AFTER_MESSAGES = 50_000


def _freeze() -> None:
    """Move every object alive now out of the cyclic collector's sight (counted: see
    engine/gcfreeze.py). A long run's message log is a million long-lived objects; each
    full collection would walk them all (a second or more), and they come often while a
    reader allocates. The last holder to let go (a store closing) unfreezes."""
    gcfreeze.hold()


def _unfreeze() -> None:
    gcfreeze.release()


def _text_hash(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:32]


def _proc_start(pid: int) -> str:
    """The process's start time (clock ticks since boot), to tell a live writer from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2 :].split()
        return fields[19].decode()
    except (OSError, ValueError, IndexError):
        return "?"


def _this_writer() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_proc_start(os.getpid())}"


def writer_alive(writer: str | None) -> bool | None:
    """True/False when we can tell (same host), None when we cannot."""
    if not writer:
        return False
    try:
        host, pid_s, start = writer.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        state = data[data.rindex(b")") + 2 :].split()[0]
        if state in (b"Z", b"X"):
            return False
    except (OSError, ValueError):
        return True
    return start == "?" or _proc_start(pid) == start


def _status_of(reason: str) -> str:
    if reason == "completed":
        return "completed"
    if reason == "stopped":
        return "stopped"
    return "error"


def _sqlite_error(path: Path, e: BaseException) -> StoreError:
    msg = str(e)
    low = msg.lower()
    if "locked" in low or "busy" in low:
        return StoreError(f"{path} is locked by another process; try again when it is done")
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return StoreError(f"{path} is corrupt or not a LeMMing run database ({msg}); move it away or choose another --db")
    if "readonly" in low or "read-only" in low:
        return StoreError(f"{path} is read-only here ({msg})")
    if "unable to open" in low:
        return StoreError(f"cannot open {path} ({msg}); check the folder exists and is writable")
    if "disk" in low and "full" in low:
        return StoreError(f"{path}: the disk is full ({msg})")
    return StoreError(f"{path}: database error: {msg}")


# --- the codec: events ↔ compact JSON arrays --------------------------------------------


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

#: Events `OrgState.apply` leaves the state alone for: a fold need not build them.
#: (tests/test_store.py checks this against `apply` itself.)
FOLD_SKIPS = frozenset({TickStarted, TurnStarted, AgentSkipped, CommandRejected, DefinitionRejected, TickAborted})


def _current_layouts() -> dict[str, tuple[str, ...]]:
    out = {name: tuple(f.name for f in dataclasses.fields(cls)) for name, cls in EVENT_TYPES.items()}
    for name, cls in _NESTED.items():
        out[name] = tuple(f.name for f in dataclasses.fields(cls))
    return out


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
                append((got[0], *got[1](ev)))
                continue
            lay = self.by_name.get(ev.type)
            if lay is None:
                raise StoreError(f"event type {ev.type!r} has no layout in this database; reopen it read-write")
            if lay.record_idx is None and lay.entry_idx is None:
                plain[ev.__class__] = (lay.code, lay.getter)
                append((lay.code, *lay.getter(ev)))  # type: ignore[misc]
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
            raise _UnknownLayout(f"unknown layout code {row[0]} in the database (corrupt?)")
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
            lay = by_code.get(row[0])
            if lay is None:
                raise _UnknownLayout(f"unknown event code {row[0]} in the database (corrupt?)")
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

    def fold(self, state: OrgState, rows: list[Any], entries: Sequence[Any], records: "_Lazy", batch: int,
             last: dict[str, tuple[int, "_Lazy", int]]) -> None:
        """Apply a batch's events to `state`, except what `OrgState.apply` ignores
        (FOLD_SKIPS) and the turn records: those are noted in `last` (agent → where
        its latest record is) and applied by `apply_last_turns`, since a turn's
        record only ever replaces the same agent's previous one."""
        by_code = self.by_code
        apply = state.apply
        entry = self._entry_decoder()
        ei = ri = 0
        for row in rows:
            lay = by_code.get(row[0])
            if lay is None:
                raise _UnknownLayout(f"unknown event code {row[0]} in the database (corrupt?)")
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

    def apply_last_turns(self, state: OrgState, last: dict[str, tuple[int, "_Lazy", int]]) -> None:
        apply = state.apply
        for agent, (_, records, ri) in last.items():
            rec = self.decode_nested(records.get()[ri])
            apply(TurnFinished(rec.tick, agent, rec))


class _Lazy:
    """A JSON text parsed on first use (a batch's records, when the fold needs one)."""

    __slots__ = ("text", "value")

    def __init__(self, text: bytes) -> None:
        self.text = text
        self.value: Any = None

    def get(self) -> Any:
        if self.value is None:
            self.value = _unpickle(self.text) if self.text else []
        return self.value


# --- prompts -------------------------------------------------------------------------
#
# A turn's prompt is a list of messages. Everything but the last message (the system
# message: the same turn after turn) is stored once in `texts`, by hash; the last
# one goes into the batch's `prompts` blob as the line `[head hash, message]`, all of
# a tick's turns compressed together (they share the structure and the messages
# the agents read).


def _join_prompt(item: Any, head: Callable[[str], bytes]) -> list[dict[str, Any]]:
    """A prompt from its stored item: null (no prompt) or [head hash or null, last message]."""
    if item is None:
        return []
    hh, last = item
    return [*(_loads(head(hh)) if hh else []), last]


# --- the writer ---------------------------------------------------------------------

_RUN_MARKS = frozenset({RunStarted, RunStopped})


class RunRecorder:
    """What the engine writes into: `await write(events)` is one transaction.

    Snapshots: given the engine's live state (`RunStore.recorder(run_id, state=
    engine.state)`), the recorder snapshots it at the next write after a tick (the
    engine applies a batch right after recording it, so by then the state is exactly
    the end of that tick). Without it, the recorder folds its own copy of the state
    with the same `OrgState.apply`.
    """

    def __init__(self, store: "RunStore", run_id: str, live: OrgState | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self._rid: int | None = None
        self._live = live
        self._shadow: OrgState | None = None
        self._heads: dict[tuple, str] = {}  # prompt head (as tuples) → its text hash
        self._since_snapshot_events = 0
        self._since_snapshot_ticks = 0
        self._due: tuple[int, int] | None = None  # (batch, tick) to snapshot from the live state
        self._batches = 0
        self._lock = asyncio.Lock()

    async def _init(self, first: Event) -> None:
        st = self.store
        row = await st._one("SELECT rid FROM runs WHERE id=?", (self.run_id,))
        if row is None:
            if type(first) is not RunStarted:
                raise StoreError(f"no run {self.run_id!r} in {st.path}; create_run() first")
            # An engine recording without create_run(): the run's start says what it is.
            await st.create_run(
                run_id=self.run_id, org_root=first.org_path, seed=first.seed,  # type: ignore[attr-defined]
                definitions_hash=first.definitions_hash, target_ticks=None,  # type: ignore[attr-defined]
            )
            row = await st._one("SELECT rid FROM runs WHERE id=?", (self.run_id,))
        self._rid = row[0]  # type: ignore[index]
        if self._live is None:
            self._shadow = detached(await st.state_at(self.run_id, prompts=False))

    async def write(self, events: Sequence[Event]) -> None:
        if not events:
            return
        async with self._lock:
            st = self.store
            st._check_writable()
            if self._rid is None:
                await self._init(events[0])
            if self._due is not None:
                batch, tick = self._due
                self._due = None
                live = self._live
                if live is not None and live.tick == tick:
                    await self._snapshot(live, batch)
            plan = self._plan(events)
            await st._call(_write_tx, st.path, plan)
            st._known_texts.update(plan.texts)
            if self._shadow is not None:
                apply = self._shadow.apply
                for ev in events:
                    apply(ev)
            if plan.kind == "tick":
                self._since_snapshot_ticks += 1
                self._since_snapshot_events += len(events)
                folded = self._live if self._live is not None else self._shadow
                # A snapshot costs about as much as folding a few events per agent: with
                # many agents, space them so that they stay a small share of the writes.
                spacing = max(st.snapshot_events, SNAPSHOT_EVENTS_PER_AGENT * len(folded.credits) if folded else 0)
                if self._since_snapshot_events >= spacing or self._since_snapshot_ticks >= st.snapshot_every:
                    if self._shadow is not None:
                        await self._snapshot(self._shadow, plan.batch_id)
                    else:
                        self._due = (plan.batch_id, plan.tick)
            self._batches += 1
            if self._batches % 16 == 0:
                await st._call(_maybe_truncate_wal, st.path)

    def _plan(self, events: Sequence[Event]) -> "_WritePlan":
        st = self.store
        codec = st._codec
        assert codec is not None
        recs: list[TurnRecord] = []
        rows, entries, records = codec.encode(events, recs)
        last = events[-1]
        first = events[0]
        kind = "boundary"
        if type(last) is TickCompleted:
            kind = "tick"
        elif type(first) is RunStarted:
            kind = "start"
        elif type(last) is RunStopped:
            kind = "stop"
        tick = last.tick if kind == "tick" else max(getattr(e, "tick", 0) for e in events)  # type: ignore[attr-defined]
        # The event rows as JSON (one line: no newline inside), then the records, pickled.
        body = zlib.compress(_dumps(rows) + b"\n" + (_pack(records) if records else b""), BODY_LEVEL)
        msgs = zlib.compress(_pack(entries), BODY_LEVEL) if entries else None
        turns: list[tuple] = []
        texts: dict[str, bytes] = {}
        heads = self._heads
        pitems: list[Any] = []
        for rec in recs:
            prompt = rec.prompt
            hh = None
            if len(prompt) > 1:
                # The head (the system message) rarely changes: look it up by content.
                try:
                    key: tuple | None = (
                        (tuple(prompt[0].items()),) if len(prompt) == 2 else tuple(tuple(m.items()) for m in prompt[:-1])
                    )
                    hh = heads.get(key)  # type: ignore[arg-type]
                except (TypeError, AttributeError):
                    key = None
                if hh is None:
                    head = _dumps(prompt[:-1])
                    hh = _text_hash(head)
                    if key is not None:
                        if len(heads) > 4096:
                            heads.clear()
                        heads[key] = hh
                    if hh not in st._known_texts:
                        texts[hh] = zlib.compress(head, PROMPT_LEVEL)
            pitems.append([hh, prompt[-1]] if prompt else None)
            turns.append((rec.agent, rec.tick, len(pitems), rec.status, rec.cost))
        prompts = zlib.compress(_pack(pitems), PROMPT_LEVEL) if pitems else None
        run_update: dict[str, Any] = {"events": len(events), "updated_at": time.time()}
        # A tick's batch says what the run row needs in its last event; others (and a tick
        # batch holding a start or a stop, should there be one) are looked through.
        marks = (last,) if kind == "tick" and not _RUN_MARKS.intersection(map(type, events)) else events
        for ev in marks:
            t = type(ev)
            if t is TickCompleted:
                run_update["ticks"] = ev.tick  # type: ignore[attr-defined]
                run_update["spend"] = ev.total_spend  # type: ignore[attr-defined]
            elif t is RunStarted:
                run_update["status"] = "running"
                run_update["writer"] = _this_writer()
                run_update["ended_at"] = None
                run_update["reason"] = None
            elif t is RunStopped:
                run_update["status"] = _status_of(ev.reason)  # type: ignore[attr-defined]
                run_update["reason"] = ev.reason  # type: ignore[attr-defined]
                run_update["ended_at"] = ev.at or time.time()  # type: ignore[attr-defined]
                run_update["writer"] = None
        return _WritePlan(self._rid, kind, tick, len(events), body, msgs, prompts, turns, texts, run_update)  # type: ignore[arg-type]

    async def _snapshot(self, state: OrgState, batch_id: int) -> None:
        st = self.store
        assert self._rid is not None
        body, defs_hash, defs_blob = _snapshot_body(state, st._codec)  # type: ignore[arg-type]
        try:
            await st._call(_write_snapshot, st.path, self._rid, batch_id, state.tick, body, defs_hash, defs_blob)
        except StoreError:
            return  # a snapshot is only an accelerator
        st._known_texts.add(defs_hash)
        self._since_snapshot_events = 0
        self._since_snapshot_ticks = 0


@dataclass(slots=True)
class _WritePlan:
    rid: int
    kind: str
    tick: int
    n: int
    body: bytes
    msgs: bytes | None
    prompts: bytes | None
    turns: list[tuple]
    texts: dict[str, bytes]
    run_update: dict[str, Any]
    batch_id: int = 0


# The transaction itself, run in the database thread. Split into steps so a test can
# make one of them fail and check that nothing of the batch remains.


def _insert_batch(conn: sqlite3.Connection, p: _WritePlan) -> None:
    cur = conn.execute(
        "INSERT INTO batches (rid, tick, kind, n, body) VALUES (?,?,?,?,?)", (p.rid, p.tick, p.kind, p.n, p.body)
    )
    p.batch_id = cur.lastrowid  # type: ignore[assignment]
    if p.msgs is not None:
        conn.execute("INSERT INTO messages (batch, rid, body) VALUES (?,?,?)", (p.batch_id, p.rid, p.msgs))


def _insert_turns(conn: sqlite3.Connection, p: _WritePlan) -> None:
    if p.texts:
        conn.executemany("INSERT OR IGNORE INTO texts (hash, body) VALUES (?,?)", p.texts.items())
    if p.turns:
        b = p.batch_id
        rid = p.rid
        conn.execute("INSERT INTO prompts (batch, body) VALUES (?,?)", (b, p.prompts))
        conn.executemany(
            "INSERT INTO turns (rid, agent, tick, batch, idx, status, cost) VALUES (?,?,?,?,?,?,?)",
            [(rid, a, t, b, i, s, c) for (a, t, i, s, c) in p.turns],
        )


def _update_run(conn: sqlite3.Connection, p: _WritePlan) -> None:
    u = p.run_update
    sets = ["events = events + ?", "updated_at = ?"]
    vals: list[Any] = [u["events"], u["updated_at"]]
    for k in ("ticks", "spend", "status", "writer", "ended_at", "reason"):
        if k in u:
            sets.append(f"{k} = ?")
            vals.append(u[k])
    vals.append(p.rid)
    conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE rid = ?", vals)


def _write_tx(conn: sqlite3.Connection, path: Path, p: _WritePlan) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            _insert_batch(conn, p)
            _insert_turns(conn, p)
            _update_run(conn, p)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as e:
        raise _sqlite_error(path, e) from None


class _DefinitionsOnce:
    """Stands in for an Org while `OrgState.to_dict()` runs for a snapshot: its
    definitions dumped once per Org object (dumping a thousand agents' resumes for every
    snapshot cost more than the rest of the snapshot). A hot reload makes a new Org."""

    __slots__ = ("org", "root", "defs", "blob", "hash", "packed")

    def __init__(self, org: Org) -> None:
        self.org = org  # held: the cache is keyed by its id
        self.root = org.root
        self.defs = org.definitions()
        self.blob = _dumps(self.defs)
        self.hash = _text_hash(self.blob)
        self.packed = zlib.compress(self.blob, PROMPT_LEVEL)

    def definitions(self) -> dict[str, Any]:
        return self.defs


_DEFINITIONS: dict[int, _DefinitionsOnce] = {}


def _definitions_of(org: Org) -> _DefinitionsOnce:
    got = _DEFINITIONS.get(id(org))
    if got is None or got.org is not org:
        if len(_DEFINITIONS) > 8:
            _DEFINITIONS.clear()
        got = _DEFINITIONS[id(org)] = _DefinitionsOnce(org)
    return got


def _snapshot_body(state: OrgState, codec: Codec) -> tuple[bytes, str, bytes]:
    """`OrgState.to_dict()` without the message board (the `messages` table holds it), the
    definitions (in `texts`) and the last turns' prompts (in `prompts`); the last turns'
    records in the codec's compact layout."""
    board, last_turn, org = state.board, state.last_turn, state.org
    once = _definitions_of(org)
    state.board, state.last_turn, state.org = MessageBoard(), {}, once  # type: ignore[assignment]
    try:
        d = state.to_dict()
    finally:
        state.board, state.last_turn, state.org = board, last_turn, org
    d.pop("definitions")
    defs_hash = once.hash
    d["definitions"] = None
    d["messages"] = []
    records = {agent: codec.encode_record(rec) for agent, rec in last_turn.items()}
    body = zlib.compress(
        _pack({"state": d, "definitions": defs_hash, "messages": board.count, "last_turn": records}), BODY_LEVEL
    )
    return body, defs_hash, once.packed


def _write_snapshot(conn, path, rid, batch, tick, body, defs_hash, defs_blob) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("INSERT OR IGNORE INTO texts (hash, body) VALUES (?,?)", (defs_hash, defs_blob))
            conn.execute(
                "INSERT OR REPLACE INTO snapshots (rid, batch, tick, body) VALUES (?,?,?,?)", (rid, batch, tick, body)
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as e:
        raise _sqlite_error(path, e) from None


def _maybe_truncate_wal(conn: sqlite3.Connection, path: Path) -> None:
    """Reset the WAL now and then: with a reader always present, PASSIVE checkpoints
    copy pages back but never let the WAL start over, so it would only grow."""
    try:
        size = os.path.getsize(str(path) + "-wal")
    except OSError:
        return
    if size < WAL_TRUNCATE_BYTES:
        return
    try:
        conn.execute("PRAGMA busy_timeout = 200")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.Error:
        pass
    finally:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS.get(id(conn), 5000)}")


#: connection → its busy timeout in ms (restored after a short-timeout checkpoint)
_BUSY_MS: dict[int, int] = {}


# --- reading --------------------------------------------------------------------------


class _MessageLog:
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

    def extend(self, rows: list[tuple[int, list[Any]]], codec: "Codec") -> int:
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

    def __init__(self, log: _MessageLog, counts: dict[str, int]) -> None:  # no super(): views below
        self._log = log
        self._n = counts
        self._extra: dict[str, list[OutboxEntry]] = {}
        self._extra_ticks: dict[str, list[int]] = {}
        self.count = sum(counts.values())
        self._plain: tuple[dict[str, list[OutboxEntry]], dict[str, list[int]]] | None = None

    def _views(self) -> tuple[dict[str, list[OutboxEntry]], dict[str, list[int]]]:
        if self._plain is None:
            boxes: dict[str, list[OutboxEntry]] = {}
            ticks: dict[str, list[int]] = {}
            for a in list(self._n) + [a for a in self._extra if a not in self._n]:
                n = self._n.get(a, 0)
                boxes[a] = self._log.entries[a][:n] + self._extra.get(a, []) if n else list(self._extra.get(a, []))
                ticks[a] = (self._log.ticks[a][:n].tolist() if n else []) + self._extra_ticks.get(a, [])
            self._plain = (boxes, ticks)
        return self._plain

    @property  # type: ignore[override]
    def outboxes(self) -> dict[str, list[OutboxEntry]]:
        return self._views()[0]

    @property  # type: ignore[override]
    def _ticks(self) -> dict[str, list[int]]:
        return self._views()[1]

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
        b = MessageBoard()
        boxes, ticks = self._views()
        b.outboxes = {a: list(v) for a, v in boxes.items()}
        b._ticks = {a: list(v) for a, v in ticks.items()}
        b.count = self.count
        return b


class CountedBoard(MessageBoard):
    """The board of a state rebuilt without its messages (`state_at(..., messages=False)`):
    it counts the entries committed up to the state and keeps those added to it after.
    Reading it gives what was added only; `detached()` refuses it (an engine needs them all)."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count


def detached(state: OrgState) -> OrgState:
    """`state` with a plain MessageBoard (for a state an engine will run on)."""
    if isinstance(state.board, SharedBoard):
        state.board = state.board.detach()
    elif isinstance(state.board, CountedBoard):
        raise StoreError("this state was rebuilt without its messages (messages=False); an engine cannot run on it")
    return state


@dataclass(slots=True)
class _RunRow:
    rid: int
    id: str
    org_path: str
    seed: int
    parent_rid: int | None
    fork_tick: int | None
    fork_batch: int | None
    base_tick: int


class RunStore:
    """The run database. Open with `await RunStore.open(path)`; close with `await close()`."""

    def __init__(self, path: Path, db: aiosqlite.Connection, readonly: bool, snapshot_every: int, snapshot_events: int) -> None:
        self.path = path
        self._db = db
        self.readonly = readonly
        self.snapshot_every = max(1, snapshot_every)
        self.snapshot_events = max(1, snapshot_events)
        self._codec: Codec | None = None
        self._known_texts: set[str] = set()
        self._logs: dict[int, _MessageLog] = {}
        self._orgs: dict[tuple[str, str], Org] = {}
        self._rows: dict[str, _RunRow] = {}
        self._closed = False
        self.freeze_gc = True  # see _freeze(); set False to leave the collector alone
        self._log_lock = asyncio.Lock()
        self._froze = 0

    # -- opening ------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path | str,
        *,
        readonly: bool = False,
        snapshot_every: int = 100,
        snapshot_events: int = 3000,
        durable: bool = False,
        timeout: float = 5.0,
    ) -> "RunStore":
        """Open (read-write: create if missing, migrate if older) the database at `path`.

        A snapshot is written after a tick when `snapshot_every` ticks or
        `snapshot_events` events have been written since the last one. `timeout` is
        how long to wait for another process's lock before giving up (StoreError).
        """
        path = Path(path)
        if readonly:
            if not path.exists():
                raise StoreError(f"no run database at {path}")
            target = f"file:{path.resolve()}?mode=ro"
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create {path.parent}: {e.strerror or e}") from None
            target = str(path)
        try:
            db = await aiosqlite.connect(target, uri=readonly, isolation_level=None, timeout=timeout)
        except sqlite3.Error as e:
            raise _sqlite_error(path, e) from None
        if not hasattr(db, "_execute") or not hasattr(db, "_conn"):  # pragma: no cover
            await db.close()
            raise StoreError("this aiosqlite version lacks the thread hook the store relies on (aiosqlite 0.17–0.22 work)")
        store = cls(path, db, readonly, snapshot_every, snapshot_events)
        try:
            await store._call(_prepare, path, readonly, durable, timeout)
            rows = await store._all("SELECT code, name, fields FROM codec")
            store._codec = Codec(rows)
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        if self._closed:
            return
        try:
            if not self.readonly:
                await self._call(_close_checkpoint, self.path)
        except StoreError:
            pass
        finally:
            self._closed = True
            self._logs.clear()
            for _ in range(self._froze):
                _unfreeze()
            self._froze = 0
            await self._db.close()

    def freeze_gc_now(self) -> None:
        """Move every object alive now out of the cyclic collector's sight (`gc.freeze()`)
        until this store closes: a reader that has just built a long-lived working set
        (replay, once its first tick shows) stops paying for it in every full collection."""
        if self.freeze_gc and not self._closed:
            _freeze()
            self._froze += 1

    async def __aenter__(self) -> "RunStore":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- plumbing -------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(sqlite3_connection, *args)` in aiosqlite's database thread (one hop for a
        whole transaction or a whole read)."""
        if self._closed:
            raise StoreError(f"{self.path}: the store is closed")
        db = self._db

        def run() -> Any:
            try:
                return fn(db._conn, *args)
            except StoreError:
                raise
            except sqlite3.Error as e:
                raise _sqlite_error(self.path, e) from None
            except zlib.error as e:
                raise StoreError(f"{self.path} is corrupt: a compressed record does not decompress ({e})") from None
            except (pickle.UnpicklingError, EOFError) as e:
                raise StoreError(f"{self.path} is corrupt: a stored record does not decode ({e})") from None

        try:
            return await db._execute(run)
        except ValueError as e:  # aiosqlite: "Connection closed"
            raise StoreError(f"{self.path}: {e}") from None

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return await self._call(lambda c: c.execute(sql, params).fetchall())

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        return await self._call(lambda c: c.execute(sql, params).fetchone())

    def _unpack(self, blob: bytes) -> Any:
        """A compressed pickled column (messages, snapshots)."""
        try:
            return _unpickle(zlib.decompress(blob))
        except (zlib.error, ValueError, pickle.UnpicklingError, EOFError) as e:
            raise StoreError(f"{self.path} is corrupt: a stored record does not decode ({e})") from None

    def _unpack_json(self, blob: bytes) -> Any:
        """A compressed JSON text (`texts`: definitions, prompt heads)."""
        try:
            return _loads(zlib.decompress(blob))
        except (zlib.error, ValueError) as e:
            raise StoreError(f"{self.path} is corrupt: a stored text does not decode ({e})") from None

    def _lines(self, blob: bytes) -> tuple[bytes, bytes, bytes]:
        """(events, separator, records) of a batch body."""
        try:
            return zlib.decompress(blob).partition(b"\n")
        except zlib.error as e:
            raise StoreError(f"{self.path} is corrupt: a stored record does not decode ({e})") from None

    def _decode_batch(self, body: bytes, msgs: bytes | list | None, skip: frozenset[type] = frozenset()) -> list[Event]:
        """A batch's events, whole (turn records included, their prompts left empty), but
        those of the types in `skip`."""
        codec = self._codec
        assert codec is not None
        events, _, records = self._lines(body)
        entries = msgs if isinstance(msgs, list) else (self._unpack(msgs) if msgs else [])
        try:
            return codec.decode(_loads(events), entries, _unpickle(records) if records else [], skip)
        except StoreError:
            raise
        except (TypeError, IndexError, KeyError, ValueError, pickle.UnpicklingError, EOFError) as e:
            raise StoreError(f"{self.path} is corrupt: a stored batch does not decode ({type(e).__name__}: {e})") from None

    async def _reload_codec(self) -> None:
        self._codec = Codec(await self._all("SELECT code, name, fields FROM codec"))

    async def _retrying(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` again once after reloading the layouts, if a newer writer added some."""
        try:
            return await fn()
        except _UnknownLayout:
            await self._reload_codec()
            return await fn()

    def _check_writable(self) -> None:
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only")

    # -- runs ---------------------------------------------------------------------------

    async def create_run(
        self,
        *,
        run_id: str,
        org_root: Path | str,
        seed: int,
        definitions_hash: str | None,
        target_ticks: int | None,
        parent_run: str | None = None,
        fork_tick: int | None = None,
        base_state: OrgState | None = None,
    ) -> None:
        """Add a run's row. A fork (`parent_run` and `fork_tick`) also records the parent's
        state at the end of `fork_tick` as the new run's starting snapshot."""
        self._check_writable()
        org_path = str(Path(org_root).resolve())
        parent_rid = fork_batch = None
        base_tick = 0
        snap: tuple | None = None
        if parent_run is not None:
            if fork_tick is None:
                raise StoreError("a fork needs the tick it starts from")
            parent = await self._run_row(parent_run)
            parent_rid = parent.rid
            upto, _ = await self._resolve_upto(parent, fork_tick)
            fork_batch = upto
            base_tick = fork_tick
            if base_state is None:
                base_state = await self.state_at(parent.id, fork_tick)
            body, dh, dblob = _snapshot_body(base_state, self._codec)  # type: ignore[arg-type]
            snap = (body, dh, dblob)

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone():
                    raise StoreError(f"a run {run_id!r} already exists in {self.path}")
                cur = conn.execute(
                    "INSERT INTO runs (id, org_path, seed, definitions_hash, target_ticks, parent_rid, fork_tick,"
                    " fork_batch, base_tick, status, ticks, started_at, updated_at, writer)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (run_id, org_path, seed, definitions_hash, target_ticks, parent_rid, fork_tick, fork_batch,
                     base_tick, "running", base_tick, time.time(), time.time(), _this_writer()),
                )
                if snap is not None:
                    conn.execute("INSERT OR IGNORE INTO texts (hash, body) VALUES (?,?)", (snap[1], snap[2]))
                    conn.execute(
                        "INSERT INTO snapshots (rid, batch, tick, body) VALUES (?,?,?,?)",
                        (cur.lastrowid, fork_batch, fork_tick, snap[0]),
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        await self._call(tx)

    def recorder(self, run_id: str, *, state: OrgState | None = None) -> RunRecorder:
        """The engine's recorder for `run_id` (created with `create_run`, or being resumed).

        Pass the engine's live state (`state=engine.state`) and snapshots are taken from
        it; without it the recorder folds its own copy (about 10% more write time).
        """
        self._check_writable()
        return RunRecorder(self, run_id, state)

    async def set_target(self, run_id: str, target_ticks: int | None) -> None:
        """Change the tick a run is meant to reach (`resume --ticks N`)."""
        self._check_writable()
        row = await self._run_row(run_id)
        await self._call(lambda c: c.execute("UPDATE runs SET target_ticks=? WHERE rid=?", (target_ticks, row.rid)))

    _RUN_COLS = (
        "r.id, r.org_path, r.seed, r.status, r.ticks, r.target_ticks, r.spend, p.id, r.fork_tick, r.started_at,"
        " r.ended_at, r.definitions_hash, r.reason, r.events, r.updated_at, r.writer"
    )

    @staticmethod
    def _info(row: tuple) -> RunInfo:
        info = RunInfo(*row)
        if info.status == "running" and writer_alive(info.writer) is False:
            info.status = "interrupted"
        return info

    async def list_runs(self) -> list[RunInfo]:
        rows = await self._all(
            f"SELECT {self._RUN_COLS} FROM runs r LEFT JOIN runs p ON p.rid = r.parent_rid ORDER BY r.rid"
        )
        return [self._info(r) for r in rows]

    async def get_run(self, run_id: str) -> RunInfo:
        """A run by id or by a unique prefix of its id."""
        row = await self._run_row(run_id)
        got = await self._one(
            f"SELECT {self._RUN_COLS} FROM runs r LEFT JOIN runs p ON p.rid = r.parent_rid WHERE r.rid=?", (row.rid,)
        )
        assert got is not None
        return self._info(got)

    async def last_run(self, org_root: Path | str | None = None) -> RunInfo | None:
        """The most recently active run (of the organisation at `org_root`, if given)."""
        where, params = "", ()
        if org_root is not None:
            where, params = "WHERE r.org_path = ?", (str(Path(org_root).resolve()),)
        row = await self._one(
            f"SELECT {self._RUN_COLS} FROM runs r LEFT JOIN runs p ON p.rid = r.parent_rid {where}"
            " ORDER BY coalesce(r.updated_at, r.started_at) DESC, r.rid DESC LIMIT 1",
            params,
        )
        return None if row is None else self._info(row)

    async def _run_row(self, run_id: str) -> _RunRow:
        got = self._rows.get(run_id)
        if got is not None:
            return got
        cols = "rid, id, org_path, seed, parent_rid, fork_tick, fork_batch, base_tick"
        row = await self._one(f"SELECT {cols} FROM runs WHERE id=?", (run_id,))
        if row is None:
            esc = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            rows = await self._all(f"SELECT {cols} FROM runs WHERE id LIKE ? ESCAPE '\\' LIMIT 6", (esc + "%",))
            if not rows:
                raise StoreError(f"no run {run_id!r} in {self.path} (`lemming runs` lists them)")
            if len(rows) > 1:
                ids = ", ".join(r[1] for r in rows[:5])
                raise StoreError(f"{run_id!r} matches several runs ({ids}); give more of the id")
            row = rows[0]
        rr = _RunRow(*row)
        if rr.id == run_id:  # what a run row holds never changes
            self._rows[run_id] = rr
        return rr

    async def _run_row_by_rid(self, rid: int) -> _RunRow:
        row = await self._one(
            "SELECT rid, id, org_path, seed, parent_rid, fork_tick, fork_batch, base_tick FROM runs WHERE rid=?", (rid,)
        )
        if row is None:
            raise StoreError(f"{self.path}: run #{rid} is missing (corrupt database?)")
        return _RunRow(*row)

    # -- state at a tick ------------------------------------------------------------------

    async def _resolve_upto(self, run: _RunRow, tick: int | None) -> tuple[int | None, _RunRow]:
        """The last batch of the state at the end of `tick` (None: everything committed),
        and the run that holds it (an ancestor, for a forked run's ticks before the fork)."""
        while run.parent_rid is not None and tick is not None and tick < run.base_tick:
            run = await self._run_row_by_rid(run.parent_rid)
        if tick is None:
            row = await self._one("SELECT max(id) FROM batches WHERE rid=?", (run.rid,))
            return (row[0] if row and row[0] is not None else None), run
        row = await self._one(
            "SELECT id FROM batches WHERE rid=? AND kind='tick' AND tick=? ORDER BY id DESC LIMIT 1", (run.rid, tick)
        )
        if row is not None:
            return row[0], run
        if tick == run.base_tick:
            if run.parent_rid is not None:
                return run.fork_batch, run  # the fork's starting snapshot
            row = await self._one("SELECT min(id) FROM batches WHERE rid=?", (run.rid,))
            if row and row[0] is not None:
                return row[0], run
        last = await self._one("SELECT ticks FROM runs WHERE rid=?", (run.rid,))
        raise StoreError(
            f"run {run.id} has no committed tick {tick} (it runs from tick {run.base_tick} to {last[0] if last else '?'})"
        )

    async def state_at(
        self, run_id: str, tick: int | None = None, *, use_snapshots: bool = True, prompts: bool = True, messages: bool = True
    ) -> OrgState:
        """The organisation's state at the end of `tick` (None: everything committed so far,
        boundary commands after the last tick included — what a resume continues from).

        Starts from the latest snapshot at or before it and folds the rest with
        `OrgState.apply`. `prompts=False` leaves the last turns' prompts empty (faster;
        `turn()` gives any turn whole). `messages=False` leaves the message board out
        (a `CountedBoard`: its count only): the run's message log is not loaded, which
        for a long run is most of the work (replay's panes never read the board).
        """
        run = await self._run_row(run_id)
        upto, run = await self._resolve_upto(run, tick)
        return await self._retrying(
            lambda: self._state_upto(run, upto, use_snapshots=use_snapshots, prompts=prompts, messages=messages)
        )

    async def _state_upto(
        self, run: _RunRow, upto: int | None, *, use_snapshots: bool, prompts: bool, messages: bool = True
    ) -> OrgState:
        codec = self._codec
        assert codec is not None
        snap = None
        if upto is None:  # a run with nothing written yet
            if run.parent_rid is None:
                return OrgState(org=Org(root=Path(run.org_path), agents={}, models={}))
            upto = run.fork_batch
        log: _MessageLog | None = None
        by_batch: dict[int, list[Any]] = {}
        if messages:
            log = await self._message_log(run)
            await self._extend_log(log, upto)
            by_batch = log.by_batch
        # Without snapshots a fork still starts from its first one: nothing else holds it.
        snap, raw = await self._call(_fetch_fold, run.rid, upto, use_snapshots, run.parent_rid is not None, not messages)
        if snap is not None:
            state = await self._snapshot_state(run, snap[0], snap[1], log)
        else:
            state = OrgState(org=Org(root=Path(run.org_path), agents={}, models={}))
            if log is None:
                state.board = CountedBoard(0)
        last: dict[str, tuple[int, _Lazy, int]] = {}
        try:
            with _bulk():
                for batch, body, *msgs in raw:
                    events, _, records = self._lines(body)
                    entries = by_batch.get(batch, ()) if log is not None else (self._unpack(msgs[0]) if msgs[0] else ())
                    codec.fold(state, _loads(events), entries, _Lazy(records), batch, last)
                codec.apply_last_turns(state, last)
        except StoreError:
            raise
        except (TypeError, IndexError, KeyError, ValueError, pickle.UnpicklingError, EOFError) as e:
            raise StoreError(f"{self.path} is corrupt: a stored batch does not decode ({type(e).__name__}: {e})") from None
        if prompts:
            await self._fill_prompts(run, state)
        return state

    async def _snapshot_state(self, run: _RunRow, snap_batch: int, body: bytes, log: "_MessageLog | None") -> OrgState:
        d = self._unpack(body)
        sd = d["state"]
        org = await self._org(sd["org_root"], d["definitions"])
        sd["definitions"] = {"agents": {}}
        memory = sd["memory"]
        sd["memory"] = {}  # freshly decoded: from_dict's deep copy of it would be wasted
        codec = self._codec
        assert codec is not None
        with _bulk():
            state = OrgState.from_dict(sd)
            state.memory = memory
            state.org = org
            state.last_turn = {agent: codec.decode_nested(row) for agent, row in d["last_turn"].items()}
            if log is None:
                state.board = CountedBoard(d["messages"])
                return state
            state.board = log.board(snap_batch)
        if state.board.count != d["messages"]:
            raise StoreError(
                f"run {run.id}: the snapshot after batch {snap_batch} expects {d['messages']} messages,"
                f" the log has {state.board.count} (corrupt database?)"
            )
        return state

    async def _fill_prompts(self, run: _RunRow, state: OrgState) -> None:
        want: list[tuple[str, int]] = [(a, r.tick) for a, r in state.last_turn.items() if not r.prompt]
        if not want:
            return
        lineage = await self._lineage(run)
        got = await self._call(_fetch_prompts, lineage, want)
        for agent, tick in want:
            line = got.get((agent, tick))
            if line is None:
                raise StoreError(f"run {run.id}: the prompt of {agent}'s turn at tick {tick} is missing")
            rec = state.last_turn[agent]
            rec.prompt = self._prompt(run, rec, line)

    def _prompt(self, run: _RunRow, rec: TurnRecord, line: tuple[Any, dict[str, bytes]]) -> list[dict[str, Any]]:
        item, heads = line
        try:
            prompt = _join_prompt(item, lambda h: heads[h])
        except (KeyError, ValueError, TypeError) as e:
            raise StoreError(f"run {run.id}: the prompt of {rec.agent} at tick {rec.tick} does not decode ({e})") from None
        if prompt_hash(prompt) != rec.prompt_hash:
            raise StoreError(f"run {run.id}: the rebuilt prompt of {rec.agent} at tick {rec.tick} does not match its hash")
        return prompt

    async def _lineage(self, run: _RunRow) -> list[tuple[int, int, int | None]]:
        """[(rid, first tick, last batch)] newest first: where a tick's turns live."""
        out: list[tuple[int, int, int | None]] = [(run.rid, run.base_tick, None)]
        limit = run.fork_batch
        r = run
        while r.parent_rid is not None:
            r = await self._run_row_by_rid(r.parent_rid)
            out.append((r.rid, r.base_tick, limit))
            # batch ids grow across the whole file, so an ancestor's share ends at the
            # earliest fork point below it
            if r.fork_batch is not None and limit is not None:
                limit = min(limit, r.fork_batch)
        return out

    async def _message_log(self, run: _RunRow) -> _MessageLog:
        async with self._log_lock:
            return await self._message_log_locked(run)

    async def _message_log_locked(self, run: _RunRow) -> _MessageLog:
        log = self._logs.get(run.rid)
        if log is None:
            segs: list[tuple[int, int | None]] = []
            lin = await self._lineage(run)
            for rid, _, limit in reversed(lin):
                segs.append((rid, limit))
            log = self._logs[run.rid] = _MessageLog(segs)
        return log

    async def _extend_log(self, log: _MessageLog, upto: int | None = None) -> None:
        """Load the messages of batches up to `upto` (a global batch id; None: all) not
        loaded yet: a long run opened at an early tick reads only what that tick needs.
        (Under a lock: concurrent readers of one store must not load a batch twice.)"""
        async with self._log_lock:
            await self._extend_log_locked(log, upto)

    async def _extend_log_locked(self, log: _MessageLog, upto: int | None) -> None:
        codec = self._codec
        assert codec is not None
        for rid, limit in log.segments:
            if upto is not None:
                limit = upto if limit is None else min(limit, upto)
            since = log.loaded[rid]
            if limit is not None and since >= limit:
                continue
            rows = await self._call(_fetch_messages, rid, since, limit)
            if not rows:
                continue
            try:
                with _bulk():
                    added = log.extend([(batch, self._unpack(body)) for batch, body in rows], codec)
                if added >= FREEZE_AFTER_MESSAGES and self.freeze_gc:
                    _freeze()
                    self._froze += 1
            except StoreError:
                raise
            except (TypeError, IndexError, KeyError, ValueError) as e:
                raise StoreError(f"{self.path} is corrupt: a stored message does not decode ({e})") from None
            log.loaded[rid] = rows[-1][0]

    async def _org(self, org_root: str, defs_hash: str) -> Org:
        key = (org_root, defs_hash)
        org = self._orgs.get(key)
        if org is None:
            blob = await self._one("SELECT body FROM texts WHERE hash=?", (defs_hash,))
            if blob is None:
                raise StoreError(f"{self.path}: the definitions {defs_hash} a snapshot refers to are missing")
            org = Org.from_definitions(Path(org_root), self._unpack_json(blob[0]))
            if len(self._orgs) > 16:
                self._orgs.clear()
            self._orgs[key] = org
        return org

    # -- events and turns ---------------------------------------------------------------

    async def events(
        self, run_id: str, *, since_tick: int | None = None, until_tick: int | None = None, prompts: bool = True
    ) -> list[Event]:
        """The run's own events in order (a fork's start with its RunStarted). A batch belongs
        to the tick it completed, or to the last committed tick when it was written."""
        out: list[Event] = []
        async for chunk in self.iter_events(run_id, since_tick=since_tick, until_tick=until_tick, prompts=prompts):
            out.extend(chunk)
        return out

    async def iter_events(
        self,
        run_id: str,
        *,
        since_tick: int | None = None,
        until_tick: int | None = None,
        prompts: bool = True,
        chunk: int = 256,
        after_batch: int = 0,
    ) -> AsyncIterator[list[Event]]:
        """The run's events in chunks of `chunk` batches (for exports of long runs)."""
        run = await self._run_row(run_id)
        last = after_batch
        while True:
            rows = await self._call(_fetch_batch_range, run.rid, last, since_tick, until_tick, chunk, prompts)
            if not rows:
                return
            last = rows[-1][0]
            evs: list[Event] = []
            for _, _, _, body, msgs, pitems in rows:
                try:
                    batch_events = self._decode_batch(body, msgs)
                except _UnknownLayout:
                    await self._reload_codec()
                    batch_events = self._decode_batch(body, msgs)
                if pitems is not None:
                    items, heads = pitems
                    i = 0
                    for e in batch_events:
                        if type(e) is TurnFinished:
                            rec = e.record  # type: ignore[attr-defined]
                            rec.prompt = self._prompt(run, rec, (items[i] if i < len(items) else None, heads))
                            i += 1
                evs.extend(batch_events)
            yield evs
            if len(rows) < chunk:
                return

    async def tick_events(self, run_id: str, tick: int, *, skip: Iterable[type] = ()) -> list[Event]:
        """What turns the state at the end of `tick - 1` into the state at the end of `tick`
        (boundary commands after tick - 1, then the tick itself); prompts left empty.
        Events of the types in `skip` are left out (not even built)."""
        skipped = frozenset(skip)
        return await self._retrying(lambda: self._tick_events(run_id, tick, skipped))

    async def _tick_events(self, run_id: str, tick: int, skip: frozenset[type] = frozenset()) -> list[Event]:
        run = await self._run_row(run_id)
        # A fork's ticks up to the one it starts from are its parent's (the fork tick included).
        while run.parent_rid is not None and tick <= run.base_tick:
            run = await self._run_row_by_rid(run.parent_rid)
        hi, hrun = await self._resolve_upto(run, tick)
        lo, _ = await self._resolve_upto(run, tick - 1)
        if hi is None or lo is None:
            return []
        # The messages of these batches only, straight from their rows (not the run's log).
        raw = await self._call(_fetch_bodies, hrun.rid, lo, hi, True)
        out: list[Event] = []
        with _bulk():
            for _, body, msgs in raw:
                out.extend(self._decode_batch(body, msgs, skip))
        return out

    async def turn(self, run_id: str, tick: int, agent: str) -> TurnRecord | None:
        """One turn whole: its record with the exact prompt (checked against its hash)."""
        return await self._retrying(lambda: self._turn(run_id, tick, agent))

    async def _turn(self, run_id: str, tick: int, agent: str) -> TurnRecord | None:
        run = await self._run_row(run_id)
        lineage = await self._lineage(run)
        got = await self._call(_fetch_turn, lineage, agent, tick)
        if got is None:
            return None
        body, msgs, idx, line = got
        _, _, records = self._lines(body)
        try:
            rec: TurnRecord = self._codec.decode_nested(_unpickle(records)[idx - 1])  # type: ignore[union-attr]
        except (IndexError, TypeError, ValueError, KeyError, pickle.UnpicklingError, EOFError) as e:
            raise StoreError(f"{self.path} is corrupt: turn {agent}@{tick} does not decode ({e})") from None
        if rec.agent != agent or rec.tick != tick:
            raise StoreError(f"{self.path} is corrupt: turn {agent}@{tick} points at another turn's record")
        rec.prompt = self._prompt(run, rec, line)
        return rec

    async def turns(self, run_id: str, *, since_tick: int | None = None, until_tick: int | None = None) -> list[tuple[int, str, str, float]]:
        """(tick, agent, status, cost) of the run's own turns, by tick then agent (a timeline)."""
        run = await self._run_row(run_id)
        lo = since_tick if since_tick is not None else -(2**62)
        hi = until_tick if until_tick is not None else 2**62
        rows = await self._all(
            "SELECT tick, agent, status, cost FROM turns WHERE rid=? AND tick BETWEEN ? AND ? ORDER BY tick, agent",
            (run.rid, lo, hi),
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]

    async def last_batch(self, run_id: str) -> int:
        """The id of the run's newest batch (0 if none): a cheap "anything new?" for readers."""
        run = await self._run_row(run_id)
        row = await self._one("SELECT max(id) FROM batches WHERE rid=?", (run.rid,))
        return (row[0] or 0) if row else 0

    async def stats(self) -> dict[str, Any]:
        """Sizes, for benchmarks and `lemming runs --stats`."""
        def q(conn: sqlite3.Connection) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for t in ("runs", "batches", "messages", "prompts", "turns", "snapshots", "texts"):
                out[t] = conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            ps = conn.execute("PRAGMA page_size").fetchone()[0]
            pc = conn.execute("PRAGMA page_count").fetchone()[0]
            fl = conn.execute("PRAGMA freelist_count").fetchone()[0]
            out["bytes"] = ps * (pc - fl)
            return out

        return await self._call(q)


# --- database-thread functions ----------------------------------------------------------


def _prepare(conn: sqlite3.Connection, path: Path, readonly: bool, durable: bool, timeout: float) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    _BUSY_MS[id(conn)] = int(timeout * 1000)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as e:
        raise _sqlite_error(path, e) from None
    if app not in (0, APPLICATION_ID) or (tables and "runs" not in tables) or (version == 0 and tables):
        raise StoreError(f"{path} is not a LeMMing run database; choose another --db")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer lemming (store schema {version}; this one reads up to {SCHEMA_VERSION});"
            " upgrade lemming to open it"
        )
    reachable = version
    while 0 < reachable < SCHEMA_VERSION and reachable in MIGRATIONS:
        reachable += 1
    if 0 < reachable < SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by an older lemming (store schema {version}) that this one ({SCHEMA_VERSION}) cannot"
            " read or convert; record new runs in another --db (or export this one's runs with the older lemming)"
        )
    if readonly:
        if version == 0:
            raise StoreError(f"{path} holds no runs yet")
        if version < SCHEMA_VERSION:
            raise StoreError(
                f"{path} uses the older store schema {version}; open it once read-write (e.g. `lemming runs --db {path}`)"
                " to upgrade it"
            )
        conn.execute("PRAGMA query_only = ON")
        return
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"{path}: cannot use WAL mode here (got {mode}); is it on a network file system?")
    conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
    conn.execute(f"PRAGMA journal_size_limit = {WAL_TRUNCATE_BYTES}")
    conn.execute("PRAGMA wal_autocheckpoint = 2000")
    conn.execute("PRAGMA cache_size = -32000")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("BEGIN IMMEDIATE")
    try:
        if version == 0:
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('created_by', 'lemming-control-room')")
            version = SCHEMA_VERSION
        while version < SCHEMA_VERSION:
            step = MIGRATIONS.get(version)
            if step is None:
                raise StoreError(f"{path}: no migration from store schema {version}; this lemming cannot open it")
            step(conn)
            version += 1
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        known = {(n, f) for n, f in conn.execute("SELECT name, fields FROM codec")}
        for name, fields in _current_layouts().items():
            fj = json.dumps(list(fields))
            if (name, fj) not in known:
                conn.execute("INSERT INTO codec (name, fields) VALUES (?, ?)", (name, fj))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _close_checkpoint(conn: sqlite3.Connection, path: Path) -> None:
    try:
        conn.execute("PRAGMA busy_timeout = 100")
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    except sqlite3.Error:
        pass


def _fetch_fold(
    conn: sqlite3.Connection, rid: int, upto: int, use_snapshots: bool, fork: bool, messages: bool = False
) -> tuple[tuple | None, list[tuple]]:
    """The snapshot to start from (the latest at or before `upto`; a fork's first when
    snapshots are not wanted) and the bodies of the batches after it (with their messages'
    rows when `messages`)."""
    snap = None
    if use_snapshots or fork:
        order = "DESC" if use_snapshots else "ASC"
        snap = conn.execute(
            f"SELECT batch, body FROM snapshots WHERE rid=? AND batch<=? ORDER BY batch {order} LIMIT 1", (rid, upto)
        ).fetchone()
    return snap, _fetch_bodies(conn, rid, snap[0] if snap else 0, upto, messages)


def _fetch_bodies(conn: sqlite3.Connection, rid: int, since: int, upto: int, messages: bool = False) -> list[tuple]:
    if messages:
        return conn.execute(
            "SELECT b.id, b.body, m.body FROM batches b LEFT JOIN messages m ON m.batch = b.id"
            " WHERE b.id>? AND b.id<=? AND +b.rid=? ORDER BY b.id",
            (since, upto, rid),
        ).fetchall()
    return conn.execute(
        "SELECT id, body FROM batches WHERE id>? AND id<=? AND +rid=? ORDER BY id", (since, upto, rid)
    ).fetchall()


def _fetch_batch_range(conn, rid, after, since_tick, until_tick, limit, prompts) -> list[tuple]:
    # A run's batch ticks never decrease, so a tick range is an id range: find its ends
    # with the (rid, tick) index, then walk the rowids.
    lo_id, hi_id = after, 2**62
    if since_tick is not None:
        row = conn.execute("SELECT min(id) FROM batches WHERE rid=? AND tick>=?", (rid, since_tick)).fetchone()
        if row[0] is None:
            return []
        lo_id = max(lo_id, row[0] - 1)
    if until_tick is not None:
        row = conn.execute("SELECT max(id) FROM batches WHERE rid=? AND tick<=?", (rid, until_tick)).fetchone()
        if row[0] is None:
            return []
        hi_id = row[0]
    rows = conn.execute(
        "SELECT b.id, b.tick, b.kind, b.body, m.body, p.body FROM batches b"
        " LEFT JOIN messages m ON m.batch = b.id LEFT JOIN prompts p ON p.batch = b.id"
        " WHERE b.id>? AND b.id<=? AND +b.rid=? ORDER BY b.id LIMIT ?",
        (lo_id, hi_id, rid, limit),
    ).fetchall()
    out = []
    for bid, tick, kind, body, msgs, pblob in rows:
        pitems = None
        if prompts and pblob is not None:
            items = _unpickle(zlib.decompress(pblob))
            pitems = (items, _heads_of(conn, items))
        out.append((bid, tick, kind, body, msgs, pitems))
    return out


def _fetch_messages(conn: sqlite3.Connection, rid: int, since: int, limit: int | None) -> list[tuple]:
    return conn.execute(
        "SELECT batch, body FROM messages WHERE rid=? AND batch>? AND batch<=? ORDER BY batch",
        (rid, since, limit if limit is not None else 2**62),
    ).fetchall()


_TEXT_CACHE: dict[str, bytes] = {}


def _text(conn: sqlite3.Connection, h: str) -> bytes:
    b = _TEXT_CACHE.get(h)
    if b is None:
        row = conn.execute("SELECT body FROM texts WHERE hash=?", (h,)).fetchone()
        if row is None:
            raise StoreError(f"a prompt's head text {h} is missing (corrupt database?)")
        b = zlib.decompress(row[0])
        if len(_TEXT_CACHE) > 4096:
            _TEXT_CACHE.clear()
        _TEXT_CACHE[h] = b
    return b


def _heads_of(conn: sqlite3.Connection, items: Iterable[Any]) -> dict[str, bytes]:
    """The head texts that prompt items refer to."""
    out: dict[str, bytes] = {}
    for item in items:
        if item and item[0] and item[0] not in out:
            out[item[0]] = _text(conn, item[0])
    return out


def _turn_row(conn, lineage, agent, tick):
    for rid, base_tick, limit in lineage:
        row = conn.execute("SELECT batch, idx FROM turns WHERE rid=? AND tick=? AND agent=?", (rid, tick, agent)).fetchone()
        if row is not None and (limit is None or row[0] <= limit):
            return row
    return None


def _fetch_prompts(conn, lineage, want) -> dict[tuple[str, int], tuple[Any, dict[str, bytes]]]:
    """(prompt line, head texts) of each wanted (agent, tick); each batch decompressed once."""
    where: dict[int, list[tuple[str, int, int]]] = {}
    for agent, tick in want:
        row = _turn_row(conn, lineage, agent, tick)
        if row is not None:
            where.setdefault(row[0], []).append((agent, tick, row[1]))
    out: dict[tuple[str, int], tuple[Any, dict[str, bytes]]] = {}
    for batch, wanted in where.items():
        row = conn.execute("SELECT body FROM prompts WHERE batch=?", (batch,)).fetchone()
        if row is None:
            continue
        items = _unpickle(zlib.decompress(row[0]))
        for agent, tick, idx in wanted:
            item = items[idx - 1]
            out[(agent, tick)] = (item, _heads_of(conn, (item,)))
    return out


def _fetch_turn(conn, lineage, agent, tick):
    row = _turn_row(conn, lineage, agent, tick)
    if row is None:
        return None
    batch, idx = row
    b = conn.execute(
        "SELECT b.body, m.body, p.body FROM batches b LEFT JOIN messages m ON m.batch=b.id"
        " LEFT JOIN prompts p ON p.batch=b.id WHERE b.id=?",
        (batch,),
    ).fetchone()
    if b is None or b[2] is None:
        raise StoreError(f"turn {agent}@{tick}: its batch {batch} is missing (corrupt database?)")
    item = _unpickle(zlib.decompress(b[2]))[idx - 1]
    return b[0], b[1], idx, (item, _heads_of(conn, (item,)))
