"""What the fixed-reply turn's essential work costs written flat, without the engine.

`lemming bench engine`'s fixed-reply figure is the engine's own cost per agent-turn.
This script measures a floor for it: the same organisation shape (agents reading 3
random others, every agent firing every tick), the same 2 KB prompt shape (system
message, then the JSON context with the inbox's new and earlier entries, memory,
credits), sha256 of the prompt, the same fixed reply read with json.loads and a shape
check, a record per turn, the tick's records pickled and zstd-compressed, and one SQLite
transaction per tick (a batch row, turn rows, message rows, FTS5 rows). It checks
nothing else: no validation of items past their shape, no events, no retries, no
concurrency limits, no coroutines, no snapshots. It is a yardstick for where the
engine's time goes (docs/performance.md), not a second engine.

    .venv/bin/python scripts/turn_floor.py [AGENTS] [TICKS]

Prints µs per turn for the turn's work, the encoding, and SQLite (which the engine runs
on its database thread, where it releases the GIL).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import sqlite3
import sys
import tempfile
import time

from lemming.engine.prompt import REPLY_SCHEMA_TEXT
from lemming.engine.store.encoding import BODY_LEVEL, Compressor
from lemming.tui.bench.engine import FIXED_REPLY

SYSTEM_TAIL = (
    "## How this organisation works\nThe organisation runs in ticks. Agents talk only by writing entries "
    "into their own outbox; an agent sees the outboxes it is allowed to read. What you write this tick is "
    "read by others from the next tick on. Every turn costs credits (every reply of it).\n\n" + REPLY_SCHEMA_TEXT
)


def main(agents: int, ticks: int) -> None:
    with tempfile.TemporaryDirectory(prefix="turn-floor-") as tmp:
        run(agents, ticks, os.path.join(tmp, "floor.db"))


def run(agents: int, ticks: int, path: str) -> None:
    rng = random.Random(1)
    names = [f"a{i:05d}" for i in range(agents)]
    reads = {n: sorted(rng.sample([m for m in names if m != n], 3)) for n in names}
    readers: dict[str, list[str]] = {n: [] for n in names}
    for n, rs in reads.items():
        for r in rs:
            readers[r].append(n)
    system = {n: f"You are {n}, Worker.\n\nA benchmark agent.\n\n## Instructions\nRead, then write one short message.\n\n{SYSTEM_TAIL}" for n in names}
    reads_json = {n: json.dumps(reads[n]) for n in names}
    readers_json = {n: json.dumps(readers[n]) for n in names}
    outbox: dict[str, list[tuple[int, str]]] = {n: [] for n in names}  # (tick, the entry's JSON view)
    memory: dict[str, dict] = {n: {} for n in names}
    credits = {n: 1e9 for n in names}
    compress = Compressor(BODY_LEVEL)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE batches (id INTEGER PRIMARY KEY, tick INT, body BLOB)")
    db.execute("CREATE TABLE turns (batch INT, agent TEXT, tick INT, status TEXT)")
    db.execute("CREATE TABLE messages (id TEXT PRIMARY KEY, batch INT)")
    db.execute("CREATE VIRTUAL TABLE fts USING fts5(text, agent UNINDEXED)")
    spent = [0.0, 0.0, 0.0]  # turn work, encoding, SQLite

    def tick(t: int) -> None:
        t0 = time.perf_counter()
        records = []
        said = []
        for n in names:
            new, earlier = [], []
            for src in reads[n]:
                for at, view in outbox[src][-3:]:
                    (new if at == t - 1 else earlier).append(view)
            user = (
                'Tick %d. Everything you know this turn:\n```json\n{"credits_left": %s, "inbox": {"earlier": [%s], '
                '"new": [%s], "not_shown": 0}, "max_reply_tokens": 400, "memory": %s, "tick": %d, "tool_results": [], '
                '"you": "%s", "you_read_outboxes_of": %s, "your_outbox_is_read_by": %s}\n```\nReply with the JSON object only.'
            ) % (t, repr(round(credits[n], 6)), ", ".join(earlier), ", ".join(new), json.dumps(memory[n], sort_keys=True),
                 t, n, reads_json[n], readers_json[n])
            prompt = [{"role": "system", "content": system[n]}, {"role": "user", "content": user}]
            digest = hashlib.sha256(json.dumps(prompt, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
            estimate = (len(system[n]) + len(user) + 3) // 4
            reply = json.loads(FIXED_REPLY)
            entries, updates = reply.get("outbox_entries"), reply.get("memory_updates")
            if type(entries) is not list or type(updates) is not list:
                raise ValueError("not a reply")
            cost = (estimate * 1.0 + 40 * 4.0) / 1e6
            records.append({"tick": t, "agent": n, "prompt": prompt, "prompt_hash": digest, "raw_output": FIXED_REPLY,
                            "parsed": reply, "cost": cost, "status": "ok", "usage": (estimate, 40), "started_at": time.time()})
            for i, e in enumerate(entries):
                said.append((f"{n}-{t}-{i}", n, e["kind"], e["payload"]))
            for u in updates:
                memory[n][u["key"]] = u["value"]
            credits[n] = round(credits[n] - cost, 12)
        for id_, n, kind, payload in said:
            view = json.dumps({"from": n, "id": id_, "kind": kind, "payload": payload, "tick": t}, sort_keys=True)
            box = outbox[n]
            box.append((t, view))
            if len(box) > 6:
                del box[0]
        t1 = time.perf_counter()
        body = compress(pickle.dumps((records, said), 5))
        t2 = time.perf_counter()
        db.execute("BEGIN")
        batch = db.execute("INSERT INTO batches (tick, body) VALUES (?, ?)", (t, body)).lastrowid
        db.executemany("INSERT INTO turns VALUES (?, ?, ?, ?)", [(batch, r["agent"], t, r["status"]) for r in records])
        db.executemany("INSERT INTO messages VALUES (?, ?)", [(m[0], batch) for m in said])
        db.executemany("INSERT INTO fts VALUES (?, ?)", [(m[3]["text"], m[1]) for m in said])
        db.execute("COMMIT")
        t3 = time.perf_counter()
        for i, d in enumerate((t1 - t0, t2 - t1, t3 - t2)):
            spent[i] += d

    for t in range(1, 4):  # warm up: full inboxes from the third tick on
        tick(t)
    spent[:] = [0.0, 0.0, 0.0]
    for t in range(4, 4 + ticks):
        tick(t)
    db.close()
    turns = agents * ticks
    work, encode, sql = (s / turns * 1e6 for s in spent)
    print(f"{agents} agents × {ticks} ticks, µs per turn: turn work {work:.1f}, pickle+zstd {encode:.1f}, "
          f"SQLite {sql:.1f}; engine thread (without SQLite) {work + encode:.1f}, all {work + encode + sql:.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100, int(sys.argv[2]) if len(sys.argv) > 2 else 300)
