"""`lemming`, with a SIGKILL planted at an exact point of the run store's work.

    python -m tests.support.killpoint [--snapshot-every N] [--kill POINT:K] -- lemming-args...

The crash harness kills most processes from outside at random instants; random
instants rarely land inside a transaction or a snapshot (they take a millisecond),
so some processes are started through this wrapper, which kills itself — a real
SIGKILL, nothing is cleaned up — the K-th time it reaches POINT:

    tx-begun      inside a tick's transaction: the batch rows are inserted, COMMIT is not
    tx-committed  right after COMMIT, before the engine applies and publishes the tick
    stop-begun    inside the run's stop transaction (every tick committed, the stop not)
    snapshot-tx   inside a snapshot's transaction, before its COMMIT
    snapshot-build while the snapshot is being encoded (no transaction yet)
    wal-reset     while the WAL is being checked for a reset
    tool-call     while a sandboxed program of a tool call (shell) is running
    files-written after a tick's commit, before its turns' files are written

--snapshot-every N makes the store snapshot every N ticks (default 100) so that a run
of a few hundred ticks has many snapshots to be killed in.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(point: str, k: int) -> None:
    from lemming.engine.store import snapshots, writes

    seen = {"n": 0}

    def hit() -> bool:
        seen["n"] += 1
        return seen["n"] >= k

    if point in ("tx-begun", "stop-begun"):
        kind = "tick" if point == "tx-begun" else "stop"
        orig = writes.update_run

        def update_run(conn, p):  # type: ignore[no-untyped-def]
            orig(conn, p)
            if p.kind == kind and hit():
                _die()

        writes.update_run = update_run
    elif point == "tx-committed":
        orig_tx = writes.write_tx

        def write_tx(conn, p):  # type: ignore[no-untyped-def]
            orig_tx(conn, p)
            if p.kind == "tick" and hit():
                _die()

        writes.write_tx = write_tx
    elif point == "snapshot-tx":
        orig_snap = writes.write_snapshot

        def write_snapshot(conn, rid, batch, tick, body, defs_hash, defs_blob):  # type: ignore[no-untyped-def]
            if hit():
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT OR IGNORE INTO texts (hash, body) VALUES (?,?)", (defs_hash, defs_blob))
                conn.execute("INSERT OR REPLACE INTO snapshots (rid, batch, tick, body) VALUES (?,?,?,?)", (rid, batch, tick, body))
                _die()
            return orig_snap(conn, rid, batch, tick, body, defs_hash, defs_blob)

        writes.write_snapshot = write_snapshot
    elif point == "snapshot-build":
        orig_body = snapshots.snapshot_body

        def snapshot_body(state, codec, *more):  # type: ignore[no-untyped-def]
            out = orig_body(state, codec, *more)
            if hit():
                _die()
            return out

        snapshots.snapshot_body = snapshot_body
    elif point == "wal-reset":
        orig_wal = writes.maybe_truncate_wal

        def maybe_truncate_wal(conn, path, busy_ms):  # type: ignore[no-untyped-def]
            if hit():
                _die()
            return orig_wal(conn, path, busy_ms)

        writes.maybe_truncate_wal = maybe_truncate_wal
    elif point == "tool-call":
        import asyncio

        from lemming.engine.tools import sandbox

        orig_spawn = sandbox.spawn

        async def spawn(argv, **kw):  # type: ignore[no-untyped-def]
            proc = await orig_spawn(argv, **kw)
            if hit():
                await asyncio.sleep(0.2)  # the sandbox is up and its program running
                _die()
            return proc

        sandbox.spawn = spawn
    elif point == "files-written":
        from lemming.engine.tools import files

        orig_apply = files.apply_changes

        def apply_changes(root, agent, changes):  # type: ignore[no-untyped-def]
            if hit():
                _die()
            return orig_apply(root, agent, changes)

        files.apply_changes = apply_changes
        import lemming.engine.engine as eng

        eng.apply_changes = apply_changes
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        raise SystemExit(__doc__)
    split = argv.index("--")
    ours, theirs = argv[:split], argv[split + 1 :]
    p = argparse.ArgumentParser(prog="faults_killpoint")
    p.add_argument("--snapshot-every", type=int, default=None)
    p.add_argument("--kill", default=None, metavar="POINT:K")
    args = p.parse_args(ours)
    if args.snapshot_every is not None:
        from lemming.engine import store

        orig_open = store.RunStore.open.__func__  # type: ignore[attr-defined]
        every = args.snapshot_every

        async def open_(cls, path, **kw):  # type: ignore[no-untyped-def]
            kw["snapshot_every"] = every  # over the run's own setting (RunSettings.snapshot_every)
            return await orig_open(cls, path, **kw)

        store.RunStore.open = classmethod(open_)  # type: ignore[method-assign]
    if args.kill:
        point, _, k = args.kill.partition(":")
        _arm(point, int(k or 1))
    from lemming.tui.cli import main as lemming

    sys.argv = ["lemming", *theirs]
    return lemming()


if __name__ == "__main__":
    sys.exit(main())
