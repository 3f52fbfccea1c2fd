"""Find in a run: a full-text index (SQLite FTS5) over what was said.

What is indexed, one row per piece of text, with the run, batch, tick and agent it
belongs to:

    message   every committed outbox entry (its text; a structured payload as JSON),
              the operator's injected messages included; `agent` is the sender and
              `detail` says ``sender → recipients · kind · tags``
    note      a turn's notes for the operator
    error     a turn that failed: its error (and the raw reply, when it did not parse)

Two tables, created when a writer opens the file (`create`): ``search_text``, the
FTS5 index (``unicode61`` tokens, diacritics folded; no column sizes: hits are given
in order, never ranked), and ``search_upto``, how far each run is indexed (its last
batch). The recorder keeps the rows of up to `INDEX_EVERY_TICKS` tick batches and
indexes them in the transaction of the last (`index_chunk`), and at once with any
other batch (a start, a stop, a boundary's commands): FTS5 pays per transaction for
each segment it writes and merges, so a chunk of ticks costs half as much per row as
one tick does. A crash leaves the chunk's committed batches unindexed and
``search_upto`` behind them: a search catches up first. A run recorded by an older
lemming, or one whose index fell behind, is caught up batch by batch by `RunStore`'s
caller through `catch_up` before a search (see `SearchIndex`).

The index is an accelerator, not a record: dropping both tables loses nothing that
the batches do not hold, and the next search builds it again.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from lemming.engine.events import Event, MessageCommitted, TurnFinished
from lemming.engine.store.database import transaction
from lemming.engine.store.errors import StoreError, UnknownLayout

if TYPE_CHECKING:
    from lemming.engine.store.runs import RunStore

SEARCH_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS search_text USING fts5(
    text, agent, detail UNINDEXED, rid UNINDEXED, batch UNINDEXED, tick UNINDEXED, kind UNINDEXED,
    tokenize = 'unicode61 remove_diacritics 2', columnsize = 0
);
CREATE TABLE IF NOT EXISTS search_upto (rid INTEGER PRIMARY KEY, batch INTEGER NOT NULL);
"""

#: Around each hit in `Hit.line`: where the matching words start and end (snippet markers).
MARK_START = "\x02"
MARK_END = "\x03"
#: Tick batches the recorder indexes together (and at most `INDEX_EVERY_ROWS` rows).
INDEX_EVERY_TICKS = 16
INDEX_EVERY_ROWS = 8192
#: Batches decoded per catch-up transaction.
CATCH_UP_CHUNK = 256
#: Hits are counted up to this many (`SearchResult.total`; more is shown as "1000+").
COUNT_CAP = 1_000
#: At most this many characters of one text are indexed (a runaway reply stays searchable
#: by its beginning without bloating the file).
MAX_TEXT = 20_000

#: (text, detail, tick, agent, kind) of one indexed piece
Row = tuple[str, str, int, str, str]


@dataclass(slots=True)
class Hit:
    """One place a search matched."""

    run_id: str
    tick: int
    agent: str
    kind: str  # message, note, error
    detail: str  # for a message: sender → recipients · kind · tags
    line: str  # the matching line, matched words between MARK_START and MARK_END

    @property
    def plain_line(self) -> str:
        """The matching line without the match markers."""
        return self.line.replace(MARK_START, "").replace(MARK_END, "")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["line"] = self.plain_line
        return d


@dataclass(slots=True)
class SearchResult:
    """The hits of one search (oldest first), how many there are in all, and how long it took."""

    query: str
    hits: list[Hit]
    total: int  # COUNT_CAP + 1: more than COUNT_CAP
    elapsed_ms: float
    indexed_now: int = 0  # batches the search had to index first (a run recorded without the index)

    @property
    def total_text(self) -> str:
        """The number of hits as said to a person ("1000+" past the cap)."""
        return f"{COUNT_CAP}+" if self.total > COUNT_CAP else str(self.total)


def create(conn: sqlite3.Connection) -> None:
    """The index's tables (a writer's opening, inside its schema transaction)."""
    for stmt in SEARCH_SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)


def _clip(text: str) -> str:
    text = text.strip()
    return text[:MAX_TEXT]


def describe(entry: Any) -> str:
    """``sender → recipients · kind · tags`` for an outbox entry."""
    to = ", ".join(entry.recipients) if entry.recipients else "all"
    out = f"{entry.agent} → {to} · {entry.kind}"
    if entry.tags:
        out += " · " + " ".join(f"#{t}" for t in entry.tags)
    return out


def rows_of(events: Iterable[Event]) -> list[Row]:
    """The pieces of text a batch of events adds to the index."""
    rows: list[Row] = []
    for ev in events:
        t = type(ev)
        if t is MessageCommitted:
            e = ev.entry  # type: ignore[attr-defined]
            text = e.text
            if text:
                rows.append((_clip(text), describe(e), e.tick, e.agent, "message"))
        elif t is TurnFinished:
            rec = ev.record  # type: ignore[attr-defined]
            parsed = rec.parsed
            if isinstance(parsed, dict):
                notes = parsed.get("notes")
                if isinstance(notes, str) and notes.strip():
                    rows.append((_clip(notes), f"{rec.agent} · notes", rec.tick, rec.agent, "note"))
            if rec.status != "ok":
                parts = [f"{rec.status}: {rec.error or ''}"]
                if parsed is None and rec.raw_output:
                    parts.append(rec.raw_output)
                rows.append((_clip("\n".join(parts)), f"{rec.agent} · {rec.status}", rec.tick, rec.agent, "error"))
    return rows


def _insert(conn: sqlite3.Connection, rid: int, batch: int, rows: Sequence[Row]) -> None:
    if rows:
        conn.executemany(
            "INSERT INTO search_text (text, detail, rid, batch, tick, agent, kind) VALUES (?,?,?,?,?,?,?)",
            [(text, detail, rid, batch, tick, agent, kind) for (text, detail, tick, agent, kind) in rows],
        )


def _has_index(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name='search_upto'").fetchone() is not None


def index_chunk(conn: sqlite3.Connection, rid: int, chunk: Sequence[tuple[int, Sequence[Row]]]) -> None:
    """Index a run's batches (batch id, rows), oldest first, the last being written now
    (inside its transaction), if the run's index reaches the batch before the chunk's
    first; otherwise leave them to `catch_up` (whose order keeps the index whole). A
    catch-up that indexed the chunk's first batches meanwhile is taken into account."""
    if not chunk:
        return
    first = chunk[0][0]
    got = conn.execute("SELECT batch FROM search_upto WHERE rid=?", (rid,)).fetchone()
    prev = conn.execute(
        "SELECT id FROM batches WHERE rid=? AND id<? ORDER BY tick DESC, id DESC LIMIT 1", (rid, first)
    ).fetchone()
    if got is None:
        if prev is not None:
            return  # recorded before the index existed: caught up at the next search
        start = 0
    elif prev is not None and got[0] == prev[0] or prev is None and got[0] < first:
        start = 0
    else:
        done = [i for i, (batch, _) in enumerate(chunk) if batch == got[0]]
        if not done:
            return  # behind: caught up at the next search
        start = done[0] + 1  # a search caught up part of the chunk already
    for batch, rows in chunk[start:]:
        _insert(conn, rid, batch, rows)
    conn.execute("INSERT OR REPLACE INTO search_upto (rid, batch) VALUES (?,?)", (rid, chunk[-1][0]))


def pending(conn: sqlite3.Connection, rid: int) -> tuple[int, int]:
    """(last indexed batch, batches of the run not indexed yet)."""
    got = conn.execute("SELECT batch FROM search_upto WHERE rid=?", (rid,)).fetchone()
    upto = got[0] if got else 0
    n = conn.execute("SELECT count(*) FROM batches WHERE rid=? AND id>?", (rid, upto)).fetchone()[0]
    return upto, n


def fetch_unindexed(conn: sqlite3.Connection, rid: int, after: int, limit: int) -> list[tuple]:
    """(batch, body, messages' body) of up to `limit` of the run's batches after `after`."""
    return conn.execute(
        "SELECT b.id, b.body, m.body FROM batches b LEFT JOIN messages m ON m.batch = b.id"
        " WHERE b.id>? AND +b.rid=? ORDER BY b.id LIMIT ?",
        (after, rid, limit),
    ).fetchall()


def store_caught_up(conn: sqlite3.Connection, rid: int, after: int, upto: int, rows: list[tuple[int, list[Row]]]) -> bool:
    """Add a decoded chunk of batches (after..upto] to the index, in one transaction; False
    when someone else (the recorder) moved the run's index meanwhile (nothing written)."""
    with transaction(conn):
        got = conn.execute("SELECT batch FROM search_upto WHERE rid=?", (rid,)).fetchone()
        if (got[0] if got else 0) != after:
            return False
        for batch, batch_rows in rows:
            _insert(conn, rid, batch, batch_rows)
        conn.execute("INSERT OR REPLACE INTO search_upto (rid, batch) VALUES (?,?)", (rid, upto))
    return True


_WORD = re.compile(r"\S+")


def fts_query(text: str) -> str:
    """The operator's words as an FTS5 query: every word must appear (in any order), each
    taken literally (quotes, dashes and ``AND``/``OR`` mean nothing special); a word
    ending in ``*`` matches as a prefix; ``"several words"`` is a phrase."""
    parts: list[str] = []
    for m in re.finditer(r'"([^"]+)"|(\S+)', text):
        phrase, word = m.group(1), m.group(2)
        if phrase is not None:
            words = [w for w in _WORD.findall(phrase)]
            if words:
                parts.append('"' + " ".join(w.replace('"', '""') for w in words) + '"')
            continue
        prefix = word.endswith("*") and len(word) > 1
        word = word.rstrip("*") if prefix else word
        token = _quoted(word)
        parts.append(token + ("*" if prefix else ""))
    return " AND ".join(parts)


def _quoted(word: str) -> str:
    return '"' + word.replace('"', '""') + '"'


def _line_of(snippet: str) -> str:
    """The line of a snippet that holds its first match."""
    i = snippet.find(MARK_START)
    if i < 0:
        return snippet.split("\n", 1)[0]
    start = snippet.rfind("\n", 0, i) + 1
    end = snippet.find("\n", i)
    return snippet[start: end if end >= 0 else len(snippet)].strip()


def query(
    conn: sqlite3.Connection, match: str, segments: list[tuple[int, int | None]], run_of: dict[int, str],
    agent: str | None, limit: int, offset: int,
) -> tuple[list[Hit], int]:
    """Hits in the given (rid, last batch) segments, oldest first, and their total count."""
    where = " OR ".join("(rid=?" + (" AND batch<=?)" if hi is not None else ")") for _, hi in segments)
    params: list[Any] = [match]
    for rid, hi in segments:
        params.append(rid)
        if hi is not None:
            params.append(hi)
    # `agent` is indexed too, so that one agent's words are found through the index (the
    # query names the column it searches; the exact name is checked after).
    params[0] = f"text : ({match})"
    if agent is not None:
        params[0] += " AND agent : (" + _quoted(agent) + ")"
    cond = f"search_text MATCH ? AND ({where})"
    if agent is not None:
        cond += " AND agent=?"
        params.append(agent)
    try:
        # Counting every hit of a word said a million times is most of a search's time: past
        # COUNT_CAP the total is given as "at least".
        total = conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM search_text WHERE {cond} LIMIT {COUNT_CAP + 1})", params
        ).fetchone()[0]
        rows = conn.execute(
            f"SELECT rid, tick, agent, kind, detail, snippet(search_text, 0, char(2), char(3), '…', 24)"
            f" FROM search_text WHERE {cond} ORDER BY rowid LIMIT ? OFFSET ?",
            (*params, limit, offset),
        ).fetchall()
    except sqlite3.OperationalError as e:
        if "fts5" in str(e) or "syntax" in str(e):
            raise StoreError(f"cannot search for {match!r}: {e}") from None
        raise
    hits = [Hit(run_of.get(rid, str(rid)), tick, agent_, kind, detail, _line_of(snip))
            for rid, tick, agent_, kind, detail, snip in rows]
    return hits, total


class SearchIndex:
    """Search the runs of a `RunStore`: `await SearchIndex(store).search(run_id, "words")`.

    A run's index is brought up to date before searching (a run recorded before the
    index existed is indexed whole the first time), through a short-lived writer when
    the store is read-only, unless `build` is False (a strictly read-only session):
    then what is indexed is searched, and `unindexed` says what is not.
    """

    def __init__(self, store: "RunStore", *, build: bool = True) -> None:
        self.store = store
        #: whether a read-only store's missing index may be built through a writer
        self.build = build

    async def _lineage(self, run_id: str) -> list[tuple[int, int, int | None]]:
        run = await self.store._run_row(run_id)
        return await self.store._lineage(run)

    async def catch_up(self, run_id: str) -> int:
        """Index the run's (and its ancestors') batches the index lacks; returns how many.

        A read-only store (replay) catches up through a short-lived writer on the same
        file; where the file cannot be written, nothing is indexed (see `unindexed`)."""
        st = self.store
        if not st.readonly:
            return await self._catch_up(st, run_id)
        if not self.build or await self.unindexed(run_id) == 0:
            return 0
        from lemming.engine.store.runs import RunStore

        try:
            writer = await RunStore.open(st.path)
        except StoreError:
            return 0
        try:
            return await self._catch_up(writer, run_id)
        finally:
            await writer.close()

    @staticmethod
    async def _catch_up(st: "RunStore", run_id: str) -> int:
        db = st.db
        done = 0
        run = await st._run_row(run_id)
        for rid, _, _ in await st._lineage(run):
            while True:
                after, _ = await db.call(pending, rid)
                raw = await db.call(fetch_unindexed, rid, after, CATCH_UP_CHUNK)
                if not raw:
                    break
                chunk: list[tuple[int, list[Row]]] = []
                for batch, body, msgs in raw:
                    try:
                        events = st._decode_batch(body, msgs)
                    except UnknownLayout:
                        await st._reload_codec()
                        events = st._decode_batch(body, msgs)
                    chunk.append((batch, rows_of(events)))
                if await db.call(store_caught_up, rid, after, raw[-1][0], chunk):
                    done += len(raw)
        return done

    async def unindexed(self, run_id: str) -> int:
        """Batches of the run (and the ancestors it shares) that a search would not see."""
        if not await self.store.db.call(_has_index):
            return -1
        n = 0
        for rid, _, _ in await self._lineage(run_id):
            n += (await self.store.db.call(pending, rid))[1]
        return n

    async def search(
        self, run_id: str, text: str, *, agent: str | None = None, limit: int = 200, offset: int = 0,
    ) -> SearchResult:
        """The places in the run where every word of `text` was said, oldest first."""
        match = fts_query(text)
        if not match:
            raise StoreError("nothing to search for: give at least one word")
        t0 = time.perf_counter()
        indexed = await self.catch_up(run_id)
        st = self.store
        if not await st.db.call(_has_index):
            raise StoreError(f"{st.path} has no search index yet and cannot be written here; search a writable copy")
        lineage = await self._lineage(run_id)
        segments = [(rid, hi) for rid, _, hi in lineage]
        run_of: dict[int, str] = {}
        for rid, _, _ in lineage:
            row = await st.db.one("SELECT id FROM runs WHERE rid=?", (rid,))
            run_of[rid] = row[0] if row else str(rid)
        hits, total = await st.db.call(query, match, segments, run_of, agent, limit, offset)
        # A fork's hits from its parent are part of the fork's own history.
        own = run_of[lineage[0][0]]
        for h in hits:
            h.run_id = own
        return SearchResult(text, hits, total, (time.perf_counter() - t0) * 1000, indexed)


def jsonable(result: SearchResult) -> str:
    """A search's hits as JSON lines (what `lemming search --json` prints)."""
    return "".join(json.dumps(h.to_dict(), ensure_ascii=False, sort_keys=True) + "\n" for h in result.hits)
