"""The run database's connection: one sqlite3 connection, driven by a thread of its own.

SQLite calls block, and the engine and the control room share one asyncio loop that
must not. Every piece of database work is a plain function ``fn(conn, *args)`` (see
schema.py, writes.py, queries.py) that `Database.call` runs on this thread in one
hop — a whole transaction, or a whole read with its decompression — in the order the
calls were made. Work that was queued runs even if its caller stops waiting, so a
transaction is never cut short by a cancelled task; the thread is not a daemon, so a
COMMIT under way finishes before the process exits.

This is the pattern aiosqlite implements, whose public API runs one statement per
hop; the store used its private hooks (``Connection._execute``, ``._conn``) to run a
function per hop. It owns the thread instead, with the standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import sqlite3
import threading
from functools import partial
from itertools import chain
from pathlib import Path
from queue import SimpleQueue
from typing import Any, Callable, Iterator, Sequence

from lemming.engine.store.encoding import CompressionError
from lemming.engine.store.errors import StoreError, sqlite_error

#: put on the job queue: the thread ends
_STOP = None

#: glibc malloc: keep up to this much freed memory at the top of the heap, and serve
#: blocks up to this size from the heap rather than fresh mmaps (M_TRIM_THRESHOLD,
#: M_MMAP_THRESHOLD). A writer builds and frees a few hundred KB of encoded and
#: compressed batch per tick; with glibc's defaults each tick gives those pages back
#: to the system and faults them in again (5-15% of the store's CPU write rate, measured).
MALLOC_KEEP_BYTES = 32 << 20
MALLOC_MMAP_BYTES = 8 << 20
_malloc_tuned: bool | None = None  # None: not tried yet


def keep_freed_memory() -> bool:
    """Tune glibc's malloc for a writer, once per process (see MALLOC_KEEP_BYTES). False
    where it does not apply (not glibc) or the environment already sets it."""
    global _malloc_tuned
    if _malloc_tuned is None:
        _malloc_tuned = _tune_malloc()
    return _malloc_tuned


def _tune_malloc() -> bool:
    import os

    if os.environ.get("MALLOC_TRIM_THRESHOLD_") or os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False  # the operator's own settings win
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        return bool(libc.mallopt(m_trim_threshold, MALLOC_KEEP_BYTES)) and bool(
            libc.mallopt(m_mmap_threshold, MALLOC_MMAP_BYTES)
        )
    except (OSError, AttributeError):
        return False


def _settle(fut: asyncio.Future, ok: bool, value: Any) -> None:
    if not fut.done():  # its waiter may have been cancelled
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def _serve(jobs: SimpleQueue) -> None:
    """The database thread: run each job in turn and hand its outcome to its waiter's loop."""
    while True:
        job = jobs.get()
        if job is _STOP:
            return
        fut, fn = job
        try:
            value, ok = fn(), True
        except BaseException as e:  # handed to the waiter, whatever it is
            value, ok = e, False
        if fut is not None:
            try:
                fut.get_loop().call_soon_threadsafe(_settle, fut, ok, value)
            except RuntimeError:  # the waiter's loop is closed: nobody is waiting any more
                pass
        # Hold nothing while waiting for the next job: the last one may refer to its Database.
        del job, fut, fn, value


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back if anything in it fails (on the
    database thread; the connection is in autocommit mode, isolation_level=None)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


#: Rows per INSERT statement in `insert_rows`, largest first (few distinct statements,
#: so the connection's statement cache keeps them all).
_ROWS_PER_STATEMENT = (256, 64, 16, 4, 1)
_INSERTS: dict[tuple[str, str, int, str], str] = {}


def insert_rows(conn: sqlite3.Connection, head: str, values: str, rows: Sequence[Sequence[Any]],
                first: Sequence[Any] = (), tail: str = "") -> None:
    """``head VALUES values, values, ... tail``, for `rows`, in order: a few
    statements of many rows each rather than one per row (`executemany`), which pays
    a statement step, a bind of the constant columns and a GIL hand-over per row.
    `first` are bound before each statement's rows (``?1`` ... in `head`)."""
    i, n = 0, len(rows)
    for size in _ROWS_PER_STATEMENT:
        if n - i < size:
            continue
        key = (head, values, size, tail)
        sql = _INSERTS.get(key)
        if sql is None:
            sql = _INSERTS[key] = f"{head} VALUES {','.join([values] * size)}{tail}"
        while n - i >= size:
            conn.execute(sql, list(chain(first, *rows[i:i + size])))
            i += size


class Database:
    """One open run database: its sqlite3 connection and the thread that uses it.

    Open with `await Database.open(...)`, close with `await close()`. `call` runs a
    function on the thread and turns what SQLite, the decompressor and the unpickler raise into
    one-line `StoreError`s naming the file.
    """

    def __init__(self, path: Path, *, readonly: bool, busy_ms: int) -> None:
        self.path = path
        self.readonly = readonly
        #: the lock wait chosen at opening (a short-timeout checkpoint restores it)
        self.busy_ms = busy_ms
        #: hashes of the `texts` rows known to be in the file (a writer sends each once)
        self.known_texts: set[str] = set()
        self._conn: sqlite3.Connection | None = None  # used on the thread only
        self._jobs: SimpleQueue = SimpleQueue()
        # The thread gets the queue, not this object: an unclosed Database can be collected.
        self._thread = threading.Thread(target=_serve, args=(self._jobs,), name=f"lemming-store:{path.name}")
        self._closed = False

    @classmethod
    async def open(cls, path: Path, target: str, *, readonly: bool, timeout: float) -> "Database":
        """Connect to `target` (a path, or a ``file:`` URI when `readonly`) on a new thread."""
        db = cls(path, readonly=readonly, busy_ms=int(timeout * 1000))
        if not readonly:
            keep_freed_memory()
        db._thread.start()
        try:
            db._conn = await db._submit(
                partial(sqlite3.connect, target, uri=readonly, isolation_level=None, timeout=timeout)
            )
        except BaseException as e:
            db._closed = True
            db._jobs.put(_STOP)
            if isinstance(e, sqlite3.Error):
                raise sqlite_error(path, e) from None
            raise
        return db

    @property
    def closed(self) -> bool:
        return self._closed

    def check_writable(self) -> None:
        """StoreError if this database was opened read-only."""
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only")

    def _submit(self, fn: Callable[[], Any]) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._jobs.put((fut, fn))
        return fut

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(sqlite3_connection, *args)` on the database thread (one hop for a
        whole transaction or a whole read)."""
        if self._closed:
            raise StoreError(f"{self.path}: the store is closed")

        def run() -> Any:
            try:
                return fn(self._conn, *args)
            except StoreError:
                raise
            except sqlite3.Error as e:
                raise sqlite_error(self.path, e) from None
            except CompressionError as e:
                raise StoreError(f"{self.path} is corrupt: a compressed record does not decompress ({e})") from None
            except (pickle.UnpicklingError, EOFError) as e:
                raise StoreError(f"{self.path} is corrupt: a stored record does not decode ({e})") from None

        return await self._submit(run)

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """The rows of one query."""
        return await self.call(lambda c: c.execute(sql, params).fetchall())

    async def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        """The first row of one query (None: no row)."""
        return await self.call(lambda c: c.execute(sql, params).fetchone())

    async def close(self) -> None:
        """Refuse new calls, let the queued ones finish, close the connection, end the thread."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._submit(self._disconnect)
        finally:
            self._jobs.put(_STOP)

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __del__(self) -> None:
        # Never closed (an error on the way): close the connection on its thread, end the thread.
        conn = self._conn
        if not self._closed and conn is not None:
            self._jobs.put((None, conn.close))
            self._jobs.put(_STOP)
