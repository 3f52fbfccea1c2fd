"""Find in a run: the store's FTS5 index over what was said, and `lemming search`."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from lemming.engine.events import MessageCommitted, TurnFinished
from lemming.engine.store import RunStore, StoreError
from lemming.engine.store.search import SearchIndex, fts_query
from lemming.tui.cli import main
from tests.test_store import record_run, rich_org


def _script(engine, t: int) -> None:  # noqa: ANN001
    if t == 3:
        engine.inject("the zebra quartz protocol starts now", ["bob"])
    elif t == 8:
        engine.inject("ZEBRA sighted again — quartz-free", ["alice", "carol"])


async def _recorded(tmp_path: Path, ticks: int = 12):
    org_dir = rich_org(tmp_path / "org")
    db = tmp_path / "runs.db"
    store, engine, _ = await record_run(org_dir, db, ticks, seed=5, on_tick=_script)
    return store, engine, db


def _said(events, word: str) -> set[tuple[int, str]]:
    """(tick, agent) of every message whose text holds `word` (the ground truth)."""
    return {(e.entry.tick, e.entry.agent) for e in events
            if type(e) is MessageCommitted and word.lower() in e.entry.text.lower()}


async def test_search_finds_every_message_at_its_tick(tmp_path: Path) -> None:
    store, engine, db = await _recorded(tmp_path)
    try:
        events = await store.events(engine.run_id, prompts=False)
        idx = SearchIndex(store)
        res = await idx.search(engine.run_id, "zebra")
        assert {(h.tick, h.agent) for h in res.hits} == _said(events, "zebra")
        assert [h.agent for h in res.hits] == ["operator", "operator"]
        first, second = res.hits
        assert first.tick < second.tick  # oldest first
        assert first.detail == "operator → bob · message · #operator"
        assert "\x02zebra\x03" in first.line and first.plain_line == "the zebra quartz protocol starts now"
        # every word must be there, in any order; diacritics and case folded
        assert [h.tick for h in (await idx.search(engine.run_id, "quartz ZEBRA")).hits] == [first.tick, second.tick]
        assert [h.tick for h in (await idx.search(engine.run_id, "zébra protocol")).hits] == [first.tick]
        assert [h.tick for h in (await idx.search(engine.run_id, "zeb*")).hits] == [first.tick, second.tick]
        assert (await idx.search(engine.run_id, '"quartz protocol"')).total == 1
        # each agent message is findable by its own words, at its own tick
        msgs = [e.entry for e in events if type(e) is MessageCommitted and e.entry.agent != "operator"]
        assert len(msgs) > 10
        for entry in msgs[:: max(1, len(msgs) // 8)]:
            got = await idx.search(engine.run_id, f'"{entry.text}"', limit=1000)
            assert (entry.tick, entry.agent) in {(h.tick, h.agent) for h in got.hits}
        # a turn that did not parse is findable by its error
        bad = [e.record for e in events if type(e) is TurnFinished and e.record.status != "ok"]
        assert bad, "the rich org's sim makes malformed replies"
        got = await idx.search(engine.run_id, "violation", limit=1000, agent=bad[0].agent)
        assert (bad[0].tick, bad[0].agent, "error") in {(h.tick, h.agent, h.kind) for h in got.hits}
        assert all(h.agent == bad[0].agent for h in got.hits)
    finally:
        await store.close()


async def test_words_are_taken_literally(tmp_path: Path) -> None:
    store, engine, _ = await _recorded(tmp_path, ticks=4)
    try:
        idx = SearchIndex(store)
        for text in ('quartz"', "quartz-free", "AND", "NEAR(x", "col:umn", "*", "^x"):
            await idx.search(engine.run_id, text)  # no FTS5 syntax error reaches the operator
        assert fts_query('a "b c" d*') == '"a" AND "b c" AND "d"*'
        with pytest.raises(StoreError, match="nothing to search for"):
            await idx.search(engine.run_id, "   ")
    finally:
        await store.close()


async def test_a_run_recorded_without_the_index_is_indexed_at_its_first_search(tmp_path: Path) -> None:
    store, engine, db = await _recorded(tmp_path)
    run_id = engine.run_id
    before = [(h.tick, h.agent, h.kind, h.line) for h in (await SearchIndex(store).search(run_id, "quartz")).hits]
    await store.close()
    # what an older lemming leaves: no index at all
    with sqlite3.connect(db) as c:
        c.execute("DROP TABLE search_fts")
        c.execute("DROP TABLE search_upto")
    # a replay session's read-only store: the search builds the index through a writer
    ro = await RunStore.open(db, readonly=True)
    try:
        idx = SearchIndex(ro)
        assert await idx.unindexed(run_id) == -1  # no index at all yet
        res = await idx.search(run_id, "quartz")
        assert [(h.tick, h.agent, h.kind, h.line) for h in res.hits] == before
    finally:
        await ro.close()
    # the index of an earlier version (a copy of every text): dropped, and built anew
    with sqlite3.connect(db) as c:
        c.execute("DROP TABLE search_fts")
        c.execute("DELETE FROM search_upto")
        c.execute("CREATE VIRTUAL TABLE search_text USING fts5(text, agent, detail UNINDEXED)")
        c.execute("INSERT INTO search_upto VALUES (1, 9999)")
    store = await RunStore.open(db)
    try:
        with sqlite3.connect(db) as c:
            assert not c.execute("SELECT 1 FROM sqlite_master WHERE name='search_text'").fetchone()
        res = await SearchIndex(store).search(run_id, "quartz")
        assert res.indexed_now > 12
        assert [(h.tick, h.agent, h.kind, h.line) for h in res.hits] == before
        again = await SearchIndex(store).search(run_id, "quartz")
        assert again.indexed_now == 0 and again.total == len(before)
    finally:
        await store.close()
    # resumed by this lemming: new batches land behind the caught-up index and are found
    assert await asyncio.to_thread(main, ["resume", run_id, "--db", str(db), "--ticks", "3"]) == 0
    store = await RunStore.open(db, readonly=True)
    try:
        idx = SearchIndex(store)
        assert await idx.unindexed(run_id) == 0
        events = await store.events(run_id, prompts=False)
        word = next(e.entry.text.split()[0] for e in events if type(e) is MessageCommitted and e.entry.tick > 12)
        ticks = {h.tick for h in (await idx.search(run_id, word, limit=10_000)).hits}
        assert any(t > 12 for t in ticks)
    finally:
        await store.close()


async def test_a_fork_finds_its_parents_history_up_to_the_fork(tmp_path: Path) -> None:
    store, engine, db = await _recorded(tmp_path)
    parent = engine.run_id
    await store.close()
    assert await asyncio.to_thread(main, ["fork", parent, "--at", "5", "--ticks", "3", "--db", str(db)]) == 0
    store = await RunStore.open(db)
    try:
        fork = next(r.id for r in await store.list_runs() if r.parent_run == parent)
        res = await SearchIndex(store).search(fork, "zebra")
        assert [h.run_id for h in res.hits] == [fork]
        assert all(h.tick <= 5 for h in res.hits) and len(res.hits) == 1  # the tick-8 inject is not the fork's
    finally:
        await store.close()


def test_lemming_search_prints_tick_agent_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, engine, db = asyncio.run(_recorded(tmp_path))
    asyncio.run(store.close())
    assert main(["search", "zebra", "quartz", "--db", str(db)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "operator" in out[0] and "the zebra quartz protocol starts now" in out[0]
    assert "2 match(es) in run " + engine.run_id in out[-1]
    assert main(["search", "zebra", "--run", engine.run_id[:12], "--db", str(db), "--json"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [h["agent"] for h in hits] == ["operator", "operator"]
    assert hits[0]["line"] == "the zebra quartz protocol starts now" and hits[0]["run_id"] == engine.run_id
    assert main(["search", "nonexistentword", "--db", str(db)]) == 1
    assert "no match" in capsys.readouterr().out
    assert main(["search", "x", "--db", str(tmp_path / "none.db")]) == 1
    assert "does not exist" in " ".join(capsys.readouterr().err.split())


async def test_ticks_are_indexed_in_chunks_and_a_search_meanwhile_catches_up(tmp_path: Path) -> None:
    """The recorder indexes INDEX_EVERY_TICKS tick batches at a time: a search between
    chunks (here through a second writer, as a replay session's would) indexes the rest
    first, the recorder's next chunk adds only what is still missing, and a recorder that
    dies with a chunk pending leaves nothing a search does not find."""
    from lemming.engine.engine import Engine
    from lemming.engine.org import load_org
    from lemming.engine.store import search

    class Keep:
        def __init__(self) -> None:
            self.batches: list = []

        async def write(self, events) -> None:  # noqa: ANN001
            self.batches.append(list(events))

    org = load_org(rich_org(tmp_path / "org"))
    engine = Engine(org, seed=5, recorder=(kept := Keep()))
    await engine.run(ticks=40)
    batches = kept.batches
    db = tmp_path / "runs.db"
    store = await RunStore.open(db)
    run_id = engine.run_id
    await store.create_run(run_id=run_id, org_root=org.root, seed=5, definitions_hash=None, target_ticks=40)
    rec = store.recorder(run_id)

    def n_rows() -> int:
        with sqlite3.connect(db) as c:
            return search.indexed_rows(c)

    def upto() -> int:
        with sqlite3.connect(db) as c:
            got = c.execute("SELECT batch FROM search_upto").fetchone()
            return got[0] if got else 0

    expected = [len(search.rows_of(b)) for b in batches]
    try:
        await rec.write(batches[0])  # the start: indexed at once
        assert n_rows() == expected[0] and upto() == 1
        for b in batches[1:6]:
            await rec.write(b)
        assert n_rows() == expected[0]  # five ticks wait for their chunk
        reader = await RunStore.open(db, readonly=True)
        try:
            idx = SearchIndex(reader)
            assert await idx.unindexed(run_id) == 5
            word = next(e.entry.text.split()[0] for b in batches[1:6] for e in b if type(e) is MessageCommitted)
            assert (await idx.search(run_id, word)).indexed_now == 5  # caught up through a writer
            assert n_rows() == sum(expected[:6])
        finally:
            await reader.close()
        for b in batches[6:search.INDEX_EVERY_TICKS + 1]:
            await rec.write(b)  # the chunk: only the ticks the search did not index
        assert n_rows() == sum(expected[:search.INDEX_EVERY_TICKS + 1])
        assert upto() == search.INDEX_EVERY_TICKS + 1
        for b in batches[search.INDEX_EVERY_TICKS + 1:30]:
            await rec.write(b)
    finally:
        await store.close()  # the recorder "dies" with ticks unindexed
    assert n_rows() < sum(expected[:30])
    store = await RunStore.open(db)
    try:
        idx = SearchIndex(store)
        assert await idx.unindexed(run_id) == 30 - search.INDEX_EVERY_TICKS - 1
        await idx.catch_up(run_id)
        assert n_rows() == sum(expected[:30])
        rec = store.recorder(run_id)
        for b in batches[30:]:
            await rec.write(b)  # the last is the run's stop: everything indexed, once
        assert n_rows() == sum(expected) and await idx.unindexed(run_id) == 0
    finally:
        await store.close()


async def test_a_writer_sets_the_index_merge_width(tmp_path: Path) -> None:
    """Every writer that opens the file sets FTS5's automerge to search.AUTOMERGE (a new
    file, and one whose index an older lemming made with FTS5's default); a search
    finds the same places either way."""
    from lemming.engine.store import search

    store, engine, db = await _recorded(tmp_path)
    before = await SearchIndex(store).search(engine.run_id, "zebra")
    await store.close()
    assert before.total == 2

    def automerge() -> int | None:
        with sqlite3.connect(db) as c:
            got = c.execute("SELECT v FROM search_fts_config WHERE k = 'automerge'").fetchone()
            return got[0] if got else None

    assert automerge() == search.AUTOMERGE
    with sqlite3.connect(db) as c:  # as an older lemming left it: FTS5's default, no row
        c.execute("DELETE FROM search_fts_config WHERE k = 'automerge'")
    assert automerge() is None
    reader = await RunStore.open(db, readonly=True)
    await reader.close()
    assert automerge() is None  # a reader never changes the file
    store = await RunStore.open(db)
    try:
        assert automerge() == search.AUTOMERGE
        found = await SearchIndex(store).search(engine.run_id, "zebra")
        assert [(h.tick, h.agent, h.line) for h in found.hits] == [(h.tick, h.agent, h.line) for h in before.hits]
    finally:
        await store.close()
