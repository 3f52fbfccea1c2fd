"""The run database's schema: its tables, its version, and what opening a file checks.

What is in the file (schema version `SCHEMA_VERSION`, in ``PRAGMA user_version``)::

    runs       one row per run: id, organisation, seed, definitions' hash, parent and
               fork tick, status, last committed tick, spend, writer (host:pid:start)
    batches    one row per engine write = one transaction: a whole tick (TickStarted ...
               TickCompleted), the run's start or stop, or the commands applied at a
               tick boundary. `body` is compressed (zstd): the events as compact
               rows (layouts in `codec`), pickled, then the turn records, pickled
               apart (see codec.py for the forms), so a fold can leave alone the records
               a later turn supersedes (older files: a line of JSON rows, zlib). Append-only.
    messages   the outbox entries committed by a batch (the MessageCommitted events'
               payloads, pickled), kept apart so that the message board of any tick
               loads without decoding every other event
    prompts    per batch, the last message of each turn's prompt with the hash of the
               rest (the system message, kept once in `texts`), compressed together
               (see prompts.py). A rebuilt prompt is checked against the turn
               record's sha256 `prompt_hash`.
    turns      one row per agent turn (its batch and line, status, cost):
               the timeline and the inspector's index. Keyed by tick first, so a
               tick's rows append.
    snapshots  the folded state (without the message board, which `messages` holds) at
               the end of a tick, every few ticks, so any tick opens fast (pickled); the
               last turn records as the batch and place that hold them (snapshots.py)
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
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Callable

from lemming.engine.store.codec import current_layouts
from lemming.engine.store.database import transaction
from lemming.engine.store.errors import StoreError, sqlite_error
from lemming.engine.store.search import create as create_search_index

#: 1: records, entries, prompts and snapshots as JSON; 2: pickled (see encoding.py), no
#: prompt hash in `turns`. A schema-1 file is refused (no migration: record anew).
#: 3: batch bodies of codes and tuple rows (codec.py); the tables are those of 2, and
#: bodies of 2 still read, so a reader opens a file of 2 as it is and a writer's
#: migration only marks the file (a lemming of 2 would take the new bodies for corrupt).
SCHEMA_VERSION = 3
#: The schemas a reader opens without a migration (what they hold, this lemming reads).
READ_AS_IS = frozenset({2, 3})
#: "LeMm" — marks the file as a LeMMing run store (``PRAGMA application_id``).
APPLICATION_ID = 0x4C654D6D
#: The WAL is truncated when it has grown past this (see writes.maybe_truncate_wal).
WAL_TRUNCATE_BYTES = 64 * 1024 * 1024

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

def _mark_3(conn: sqlite3.Connection) -> None:
    """2 → 3: nothing to convert (the new bodies are told apart from the old ones)."""


#: version → function(conn) that upgrades a database from `version` to `version + 1`.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {2: _mark_3}


def prepare(conn: sqlite3.Connection, path: Path, readonly: bool, durable: bool, timeout: float) -> None:
    """Check what the file at `path` is and set the connection up (on the database thread).

    Refuses a file that is not a run store, or one of a schema this lemming cannot read.
    A reader gets a query-only connection and never changes the file; a writer gets WAL
    mode and its settings, the tables (a new file), the migrations (an older one) and
    this engine's event layouts registered in `codec`, in one transaction.
    """
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as e:
        raise sqlite_error(path, e) from None
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
        if version < SCHEMA_VERSION and version not in READ_AS_IS:
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
    with transaction(conn):
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
        create_search_index(conn)  # search.py: FTS5 over what was said (filled as batches are written)
        known = {(n, f) for n, f in conn.execute("SELECT name, fields FROM codec")}
        for name, fields in current_layouts().items():
            fj = json.dumps(list(fields))
            if (name, fj) not in known:
                conn.execute("INSERT INTO codec (name, fields) VALUES (?, ?)", (name, fj))

