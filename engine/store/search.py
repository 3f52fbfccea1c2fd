"""Find in a run: a full-text index (SQLite FTS5) over what was said.

What is indexed, one row per piece of text, with the run, batch, tick and agent it
belongs to:

    message   every committed outbox entry (its text; a structured payload as JSON),
              the operator's injected messages included; `agent` is the sender and
              `detail` says ``sender → recipients · kind · tags``
    note      a turn's notes for the operator
    error     a turn that failed: its error (and the raw reply, when it did not parse)

Two tables, created when a writer opens the file (`create`): ``search_fts``, the
FTS5 index (``unicode61`` tokens, diacritics folded), and ``search_upto``, how far each
run is indexed (its last batch). The index is contentless: it holds the words, not the
texts, which the batches already hold (a copy of them was a quarter of the file). A
row's rowid says where its text is: the batch (``rowid >> 20``), then a message's place
among the batch's outbox entries, or (bit 19 set) a turn record's place among its
records, twice, plus one for its error. A search decodes the entries and records of
the hits it shows, and marks the matching words itself (`_highlight`). Hits come in
order, never ranked, so no column sizes are kept either. ``agent`` holds one token per
agent (`agent_token`), so that a search for one agent's words is exact in the index. The recorder keeps the rows of up to `INDEX_EVERY_TICKS` tick batches and
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

import functools
import json
import pickle
import re
import sqlite3
import time
import unicodedata
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from lemming.engine.events import Event, MessageCommitted, TurnFinished
from lemming.engine.store.database import transaction
from lemming.engine.store.encoding import unpickle
from lemming.engine.store.errors import StoreError, UnknownLayout

if TYPE_CHECKING:
    from lemming.engine.store.runs import RunStore

SEARCH_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5(
    text, agent, content = '', columnsize = 0, tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TABLE IF NOT EXISTS search_upto (rid INTEGER PRIMARY KEY, batch INTEGER NOT NULL);
"""

#: Around each hit in `Hit.line`: where the matching words start and end (snippet markers).
MARK_START = "\x02"
MARK_END = "\x03"
#: Tick batches the recorder indexes together (and at most `INDEX_EVERY_ROWS` rows).
INDEX_EVERY_TICKS = 16
INDEX_EVERY_ROWS = 8192
#: FTS5's ``automerge``: the index's segments (one per chunk of ticks) are merged when
#: this many are at one level, each merge rewriting the rows it holds. FTS5's default, 4,
#: made merging 40% of a row's cost after 640 ticks; at 8 a row is rewritten half as
#: often (24,000 instructions a row instead of 29,600, docs/performance.md), and a search,
#: reading up to 7 segments a level instead of 3, takes as long. Set by every writer
#: that opens the file (a config row of the index, which any FTS5 reads).
AUTOMERGE = 8
#: Batches decoded per catch-up transaction.
CATCH_UP_CHUNK = 256
#: Hits are counted up to this many (`SearchResult.total`; more is shown as "1000+").
COUNT_CAP = 1_000
#: At most this many characters of one text are indexed (a runaway reply stays searchable
#: by its beginning without bloating the file).
MAX_TEXT = 20_000

#: (place in the batch, text, agent token) of one indexed piece (see the module's doc)
Row = tuple[int, str, str]
#: rowid = batch << BATCH_SHIFT | place; a turn record's place has TURN_BIT set
BATCH_SHIFT = 20
TURN_BIT = 1 << 19
#: Words of context a hit's line keeps around its first match (as FTS5's snippet()).
SNIPPET_TOKENS = 24


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
    """The index's tables (a writer's opening, inside its schema transaction). The index
    an earlier version kept (``search_text``, with a copy of every text) is dropped: the
    next search of each run builds the new one."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name='search_text'").fetchone():
        conn.execute("DROP TABLE search_text")
        conn.execute("DROP TABLE IF EXISTS search_upto")
    for stmt in SEARCH_SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)
    got = conn.execute("SELECT v FROM search_fts_config WHERE k = 'automerge'").fetchone()
    if got is None or got[0] != AUTOMERGE:
        conn.execute("INSERT INTO search_fts (search_fts, rank) VALUES ('automerge', ?)", (AUTOMERGE,))


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


_TOKENS: dict[str, str] = {}


def agent_token(agent: str) -> str:
    """An agent's name as one index token (whatever its characters)."""
    tok = _TOKENS.get(agent)
    if tok is None:
        if len(_TOKENS) > 1 << 14:
            _TOKENS.clear()
        tok = _TOKENS[agent] = "a" + agent.encode("utf-8", "surrogatepass").hex()
    return tok


def _note_of(rec: Any) -> str | None:
    parsed = rec.parsed
    if isinstance(parsed, dict):
        notes = parsed.get("notes")
        if isinstance(notes, str) and notes.strip():
            return _clip(notes)
    return None


def _error_of(rec: Any) -> str | None:
    if rec.status == "ok":
        return None
    parts = [f"{rec.status}: {rec.error or ''}"]
    if rec.parsed is None and rec.raw_output:
        parts.append(rec.raw_output)
    return _clip("\n".join(parts))


def rows_of_parts(entries: Sequence[Any], records: Sequence[Any]) -> list[Row]:
    """The pieces of text a batch adds to the index, from its outbox entries and its turn
    records (each in the batch's order), in rowid order."""
    rows: list[Row] = []
    for i, e in enumerate(entries):
        p = e.payload
        text = p.get("text") if type(p) is dict else None
        if type(text) is not str:
            text = e.text
        if text:
            rows.append((i, _clip(text), agent_token(e.agent)))
    for j, rec in enumerate(records):
        parsed = rec.parsed
        if type(parsed) is dict:
            notes = parsed.get("notes")
            if type(notes) is str and notes:
                notes = notes.strip()
                if notes:
                    rows.append((TURN_BIT | j << 1, notes[:MAX_TEXT], agent_token(rec.agent)))
        elif parsed is not None:
            note = _note_of(rec)  # a dict subclass
            if note is not None:
                rows.append((TURN_BIT | j << 1, note, agent_token(rec.agent)))
        if rec.status != "ok":
            error = _error_of(rec)
            if error is not None:
                rows.append((TURN_BIT | j << 1 | 1, error, agent_token(rec.agent)))
    return rows


def rows_of(events: Iterable[Event]) -> list[Row]:
    """The pieces of text a batch of events adds to the index."""
    entries: list[Any] = []
    records: list[Any] = []
    for ev in events:
        t = type(ev)
        if t is MessageCommitted:
            entries.append(ev.entry)  # type: ignore[attr-defined]
        elif t is TurnFinished:
            records.append(ev.record)  # type: ignore[attr-defined]
    return rows_of_parts(entries, records)


def _insert(conn: sqlite3.Connection, rid: int, batch: int, rows: Sequence[Row]) -> None:
    if rows:
        base = batch << BATCH_SHIFT
        # In rowid order (`rows_of_parts` makes them so): FTS5 writes out what it holds in
        # memory each time a rowid is not above the last one (five times the cost, in many
        # small segments).
        conn.executemany(
            "INSERT INTO search_fts (rowid, text, agent) VALUES (?,?,?)",
            [(base | place, text, agent) for (place, text, agent) in rows],
        )


def indexed_rows(conn: sqlite3.Connection) -> int:
    """How many pieces of text the index holds (a contentless table cannot be scanned:
    every row has an agent token, and they all start with "a")."""
    return conn.execute("SELECT count(*) FROM search_fts WHERE search_fts MATCH 'agent : a*'").fetchone()[0]


def _has_index(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name='search_fts'").fetchone() is not None


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


_TOKEN = re.compile(r"[^\W_]+")


@functools.lru_cache(maxsize=1 << 16)
def _fold(token: str) -> str:
    """A token as the index keeps it: lower case, diacritics removed (unicode61)."""
    if token.isascii():
        return token.lower()
    return "".join(c for c in unicodedata.normalize("NFKD", token.lower()) if not unicodedata.combining(c))


def terms_of(text: str) -> list[tuple[str, bool]]:
    """The folded words a search for `text` matches (word, whether as a prefix)."""
    out: list[tuple[str, bool]] = []
    for m in re.finditer(r'"([^"]+)"|(\S+)', text):
        phrase, word = m.group(1), m.group(2)
        prefix = phrase is None and word.endswith("*") and len(word) > 1
        tokens = [_fold(t) for t in _TOKEN.findall(phrase if phrase is not None else word.rstrip("*") if prefix else word)]
        out.extend((t, prefix and i == len(tokens) - 1) for i, t in enumerate(tokens))
    return out


def _highlight(text: str, terms: Sequence[tuple[str, bool]]) -> str:
    """The line of `text` that holds the first word matching `terms`, at most
    SNIPPET_TOKENS words of it around that word ('…' where cut), matching words between
    MARK_START and MARK_END."""
    exact = {t for t, p in terms if not p}
    prefixes = tuple(t for t, p in terms if p)

    def hit(tok: str) -> bool:
        f = _fold(tok)
        return f in exact or (bool(prefixes) and f.startswith(prefixes))

    words = _TOKEN.finditer(text)
    first = next((m for m in words if hit(m.group())), None)
    at = first.start() if first is not None else 0
    start = text.rfind("\n", 0, at) + 1
    end = text.find("\n", at)
    line = text[start: end if end >= 0 else len(text)]
    tokens = list(_TOKEN.finditer(line))
    lo, hi = 0, len(tokens)
    if hi > SNIPPET_TOKENS:
        i = next((k for k, m in enumerate(tokens) if first is not None and m.start() + start == at), 0)
        lo = max(0, min(i - 4, hi - SNIPPET_TOKENS))
        hi = lo + SNIPPET_TOKENS
    out: list[str] = []
    pos = tokens[lo].start() if lo > 0 else 0
    if lo > 0:
        out.append("…")
    for m in tokens[lo:hi]:
        out.append(line[pos: m.start()])
        out.append(MARK_START + m.group() + MARK_END if hit(m.group()) else m.group())
        pos = m.end()
    if hi < len(tokens):
        out.append("…")
    else:
        out.append(line[pos:])
    return "".join(out).strip()


def query(
    conn: sqlite3.Connection, match: str, segments: list[tuple[int, int | None]], agent: str | None, limit: int,
    offset: int,
) -> tuple[list[tuple[int, int, bytes | None, bytes | None]], int]:
    """The hits in the given (rid, last batch) segments, oldest first — (rowid, rid,
    the batch's body if the hit is a turn's, its messages if a message's) — and their
    total count."""
    where = " OR ".join("(b.rid=?" + (" AND b.id<=?)" if hi is not None else ")") for _, hi in segments)
    params: list[Any] = [f"text : ({match})" + (f" AND agent : {_quoted(agent_token(agent))}" if agent else "")]
    for rid, hi in segments:
        params.append(rid)
        if hi is not None:
            params.append(hi)
    src = f"search_fts f JOIN batches b ON b.id = (f.rowid >> {BATCH_SHIFT}) WHERE search_fts MATCH ? AND ({where})"
    try:
        # Counting every hit of a word said a million times is most of a search's time: past
        # COUNT_CAP the total is given as "at least".
        total = conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM {src} LIMIT {COUNT_CAP + 1})", params).fetchone()[0]
        rows = conn.execute(
            f"SELECT f.rowid, b.rid FROM {src} ORDER BY f.rowid LIMIT ? OFFSET ?", (*params, limit, offset)
        ).fetchall()
    except sqlite3.OperationalError as e:
        if "fts5" in str(e) or "syntax" in str(e):
            raise StoreError(f"cannot search for {match!r}: {e}") from None
        raise
    bodies: dict[int, bytes] = {}
    msgs: dict[int, bytes] = {}
    out = []
    for rowid, rid in rows:
        batch = rowid >> BATCH_SHIFT
        if rowid & TURN_BIT:
            if batch not in bodies:
                bodies[batch] = conn.execute("SELECT body FROM batches WHERE id=?", (batch,)).fetchone()[0]
        elif batch not in msgs:
            got = conn.execute("SELECT body FROM messages WHERE batch=?", (batch,)).fetchone()
            msgs[batch] = got[0] if got else b""
        out.append((rowid, rid, bodies.get(batch), msgs.get(batch)))
    return out, total


#: Batches whose decoded entries (and records) a SearchIndex keeps for the next search.
DECODED_BATCHES = 512


def _remember(cache: "OrderedDict[int, list[Any]]", batch: int, value: list[Any]) -> list[Any]:
    cache[batch] = value
    if len(cache) > DECODED_BATCHES:
        cache.popitem(last=False)
    return value


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
        #: batch → its outbox entries' rows / its turn records' rows, decoded for hits
        #: (a refined search or the next page finds most of its hits in the same batches)
        self._entries: OrderedDict[int, list[Any]] = OrderedDict()
        self._records: OrderedDict[int, list[Any]] = OrderedDict()

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

    def _hits(self, found: list[tuple[int, int, bytes | None, bytes | None]], run_of: dict[int, str],
              terms: list[tuple[str, bool]]) -> list[Hit]:
        """The hits `query` found, with their texts decoded from the batches."""
        st = self.store
        codec = st.codec
        entries, records = self._entries, self._records
        decode_entry = codec.entry_decoder()
        hits: list[Hit] = []
        for rowid, rid, body, msgs in found:
            batch, place = rowid >> BATCH_SHIFT, rowid & ((1 << BATCH_SHIFT) - 1)
            run = run_of.get(rid, str(rid))
            try:
                if place & TURN_BIT:
                    recs = records.get(batch)
                    if recs is None:
                        lines = st._split(body or b"")[1]
                        recs = _remember(records, batch, unpickle(lines) if lines else [])
                    rec = codec.record_at(recs, (place & ~TURN_BIT) >> 1)
                    if place & 1:
                        text, kind, detail = _error_of(rec) or "", "error", f"{rec.agent} · {rec.status}"
                    else:
                        text, kind, detail = _note_of(rec) or "", "note", f"{rec.agent} · notes"
                    hits.append(Hit(run, rec.tick, rec.agent, kind, detail, _highlight(text, terms)))
                else:
                    ents = entries.get(batch)
                    if ents is None:
                        ents = _remember(entries, batch, st._unpack(msgs) if msgs else [])
                    e = decode_entry(ents[place])
                    hits.append(Hit(run, e.tick, e.agent, "message", describe(e), _highlight(_clip(e.text), terms)))
            except (IndexError, TypeError, ValueError, pickle.UnpicklingError, EOFError) as err:
                raise StoreError(f"{st.path}: the search index points at a text batch {batch} does not hold ({err});"
                                 " the index is damaged") from None
        return hits

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
        found, total = await st.db.call(query, match, segments, agent, limit, offset)
        try:
            hits = self._hits(found, run_of, terms_of(text))
        except UnknownLayout:  # written by a newer engine since this store opened
            await st._reload_codec()
            hits = self._hits(found, run_of, terms_of(text))
        # A fork's hits from its parent are part of the fork's own history.
        own = run_of[lineage[0][0]]
        for h in hits:
            h.run_id = own
        return SearchResult(text, hits, total, (time.perf_counter() - t0) * 1000, indexed)


def jsonable(result: SearchResult) -> str:
    """A search's hits as JSON lines (what `lemming search --json` prints)."""
    return "".join(json.dumps(h.to_dict(), ensure_ascii=False, sort_keys=True) + "\n" for h in result.hits)
