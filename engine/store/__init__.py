"""The run store: every run recorded in one SQLite file (`.lemming/runs.db` by default).

Import what you need from here (`from lemming.engine.store import RunStore`). The
modules, one job each:

    runs.py       RunStore (open a file, add runs and forks, read states, events and
                  turns back), RunInfo, default_db_path
    recorder.py   RunRecorder: the engine's writer, one transaction per batch
    boards.py     the message log of a run and the boards rebuilt states share
    snapshots.py  the folded state of a tick, stored and restored
    prompts.py    a turn's prompt as stored (head by hash, last message) and rebuilt
    codec.py      events as compact rows, by the layouts the file registers
    encoding.py   plain values as bytes: restricted pickle, compact JSON, zstd
    schema.py     the tables, the schema version, what opening a file checks
    writes.py     what changes the file (run on the database thread)
    queries.py    what reads the file (run on the database thread)
    database.py   the sqlite3 connection and the thread it runs on
    liveness.py   whether the process recording a run is alive
    search.py     find in a run: the FTS5 index over what was said, and SearchIndex
    errors.py     StoreError, and sqlite3's errors said in one line

Secrets: nothing here reads the environment. What is written is what the engine's
events hold, and those never carry API keys (models.json names the variable, not
the key; tests plant keys and grep the file).
"""

from lemming.engine.state import FOLD_SKIPS
from lemming.engine.store.boards import CountedBoard, SharedBoard, detached
from lemming.engine.store.errors import StoreError
from lemming.engine.store.liveness import writer_alive
from lemming.engine.store.recorder import RunRecorder
from lemming.engine.store.runs import RunInfo, RunStore, default_db_path

__all__ = [
    "FOLD_SKIPS",
    "CountedBoard",
    "RunInfo",
    "RunRecorder",
    "RunStore",
    "SharedBoard",
    "StoreError",
    "default_db_path",
    "detached",
    "writer_alive",
]
