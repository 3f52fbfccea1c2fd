"""What reads the file, run on the database thread: the rows a fold, an export, a
turn or a prompt needs, each fetched in one hop (with the prompt items decompressed
and their head texts looked up there too).
"""

from __future__ import annotations

import sqlite3
from typing import Any, Iterable

from lemming.engine.store.encoding import decompress, unpack_blob
from lemming.engine.store.errors import StoreError


def run_rid(conn: sqlite3.Connection, run_id: str) -> int | None:
    """The row key of the run whose id is exactly `run_id` (None: no such run)."""
    row = conn.execute("SELECT rid FROM runs WHERE id=?", (run_id,)).fetchone()
    return None if row is None else row[0]


def fetch_fold(
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
    return snap, fetch_bodies(conn, rid, snap[0] if snap else 0, upto, messages)


def fetch_bodies(conn: sqlite3.Connection, rid: int, since: int, upto: int, messages: bool = False) -> list[tuple]:
    """(batch, body[, messages' body]) of the run's batches in (since, upto]."""
    if messages:
        return conn.execute(
            "SELECT b.id, b.body, m.body FROM batches b LEFT JOIN messages m ON m.batch = b.id"
            " WHERE b.id>? AND b.id<=? AND +b.rid=? ORDER BY b.id",
            (since, upto, rid),
        ).fetchall()
    return conn.execute(
        "SELECT id, body FROM batches WHERE id>? AND id<=? AND +rid=? ORDER BY id", (since, upto, rid)
    ).fetchall()


def fetch_bodies_by_id(conn: sqlite3.Connection, ids: list[int]) -> list[tuple]:
    """(batch, body) of the batches `ids`."""
    return conn.execute(f"SELECT id, body FROM batches WHERE id IN ({','.join('?' * len(ids))})", ids).fetchall()


def fetch_batch_range(conn, rid, after, since_tick, until_tick, limit, prompts) -> list[tuple]:
    """Up to `limit` of the run's batches after batch `after` within the tick range:
    (batch, tick, kind, body, messages' body, (prompt items, head texts) or None)."""
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
            items = unpack_blob(pblob)
            pitems = (items, _heads_of(conn, items))
        out.append((bid, tick, kind, body, msgs, pitems))
    return out


def fetch_messages(conn: sqlite3.Connection, rid: int, since: int, limit: int | None) -> list[tuple]:
    """(batch, messages' body) of the run's batches in (since, limit]."""
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
        b = decompress(row[0])
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


def fetch_prompts(conn, lineage, want) -> dict[tuple[str, int], tuple[Any, dict[str, bytes]]]:
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
        items = unpack_blob(row[0])
        for agent, tick, idx in wanted:
            item = items[idx - 1]
            out[(agent, tick)] = (item, _heads_of(conn, (item,)))
    return out


def fetch_turn(conn, lineage, agent, tick):
    """(batch body, messages' body, line in the batch, (prompt item, head texts)) of one
    turn, found along `lineage` — (rid, first tick, last batch or None) of the run, then
    of its ancestors; None if there is no such turn."""
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
    item = unpack_blob(b[2])[idx - 1]
    return b[0], b[1], idx, (item, _heads_of(conn, (item,)))


def stats(conn: sqlite3.Connection) -> dict[str, Any]:
    """Row counts per table, and the bytes the file uses."""
    out: dict[str, Any] = {}
    for t in ("runs", "batches", "messages", "prompts", "turns", "snapshots", "texts"):
        out[t] = conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
    ps = conn.execute("PRAGMA page_size").fetchone()[0]
    pc = conn.execute("PRAGMA page_count").fetchone()[0]
    fl = conn.execute("PRAGMA freelist_count").fetchone()[0]
    out["bytes"] = ps * (pc - fl)
    return out
