"""Snapshots: a run's folded state at the end of a tick, so that any tick opens fast.

A snapshot holds `OrgState.to_dict()` without what other tables hold: the message
board (`messages`; the snapshot keeps its count, to check the log against), the
definitions (`texts`, by hash) and the last turns' prompts (`prompts`); the last
turns' records are in the codec's compact layout.
"""

from __future__ import annotations

from typing import Any

from lemming.engine import gcfreeze
from lemming.engine.messages import MessageBoard
from lemming.engine.org import Org
from lemming.engine.state import OrgState
from lemming.engine.store.boards import CountedBoard, MessageLog
from lemming.engine.store.codec import Codec
from lemming.engine.store.encoding import BODY_LEVEL, PROMPT_LEVEL, compress, dumps, pack_blob, text_hash
from lemming.engine.store.errors import StoreError


class _DefinitionsOnce:
    """Stands in for an Org while `OrgState.to_dict()` runs for a snapshot: its
    definitions dumped once per Org object (dumping a thousand agents' resumes for every
    snapshot cost more than the rest of the snapshot). A hot reload makes a new Org."""

    __slots__ = ("org", "root", "defs", "blob", "hash", "packed")

    def __init__(self, org: Org) -> None:
        self.org = org  # held: the cache is keyed by its id
        self.root = org.root
        self.defs = org.definitions()
        self.blob = dumps(self.defs)
        self.hash = text_hash(self.blob)
        self.packed = compress(self.blob, PROMPT_LEVEL)

    def definitions(self) -> dict[str, Any]:
        return self.defs


_DEFINITIONS: dict[int, _DefinitionsOnce] = {}


def _definitions_of(org: Org) -> _DefinitionsOnce:
    got = _DEFINITIONS.get(id(org))
    if got is None or got.org is not org:
        if len(_DEFINITIONS) > 8:
            _DEFINITIONS.clear()
        got = _DEFINITIONS[id(org)] = _DefinitionsOnce(org)
    return got


def snapshot_body(state: OrgState, codec: Codec,
                  written: dict[str, tuple[Any, int, int]] | None = None) -> tuple[bytes, str, bytes]:
    """(snapshot body, definitions' hash, definitions' compressed text) of `state`.

    The body is `OrgState.to_dict()` without the message board (the `messages` table
    holds it), the definitions (in `texts`) and the last turns' prompts (in `prompts`).
    The last turns' records: where a batch holds one (`written`: agent → (the record,
    batch id, its place among the batch's records), from the recorder), where it is
    (``last_turn_at``); others in the codec's compact layout (``last_turn``). Most of a
    snapshot's size and cost was the records a batch already held."""
    board, last_turn, org = state.board, state.last_turn, state.org
    once = _definitions_of(org)
    state.board, state.last_turn, state.org = MessageBoard(), {}, once  # type: ignore[assignment]
    try:
        d = state.to_dict()
    finally:
        state.board, state.last_turn, state.org = board, last_turn, org
    d.pop("definitions")
    defs_hash = once.hash
    d["definitions"] = None
    d["messages"] = []
    records: dict[str, Any] = {}
    at: dict[str, tuple[int, int]] = {}
    for agent, rec in last_turn.items():
        got = written.get(agent) if written else None
        if got is not None and got[0] is rec:
            at[agent] = (got[1], got[2])
        else:
            records[agent] = codec.encode_record(rec)
    snap = {"state": d, "definitions": defs_hash, "messages": board.count, "last_turn": records}
    if at:
        snap["last_turn_at"] = at
    return pack_blob(snap, BODY_LEVEL), defs_hash, once.packed


def records_wanted(d: dict[str, Any]) -> set[int]:
    """The batches whose records a decoded snapshot `d` refers to (see `snapshot_body`)."""
    return {batch for batch, _ in d.get("last_turn_at", {}).values()}


def restore(d: dict[str, Any], org: Org, codec: Codec, log: MessageLog | None, batch: int, run_id: str,
            records: dict[int, Any] | None = None) -> OrgState:
    """The state a decoded snapshot `d` (taken after `batch`) holds, with `org` (its
    definitions, loaded by hash) and the board of `log` at `batch`; without a log, a
    `CountedBoard`. `records`: batch id → its decoded records, for the batches
    `records_wanted` names."""
    sd = d["state"]
    sd["definitions"] = {"agents": {}}
    memory = sd["memory"]
    sd["memory"] = {}  # freshly decoded: from_dict's deep copy of it would be wasted
    with gcfreeze.paused():
        state = OrgState.from_dict(sd)
        state.memory = memory
        state.org = org
        last = {agent: codec.decode_nested(row) for agent, row in d["last_turn"].items()}
        for agent, (b, i) in d.get("last_turn_at", {}).items():
            try:
                rec = codec.record_at((records or {})[b], i)
            except (KeyError, IndexError, TypeError, ValueError) as e:
                raise StoreError(f"run {run_id}: the snapshot after batch {batch} refers to a turn record"
                                 f" of batch {b} that does not decode ({type(e).__name__}: {e})") from None
            if rec.agent != agent:
                raise StoreError(f"run {run_id}: the snapshot after batch {batch} refers to {rec.agent}'s turn"
                                 f" for {agent} (corrupt database?)")
            last[agent] = rec
        state.last_turn = last
        if log is None:
            state.board = CountedBoard(d["messages"])
            return state
        state.board = log.board(batch)
    if state.board.count != d["messages"]:
        raise StoreError(
            f"run {run_id}: the snapshot after batch {batch} expects {d['messages']} messages,"
            f" the log has {state.board.count} (corrupt database?)"
        )
    return state
