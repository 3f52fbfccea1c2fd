"""`lemming models` and `lemming runs` at 80 columns: readable, never a word split in
the middle, never a number cut; the columns left out are named."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import sqlite3
from pathlib import Path

from rich.console import Console

from lemming.engine.store import RunStore
from lemming.tui.cli.models import models_command
from lemming.tui.cli.runs import cmd_runs
from lemming.tui.cli.tables import LONG_WORD

#: Box-drawing and table rule characters: not words.
RULES = re.compile(r"[\u2500-\u257f]+")


def words(text: str) -> list[str]:
    return RULES.sub(" ", text).split()


def test_models_at_80_columns_split_no_word(tmp_path: Path) -> None:
    models = {"local": {"provider": "openai", "model_name": "qwen2.5-coder-7b-instruct", "base_url": "http://127.0.0.1:9/v1",
                        "api_key_env": "LOCAL_KEY"}}
    (tmp_path / "models.json").write_text(json.dumps(models))
    out = io.StringIO()
    args = argparse.Namespace(org=tmp_path, timeout=1.0, no_probe=False, json=False, keys=["sim", "local"], db=None)
    models_command(args, env={}, console=Console(file=out, width=80, color_system=None))
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    shown = set(words(text))
    # the headers and the cells the user read split (provid/er, offli/ne simul/ator) are whole
    assert {"provider", "key", "status", "detail", "offline", "simulator", "(always", "available)"} <= shown
    # every word on screen is a whole word of a header, a cell, the title or the caption
    # (a URL or a model id longer than LONG_WORD may be folded)
    full = io.StringIO()
    models_command(args, env={}, console=Console(file=full, width=400, color_system=None))
    whole = set(words(full.getvalue())) | set(words(text.split("not shown at", 1)[-1])) | {"not", "shown", "at"}
    longs = [w for w in whole if len(w) > LONG_WORD]
    split = [w for w in shown if w not in whole and not any(w in long for long in longs)]
    assert not split, split
    assert "not shown at 80 columns:" in text and "--json has every field" in text


async def runs_db(tmp_path: Path) -> Path:
    """Two runs of one organisation: a fork at tick 14, 200 ticks into its 1000, and its parent."""
    db = tmp_path / "runs.db"
    store = await RunStore.open(db)
    for rid, target in (("20261205-031500-aaaaaa", 1000), ("20261205-031600-bbbbbb", 30)):
        await store.create_run(run_id=rid, org_root=tmp_path / "a-long-organisation-name", seed=1,
                               definitions_hash=None, target_ticks=target)
    await store.close()
    with sqlite3.connect(db) as c:
        c.execute("UPDATE runs SET ticks=200, status='stopped', spend=12.3456 WHERE id='20261205-031500-aaaaaa'")
        c.execute("UPDATE runs SET ticks=30, status='completed' WHERE id='20261205-031600-bbbbbb'")
        c.execute("UPDATE runs SET fork_tick=14, parent_rid=(SELECT rid FROM runs WHERE id='20261205-031600-bbbbbb')"
                  " WHERE id='20261205-031500-aaaaaa'")
    return db


def test_runs_at_80_columns_cut_no_number(tmp_path: Path, capsys, monkeypatch) -> None:
    db = asyncio.run(runs_db(tmp_path))
    monkeypatch.setenv("COLUMNS", "80")
    assert cmd_runs(argparse.Namespace(db=db, org=tmp_path, json=False)) == 0
    text = capsys.readouterr().out
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text.replace("…bbbbbb@14", "")  # the parent's own mark aside, nothing cut
    shown = set(words(text))
    assert {"200/1000", "12.3456", "stopped", "completed", "20261205-031500-aaaaaa", "…bbbbbb@14", "started"} <= shown
    assert "not shown at 80 columns: org" in text
