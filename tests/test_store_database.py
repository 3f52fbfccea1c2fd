"""The store's database thread (engine/store/database.py), on real SQLite files."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
from pathlib import Path

import pytest

from lemming.engine.store import RunStore, StoreError
from lemming.engine.store.database import Database, transaction


def _store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("lemming-store:")]


async def _table(tmp_path: Path) -> Database:
    db = await Database.open(tmp_path / "t.db", str(tmp_path / "t.db"), readonly=False, timeout=5.0)
    await db.call(lambda c: c.execute("CREATE TABLE t (x INTEGER)"))
    return db


async def test_a_transaction_whose_caller_stops_waiting_still_commits(tmp_path: Path) -> None:
    """A cancelled task never cuts a transaction short: queued work runs, in order."""
    db = await _table(tmp_path)
    gate = threading.Event()
    blocker = asyncio.ensure_future(db.call(lambda c: gate.wait(10)))

    def insert(conn: sqlite3.Connection, x: int) -> None:
        with transaction(conn):
            conn.execute("INSERT INTO t VALUES (?)", (x,))

    writer = asyncio.ensure_future(db.call(insert, 1))
    await asyncio.sleep(0)
    writer.cancel()  # queued behind the blocker: not started yet
    later = asyncio.ensure_future(db.call(insert, 2))
    gate.set()
    await blocker
    await later
    with pytest.raises(asyncio.CancelledError):
        await writer
    assert await db.all("SELECT x FROM t ORDER BY rowid") == [(1,), (2,)]
    await db.close()


async def test_a_failed_transaction_leaves_nothing_and_says_so_in_one_line(tmp_path: Path) -> None:
    db = await _table(tmp_path)

    def half(conn: sqlite3.Connection) -> None:
        with transaction(conn):
            conn.execute("INSERT INTO t VALUES (1)")
            conn.execute("INSERT INTO nowhere VALUES (1)")

    with pytest.raises(StoreError) as e:
        await db.call(half)
    assert str(e.value) == f"{db.path}: database error: no such table: nowhere"
    assert await db.one("SELECT count(*) FROM t") == (0,)
    await db.close()


async def test_closing_ends_the_thread_and_refuses_later_calls(tmp_path: Path) -> None:
    before = set(_store_threads())
    store = await RunStore.open(tmp_path / "runs.db")
    (thread,) = set(_store_threads()) - before
    await store.close()
    thread.join(5)
    assert not thread.is_alive()
    with pytest.raises(StoreError, match="the store is closed"):
        await store.list_runs()
    await store.close()  # twice is harmless


async def test_a_database_never_closed_ends_its_thread_when_collected(tmp_path: Path) -> None:
    """An error on the way may drop a store without closing it: its thread must not keep
    the process alive at exit."""
    before = set(_store_threads())
    db = await _table(tmp_path)
    (thread,) = set(_store_threads()) - before
    del db
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()
    con = sqlite3.connect(tmp_path / "t.db")  # the file was left consistent
    assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)
    con.close()


async def test_a_file_that_cannot_be_opened_leaves_no_thread(tmp_path: Path) -> None:
    before = set(_store_threads())
    with pytest.raises(StoreError, match="cannot open"):
        await Database.open(tmp_path / "no" / "t.db", str(tmp_path / "no" / "t.db"), readonly=False, timeout=1.0)
    for t in set(_store_threads()) - before:
        t.join(5)
        assert not t.is_alive()


def test_a_writer_keeps_freed_memory_unless_the_environment_says_otherwise() -> None:
    """glibc's malloc is tuned once per process for a writer; an operator's own
    MALLOC_TRIM_THRESHOLD_ wins (checked in fresh processes: the tuning is process-wide)."""
    import os
    import subprocess
    import sys

    code = "from lemming.engine.store.database import keep_freed_memory as k; print(k(), k())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    tuned = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert tuned.stdout.split() == ["True", "True"], tuned.stderr
    left = subprocess.run(
        [sys.executable, "-c", code], env={**env, "MALLOC_TRIM_THRESHOLD_": "131072"}, capture_output=True, text=True, timeout=60
    )
    assert left.stdout.split() == ["False", "False"], left.stderr


@pytest.mark.parametrize("n", [0, 1, 5, 83, 300, 1000])
def test_insert_rows_writes_every_row_in_order(tmp_path: Path, n: int) -> None:
    """A turns-like insert in multi-row statements: every row once, in order, the
    leading constants bound to each, whatever the count (256, 64, 16, 4, 1 per statement)."""
    from lemming.engine.store.database import insert_rows

    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, rid INTEGER, batch INTEGER, agent TEXT, cost REAL)")
    rows = [(f"agent-{i}", i / 7) for i in range(n)]
    with transaction(conn):
        insert_rows(conn, "INSERT INTO t (rid, batch, agent, cost) SELECT ?1, ?2, column1, column2 FROM (", "(?,?)", rows, (3, 9), ")")
    got = conn.execute("SELECT rid, batch, agent, cost FROM t ORDER BY seq").fetchall()
    assert got == [(3, 9, a, c) for a, c in rows]
    conn.close()
