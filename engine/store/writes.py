"""What changes the file, run on the database thread: runs, batches, snapshots, the WAL.

Each function takes the sqlite3 connection first and is one call of `Database.call`,
one transaction. A batch's transaction is split into steps so that a test (and the
crash harness, tests/support/killpoint.py) can make one of them fail or stop the
process there, and check that nothing of the batch remains.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lemming.engine.store import schema, search
from lemming.engine.store.database import insert_rows, transaction
from lemming.engine.store.errors import StoreError


@dataclass(slots=True)
class WritePlan:
    """One engine write, encoded (by the recorder) and ready for its transaction."""

    rid: int
    kind: str  # tick, start, stop, boundary
    tick: int
    n: int  # events
    body: bytes  # the batch body (event rows, then the turn records)
    msgs: bytes | None  # the outbox entries committed
    prompts: bytes | None  # the turns' prompt items
    turns: list[tuple]  # (agent, tick, line in the batch, status, cost) per turn
    texts: dict[str, bytes]  # new prompt heads: hash → compressed text
    run_update: dict[str, Any]  # runs columns to set
    batch_id: int = 0  # set by the transaction
    records: list[Any] = field(default_factory=list)  # the batch's TurnRecords (the recorder's, not written)
    search_rows: list[tuple] = field(default_factory=list)  # what the batch adds to the search index (search.py)
    #: earlier batches' (id, search rows) to index with this one; None: this one's rows wait
    search_chunk: list[tuple[int, list[tuple]]] | None = None


def insert_batch(conn: sqlite3.Connection, p: WritePlan) -> None:
    cur = conn.execute(
        "INSERT INTO batches (rid, tick, kind, n, body) VALUES (?,?,?,?,?)", (p.rid, p.tick, p.kind, p.n, p.body)
    )
    p.batch_id = cur.lastrowid  # type: ignore[assignment]
    if p.msgs is not None:
        conn.execute("INSERT INTO messages (batch, rid, body) VALUES (?,?,?)", (p.batch_id, p.rid, p.msgs))


def insert_turns(conn: sqlite3.Connection, p: WritePlan) -> None:
    if p.texts:
        conn.executemany("INSERT OR IGNORE INTO texts (hash, body) VALUES (?,?)", p.texts.items())
    if p.turns:
        b = p.batch_id
        rid = p.rid
        conn.execute("INSERT INTO prompts (batch, body) VALUES (?,?)", (b, p.prompts))
        insert_rows(
            conn, "INSERT INTO turns (rid, batch, agent, tick, idx, status, cost)"
            " SELECT ?1, ?2, column1, column2, column3, column4, column5 FROM (", "(?,?,?,?,?)", p.turns, (rid, b), ")",
        )


def update_run(conn: sqlite3.Connection, p: WritePlan) -> None:
    u = p.run_update
    sets = ["events = events + ?", "updated_at = ?"]
    vals: list[Any] = [u["events"], u["updated_at"]]
    for k in ("ticks", "spend", "status", "writer", "ended_at", "reason"):
        if k in u:
            sets.append(f"{k} = ?")
            vals.append(u[k])
    vals.append(p.rid)
    conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE rid = ?", vals)


def write_tx(conn: sqlite3.Connection, p: WritePlan) -> None:
    """A batch, its turns and its run's row, in one transaction (sets `p.batch_id`)."""
    with transaction(conn):
        insert_batch(conn, p)
        insert_turns(conn, p)
        update_run(conn, p)
        if p.search_chunk is not None:
            search.index_chunk(conn, p.rid, [*p.search_chunk, (p.batch_id, p.search_rows)])


def index_tx(conn: sqlite3.Connection, rid: int, chunk: list[tuple[int, list[tuple]]]) -> None:
    """Committed batches' search rows, in a transaction of their own (search.index_chunk)."""
    with transaction(conn):
        search.index_chunk(conn, rid, chunk)


def write_snapshot(conn: sqlite3.Connection, rid: int, batch: int, tick: int, body: bytes, defs_hash: str,
                   defs_blob: bytes) -> None:
    """A snapshot after `batch`, with the definitions it refers to."""
    with transaction(conn):
        conn.execute("INSERT OR IGNORE INTO texts (hash, body) VALUES (?,?)", (defs_hash, defs_blob))
        conn.execute(
            "INSERT OR REPLACE INTO snapshots (rid, batch, tick, body) VALUES (?,?,?,?)", (rid, batch, tick, body)
        )


def insert_run(conn: sqlite3.Connection, path: Path, row: tuple, snapshot: tuple[bytes, str, bytes] | None) -> None:
    """A new run's row — `row`: (id, org_path, seed, definitions_hash, target_ticks,
    parent_rid, fork_tick, fork_batch, base_tick, status, ticks, started_at, updated_at,
    writer) — and a fork's starting snapshot (body, definitions' hash, their text)."""
    run_id, fork_tick, fork_batch = row[0], row[6], row[7]
    with transaction(conn):
        if conn.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone():
            raise StoreError(f"a run {run_id!r} already exists in {path}")
        cur = conn.execute(
            "INSERT INTO runs (id, org_path, seed, definitions_hash, target_ticks, parent_rid, fork_tick,"
            " fork_batch, base_tick, status, ticks, started_at, updated_at, writer)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            row,
        )
        if snapshot is not None:
            body, defs_hash, defs_blob = snapshot
            conn.execute("INSERT OR IGNORE INTO texts (hash, body) VALUES (?,?)", (defs_hash, defs_blob))
            conn.execute(
                "INSERT INTO snapshots (rid, batch, tick, body) VALUES (?,?,?,?)",
                (cur.lastrowid, fork_batch, fork_tick, body),
            )


def maybe_truncate_wal(conn: sqlite3.Connection, path: Path, busy_ms: int) -> None:
    """Reset the WAL now and then: with a reader always present, PASSIVE checkpoints
    copy pages back but never let the WAL start over, so it would only grow. Waits for
    readers briefly, then restores the connection's lock wait (`busy_ms`)."""
    try:
        size = os.path.getsize(str(path) + "-wal")
    except OSError:
        return
    if size < schema.WAL_TRUNCATE_BYTES:
        return
    try:
        conn.execute("PRAGMA busy_timeout = 200")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.Error:
        pass
    finally:
        conn.execute(f"PRAGMA busy_timeout = {busy_ms}")


def close_checkpoint(conn: sqlite3.Connection) -> None:
    """A writer's last checkpoint, as it closes (skipped if readers hold the WAL)."""
    try:
        conn.execute("PRAGMA busy_timeout = 100")
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    except sqlite3.Error:
        pass
