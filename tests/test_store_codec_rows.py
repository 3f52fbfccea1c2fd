"""The writer's row makers (`Codec.encode`, written out as Python per layout) give the
very rows the layouts' attribute getters give: the stored bytes do not depend on which
of the two made them."""

from __future__ import annotations

import json
import operator
from pathlib import Path
from typing import Any

import pytest

from lemming.engine.events import (
    AgentSkipped,
    CommandRejected,
    DefinitionRejected,
    Event,
    FilesNotWritten,
    McpServerFailed,
    MessageCommitted,
    TickAborted,
    TokenDelta,
    TurnFinished,
)
from lemming.engine.store import RunStore
from lemming.engine.store.codec import Codec
from lemming.engine.store.encoding import pack
from lemming.engine.store.errors import StoreError
from tests.test_store import operator_script, record_run, rich_org


def reference(codec: Any, events: list[Event]) -> tuple:
    """What `encode` wrote before its rows were made by generated code: every field read
    through `operator.attrgetter`, one layout at a time."""
    codes, rows = [], []
    for ev in events:
        lay = codec.by_name[type(ev).type]
        codes.append(lay.code)
        names = [n for i, n in enumerate(lay.fields) if i != lay.nested]
        rows.append(operator.attrgetter(*names)(ev) if len(names) > 1 else tuple(getattr(ev, n) for n in names))
    recs = [ev.record for ev in events if type(ev) is TurnFinished]
    ents = [ev.entry for ev in events if type(ev) is MessageCommitted]
    lay, ul = codec.by_name["TurnRecord"], codec.by_name["TokenUsage"]
    names = [n for n in lay.fields if n != "prompt"]
    names[names.index("usage"):names.index("usage") + 1] = [f"usage.{u}" for u in ul.fields]
    records = (lay.code, ul.code, [operator.attrgetter(*names)(r) for r in recs]) if recs else None
    el = codec.by_name["OutboxEntry"]
    return (codes, rows), [(el.code, *el.getter(e)) for e in ents], records


async def test_generated_rows_are_the_getters_rows(tmp_path: Path) -> None:
    org_dir = rich_org(tmp_path / "org")
    store, engine, _ = await record_run(org_dir, tmp_path / "runs.db", 12, seed=3, on_tick=operator_script(org_dir))
    try:
        codec = store.codec
        events = [ev for ev in await store.events(engine.run_id) if ev.persistent]
        kinds = {type(ev) for ev in events}
        assert len(kinds) >= 10, kinds  # the run holds many kinds of event: starts, turns, commands, a reload
        # and the kinds a run of this organisation may not have: each alone, and amid the usual ones
        rare = [AgentSkipped(3, "alice", "broke", "x"), CommandRejected(3, "top_up", "no"),
                DefinitionRejected(3, "agents/a/resume.json", ("bad",)), TickAborted(3),
                FilesNotWritten(3, "alice", ("shared/a.md: disk full",)),
                McpServerFailed(3, "time", "failed to start: boom", ".lemming/mcp/time.log")]
        batches = [events, *([ev] for ev in events[:40]), rare, [*events[5:30], *rare, *events[30:60]]]
        for batch in batches:
            got = codec.encode(batch)
            assert got == reference(codec, batch)
            assert pack(*got[0]) == pack(*reference(codec, batch)[0])
        # a kind the engine never records is written alike
        odd = [*events[:3], TokenDelta(1, "alice", "x")]
        assert codec.encode(odd) == reference(codec, odd)
        # and a kind this database has no layout for is refused, naming it
        older = Codec((lay.code, lay.name, json.dumps(lay.fields)) for lay in codec.by_code.values() if lay.name != "token_delta")
        assert older.encode(events[:3]) == codec.encode(events[:3])
        with pytest.raises(StoreError, match="'token_delta' has no layout in this database"):
            older.encode(odd)
    finally:
        await store.close()
